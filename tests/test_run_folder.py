"""The run folder's model state: a table shared by several submodules is kept and written once."""

from __future__ import annotations

import torch
from torch import nn

from retrieval_zoo.run_folder import model_state_file, selected_state, write_model_state


class SharedTable(nn.Module):
    """Like MGDSPR: one item table reached by three module paths."""

    def __init__(self, rows: int = 5000, dim: int = 32):
        super().__init__()
        self.items = nn.Embedding(rows, dim)
        self.item_tower = nn.ModuleDict({"table": self.items})
        self.query_tower = nn.ModuleDict({"behaviour": self.items, "head": nn.Linear(dim, dim)})


def test_a_shared_table_is_one_tensor_in_the_state_and_written_once(tmp_path):
    module = SharedTable()
    state = selected_state(module)
    names = ["items.weight", "item_tower.table.weight", "query_tower.behaviour.weight"]
    assert {state[name].data_ptr() for name in names} == {module.items.weight.data_ptr()}  # no copy at all on a CPU
    write_model_state(state, None, tmp_path)
    table_bytes = 5000 * 32 * 4
    assert table_bytes < (tmp_path / model_state_file()).stat().st_size < 1.5 * table_bytes
    loaded = torch.load(tmp_path / model_state_file(), weights_only=True)
    assert torch.equal(loaded["query_tower.behaviour.weight"], module.items.weight.detach())


def test_written_states_are_byte_identical_for_identical_weights(tmp_path):
    for name in ("a", "b"):
        torch.manual_seed(0)
        write_model_state(selected_state(SharedTable(rows=50)), None, tmp_path / name)
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
