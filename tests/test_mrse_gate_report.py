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


def test_a_missing_checkpoint_is_made_by_the_runners_training_and_saved_where_asked(gate_report, tmp_path,
                                                                                  monkeypatch):
    """The report reads the state the board would score (the runner's selection), not a plain Trainer's last."""
    calls = []

    class Result:
        run_dir = tmp_path / "scratch" / "runs" / "simshop" / "mrse" / "default" / "seed0"

    def fake_run_benchmark(model, dataset, seeds, variant, overrides, results_dir, wandb, **options):
        calls.append((model, dataset, seeds, variant, options["update_leaderboard"]))
        Result.run_dir.mkdir(parents=True)
        torch.save({"model.fusion.bias": torch.ones(2)}, Result.run_dir / "model.pt")
        return [Result()]

    monkeypatch.setattr(gate_report, "run_benchmark", fake_run_benchmark)
    saved = gate_report.board_state("simshop", "profile_both", 0, [], tmp_path / "kept.pt")
    assert calls == [("mrse", "simshop", [0], "profile_both", False)]  # one seed, the board left alone
    assert saved == tmp_path / "kept.pt"
    assert torch.equal(gate_report.model_state(saved)["fusion.bias"], torch.ones(2))
