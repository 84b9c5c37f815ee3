"""The results folder changes whole or not at all: kills injected at every write of a multi-seed plan leave a
consistent board, and ``--resume`` then completes to the bytes of an uninterrupted run; identical runs give
identical bytes; resume follows the config; datasets are keyed by their content."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

import polars as pl
import pytest

from retrieval_zoo import store
from retrieval_zoo.plan import run_plan
from retrieval_zoo.reports import read_leaderboard, write_markdown
from retrieval_zoo.runner import run_benchmark

pytestmark = pytest.mark.reliability

PLAN = "seeds: 2\ndatasets:\n  simshop-tiny:\n    - {model: bm25}\n    - {model: bm25, variant: title_only}\n"
EXAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "local" / "example"


class Killed(BaseException):
    """What an injected fault raises: like a kill, it is no Exception a handler would swallow."""


@pytest.fixture
def steady_clock(monkeypatch):
    """Every clock reading 0.25 s after the previous one, so identical runs measure identical timings."""
    ticks = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: 0.25 * next(ticks))
    monkeypatch.setattr(time, "strftime", lambda *args: "2026-01-01T00:00:00")


def committed_bytes(results: Path) -> dict[str, bytes]:
    """Every file of the committed state (board, markdown, protocols, claims, run folders); logs excluded."""
    return {p.relative_to(results).as_posix(): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and "logs" not in p.relative_to(results).parts and p.name != ".leaderboard.lock"}


def assert_consistent(results: Path) -> None:
    """The markdown is the board's, every board row's run folder exists and holds that row's metrics, and no
    staging or put-aside folder is left once recovered."""
    store.recover(results, __import__("retrieval_zoo.reports", fromlist=["write_board"]).write_board)
    board = read_leaderboard(results)
    if (results / "leaderboard.md").exists():
        assert (results / "leaderboard.md").read_text() == write_markdown(results, board)
    for row in board.iter_rows(named=True):
        folder = results / "runs" / row["dataset"] / row["model"] / row["variant"] / f"seed{row['seed']}"
        metrics = __import__("json").loads((folder / "metrics.json").read_text())
        assert metrics["ndcg@10"] == pytest.approx(float(row["ndcg@10"]))
    left = sorted((results / "runs").glob(f"{store.STAGING}/*")) if (results / "runs").exists() else []
    assert not left, f"staging folders left: {left}"
    assert not list(results.rglob("*.replaced-*")) and not list(results.glob(".commit-*"))


def write_plan(tmp_path: Path, text: str = PLAN) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    return plan


@pytest.fixture
def title_only_variant(monkeypatch):
    """A second bm25 variant (title only), so the plan makes two invocations of two seeds each."""
    from retrieval_zoo.models import registry

    original = registry.load_config

    def with_variant(name, variant=None, overrides=None, config_file=None):
        if name == "bm25" and variant == "title_only":
            config = original(name, None, ["model.fields=[title]", *(overrides or [])], config_file)
            return {**config, "variant": "title_only"}
        return original(name, variant, overrides, config_file)

    monkeypatch.setattr(registry, "load_config", with_variant)
    monkeypatch.setattr("retrieval_zoo.runner.load_config", with_variant)


class FaultAt:
    """Raise ``Killed`` at the n-th file-system write below ``root`` (write, rename, replace, remove)."""

    def __init__(self, root: Path, n: int):
        self.root, self.n, self.count = str(root), n, 0

    def __call__(self, original):
        def wrapped(*args, **kwargs):
            target = str(args[0])
            if target.startswith(self.root):
                self.count += 1
                if self.count == self.n:
                    raise Killed(f"injected kill at write {self.n}: {original.__name__} {target}")
            return original(*args, **kwargs)
        return wrapped

    def install(self, monkeypatch) -> None:
        for owner, name in [(Path, "write_text"), (Path, "write_bytes"), (Path, "rename"), (Path, "replace"),
                            (Path, "unlink"), (Path, "mkdir"), (shutil, "rmtree")]:
            monkeypatch.setattr(owner, name, self(getattr(owner, name)))
        original_parquet = pl.DataFrame.write_parquet
        guarded = self(lambda file, frame, *args, **kwargs: original_parquet(frame, file, *args, **kwargs))
        monkeypatch.setattr(pl.DataFrame, "write_parquet",
                            lambda frame, file, *args, **kwargs: guarded(file, frame, *args, **kwargs))


@pytest.fixture
def one_page_plots(monkeypatch):
    """The board's plots as one small file per dataset, written through the same path: drawing four PNGs per
    board write (0.6 s) at each of ~120 kill points is what this test would spend its time on, not the commit."""
    def dataset_plots(board, dataset, out_dir):
        path = Path(out_dir) / f"plots_{dataset}.txt"
        path.write_text(board.filter(pl.col("dataset") == dataset).select("model", "variant", "ndcg@10").write_csv())
        return [(f"{dataset}: plots", path)]

    monkeypatch.setattr("retrieval_zoo.plots.dataset_plots", dataset_plots)


def test_a_kill_at_any_write_leaves_a_consistent_board_and_resume_completes_it_byte_for_byte(
        tmp_path, steady_clock, title_only_variant, one_page_plots, monkeypatch):
    reference = tmp_path / "reference"
    run_plan(write_plan(tmp_path), reference, wandb="disabled")
    expected = committed_bytes(reference)
    assert len(read_leaderboard(reference)) == 4
    for n in itertools.count(1):
        results = tmp_path / f"killed{n}"
        fault = FaultAt(results, n)
        with monkeypatch.context() as patch:
            fault.install(patch)
            try:
                run_plan(write_plan(tmp_path), results, wandb="disabled")
                finished = True
            except Killed:
                finished = False
        assert_consistent(results)
        run_plan(write_plan(tmp_path), results, wandb="disabled", resume=True)
        got = committed_bytes(results)
        differing = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        assert not differing, f"after a kill at write {n}, these files differ from an uninterrupted run: {differing}"
        shutil.rmtree(results)
        if finished:  # n passed the last write: every write has had its kill
            break
    assert n > 20


def test_two_identical_runs_give_identical_bytes_apart_from_timings(tmp_path):
    folders = []
    for name in ("a", "b"):
        [result] = run_benchmark("bm25", "simshop-tiny", seeds=1, results_dir=tmp_path / name, wandb="disabled",
                                 progress=False, print_table=False)
        folders.append(result.run_dir)
    files = sorted(p.name for p in folders[0].iterdir())
    assert "timings.json" in files and files == sorted(p.name for p in folders[1].iterdir())
    for name in files:
        if name != "timings.json":  # measured wall-clock figures: the one file an identical rerun changes
            assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    timing = [c for c in read_leaderboard(tmp_path / "a").columns if c.endswith(("_seconds", "_per_s", "_ms"))]
    boards = [read_leaderboard(tmp_path / n).drop(timing, "run_dir") for n in ("a", "b")]
    assert boards[0].equals(boards[1])


def test_resume_reruns_a_row_made_under_another_config(tmp_path):
    plan = write_plan(tmp_path, "seeds: 1\ndatasets:\n  simshop-tiny:\n    - {model: bm25}\n")
    run_plan(plan, tmp_path, wandb="disabled")
    metrics = tmp_path / "runs" / "simshop-tiny" / "bm25" / "default" / "seed0" / "metrics.json"
    first_hash = read_leaderboard(tmp_path)["config_hash"][0]
    stamp = metrics.stat().st_mtime_ns
    run_plan(plan, tmp_path, wandb="disabled", resume=True)
    assert metrics.stat().st_mtime_ns == stamp  # same config: kept
    changed = write_plan(tmp_path, "seeds: 1\ndatasets:\n  simshop-tiny:\n    - {model: bm25, set: [model.k1=0.9]}\n")
    run_plan(changed, tmp_path, wandb="disabled", resume=True)
    board = read_leaderboard(tmp_path)
    assert board.height == 1 and board["config_hash"][0] != first_hash
    assert metrics.stat().st_mtime_ns != stamp  # another config: rerun


def test_an_orphan_staging_folder_and_a_left_journal_are_recovered(tmp_path):
    from retrieval_zoo.reports import write_board

    [result] = run_benchmark("bm25", "simshop-tiny", seeds=1, results_dir=tmp_path, wandb="disabled",
                             progress=False, print_table=False)
    orphan = tmp_path / "runs" / store.STAGING / f"{__import__('socket').gethostname()}-999999999-0" / "x"
    orphan.mkdir(parents=True)
    old_tmp = result.run_dir.with_name("seed0.tmp-12345")
    old_tmp.mkdir()
    done = store.recover(tmp_path, write_board)
    assert not orphan.parent.exists() and not old_tmp.exists() and len(done) == 2
    assert result.run_dir.is_dir()


def test_local_datasets_are_keyed_by_content_not_by_the_path_string(tmp_path, monkeypatch):
    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.runner import dataset_identity

    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))
    for name in ("one", "two"):
        shutil.copytree(EXAMPLE, tmp_path / name / "data" / "shop")
    products = tmp_path / "two" / "data" / "shop" / "products.csv"
    products.write_text(products.read_text().replace("Trail", "Road", 1))

    def key(cwd: Path, path: str) -> str:
        monkeypatch.chdir(cwd)
        spec = f"local:path={path}"
        return dataset_identity(spec, load_dataset(spec)).key

    first, second = key(tmp_path / "one", "data/shop"), key(tmp_path / "two", "data/shop")
    assert first != second and first.startswith("local-shop@") and second.startswith("local-shop@")
    assert key(tmp_path / "one", "data/shop/") == first == key(tmp_path, "one/data/shop")
    os.utime(tmp_path / "one" / "data" / "shop" / "products.csv")  # touched, same bytes: same dataset
    assert key(tmp_path / "one", "data/shop") == first
