"""The command line: listings, and one clear line for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrieval_zoo", *args], capture_output=True, text=True, timeout=300)


def test_list_shows_models_variants_and_datasets():
    done = _cli("list")
    assert done.returncode == 0, done.stderr
    assert "light_two_tower" in done.stdout and "variants: default, pretrained" in done.stdout
    assert "simshop-tiny" in done.stdout


def test_unknown_model_is_one_clear_line(tmp_path):
    done = _cli("bench", "--model", "nope", "--results", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nope'; valid models: ")


def test_unknown_dataset_and_config_key_are_one_clear_line(tmp_path):
    done = _cli("bench", "--model", "bm25", "--dataset", "nosuch", "--results", str(tmp_path))
    assert done.returncode == 2 and "valid datasets: " in done.stderr
    done = _cli("bench", "--model", "bm25", "--set", "model.k3=1", "--results", str(tmp_path))
    assert done.returncode == 2 and "unknown config key 'model.k3'" in done.stderr
    assert not (tmp_path / "leaderboard.csv").exists()


# -- in-process: exit codes and the one error line (issue 24, part 6) -------------------------------------
import signal  # noqa: E402

import pytest  # noqa: E402

from retrieval_zoo.__main__ import main  # noqa: E402
from retrieval_zoo.models import ConfigError  # noqa: E402

FAST = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "data.eval_batch_size=256"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.reliability
def test_set_type_mismatch_is_one_error_line_naming_the_key(tmp_path, capsys):
    code = main(["bench", "--model", "light_two_tower", "--dataset", "simshop-tiny", "--set",
                 "trainer.max_epochs=abc", "--results", str(tmp_path)])
    assert code == 2
    assert _one_error_line(capsys).startswith("error: config key trainer.max_epochs expects an integer, got 'abc'")
    assert not (tmp_path / "leaderboard.csv").exists()


@pytest.mark.reliability
@pytest.mark.parametrize("argv, expected", [
    (["bench"], "error: the following arguments are required: bench.model"),
    (["bench", "--model", "bm25", "--seeds", "abc"], "error: Parser key \"seeds\": Expected a"),
    (["nope"], "error: argument command: invalid choice: 'nope'"),
    (["bench", "--model", "bm25", "--config", "/nonexistent/own.yaml"], "error: [Errno 2] No such file"),
    (["bench", "--model", "bm25", "--set", "eval.k=5"], "error: eval.k=5 is below the largest metric cut-off"),
])
def test_user_errors_are_one_error_line_with_exit_2(argv, expected, tmp_path, capsys):
    assert main([*argv, "--results", str(tmp_path)] if argv[0] == "bench" and len(argv) > 1 else argv) == 2
    assert _one_error_line(capsys).startswith(expected)
    assert not (tmp_path / "leaderboard.csv").exists()


@pytest.mark.reliability
def test_debug_reraises_with_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        main(["--debug", "bench", "--model", "nope", "--results", str(tmp_path)])


@pytest.mark.reliability
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_training_exits_nonzero_and_commits_nothing(signum, code, tmp_path, capsys, monkeypatch):
    """Fault injection: the signal arrives at the first training batch. Lightning alone would turn SIGTERM into
    a SystemExit with status 0 (and SIGINT into exit 1); the handlers main() installs make it 143 / 130."""
    from retrieval_zoo.models.base import RetrievalModule

    original, sent = RetrievalModule.training_step, []

    def step(self, batch, batch_idx):
        if not sent:
            sent.append(signum)
            signal.raise_signal(signum)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(RetrievalModule, "training_step", step)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    code_seen = main(["bench", "--model", "light_two_tower", "--dataset", "simshop-tiny", "--set", *FAST,
                      "--results", str(tmp_path), "--wandb", "disabled", "--no-progress"])
    assert sent == [signum] and code_seen == code
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"interrupted by {signal.Signals(signum).name} (exit {code}): nothing from this invocation was "
                    "committed to the leaderboard; runs finished earlier are unchanged; staged folders are cleaned "
                    "at the next start")
    assert not (tmp_path / "leaderboard.csv").exists()
    assert not list(tmp_path.rglob("metrics.json"))
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers


@pytest.mark.reliability
def test_lightning_sigterm_exception_is_not_exit_0(tmp_path, capsys, monkeypatch):
    """Lightning's own SIGTERM path (SIGTERMException, a SystemExit with status 0) still exits 143."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    def killed(*args, **kwargs):
        raise SIGTERMException

    monkeypatch.setattr("retrieval_zoo.runner.run_benchmark", killed)
    assert main(["bench", "--model", "bm25", "--results", str(tmp_path)]) == 143
    assert "interrupted by SIGTERM (exit 143)" in capsys.readouterr().err


def test_repeated_set_flags_add_up():
    """`--set a --set b` keeps both overrides (it once kept only the last, silently dropping a max_steps cap)."""
    from retrieval_zoo.__main__ import _parser

    options = _parser().parse_args(["bench", "--model", "bm25", "--set", "trainer.max_steps=5", "eval.k=100",
                                    "--set", "trainer.max_epochs=1"])
    assert options.bench.set == ["trainer.max_steps=5", "eval.k=100", "trainer.max_epochs=1"]
    assert _parser().parse_args(["bench", "--model", "bm25"]).bench.set == []


def test_data_prints_a_one_line_summary_not_the_tables(capsys):
    example = Path(__file__).resolve().parents[1] / "datasets" / "local" / "example"
    assert main(["data", "--dataset", "local", "--path", str(example)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("local") and " products, " in printed[0], printed
