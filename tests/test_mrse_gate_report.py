"""benchmarks/mrse_gate_report.py's helpers: reading a run folder's checkpoint, and what an image_attr query names."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def gate_report(load_benchmark):
    return load_benchmark("mrse_gate_report")


def test_a_run_folders_module_checkpoint_loads_as_the_models_own_weights(gate_report, tmp_path):
    weights = {"experts.gate.weight": torch.ones(2, 3), "fusion.bias": torch.zeros(4)}
    torch.save({f"model.{key}": value for key, value in weights.items()}, tmp_path / "model.pt")
    torch.save(weights, tmp_path / "own.pt")
    for path in (tmp_path / "model.pt", tmp_path / "own.pt"):
        state = gate_report.model_state(path)
        assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


@pytest.mark.parametrize(("intent", "names"), [
    ("type=vase;color=red;style=checked", "colour"),  # a colour wins: it is what the picture shows best
    ("type=mug;style=zigzag", "style"),
    ("type=curtain;material=velvet", "neither"),
    (None, "neither"),
])
def test_what_a_query_names_comes_from_its_intent(gate_report, intent, names):
    assert gate_report.named_attribute(intent) == names
