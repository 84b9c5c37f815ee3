"""Full-scale ESCI benchmark of every model: per-stage seconds, peak memory and the budgets, plus an index check.

What it measures, on an ESCI-shaped catalogue in the official parquet schema (``benchmarks/esci_scale.py``'s
generator; default the official US size: 1.2M products, 600k judgments over 30k queries):

1. Each model / variant (default: every registered model, plus the ``pretrained`` variant of each model that
   has one) runs ``python -m retrieval_zoo bench`` in a fresh process, with ``trainer.max_epochs=1`` for models
   that train more than one epoch. The parent measures the run's wall time and its peak resident memory
   (``os.wait4``), and reads the per-stage seconds from the run's ``timings.json`` and the metrics from
   ``metrics.json``. It also measures how much CPU other processes took meanwhile (``/proc/stat`` less the
   run's own rusage): the report flags a run above 10% of a core, whose times are contended ones. A run past
   ``--timeout`` is stopped; its Python stack (dumped by faulthandler just before the kill) names the stage it
   was in, and one stopped in training says how far its epoch got and how long the rest would take (from the
   log's progress lines). With ``--stop-over-budget`` a run is stopped as soon as its training alone cannot end
   within the time budget (below), rather than at the timeout: an hour-long epoch is judged in minutes.
   Results go to a temporary results folder: the leaderboard is untouched.
2. Budgets: a default variant under 30 minutes end to end and under 8 GiB peak RSS; a ``pretrained`` variant
   under 30 minutes once its sentence features are cached (the run that encoded them is judged without its
   features time).
3. Sentence-feature cache: the runs share one fresh cache folder (``RETRIEVAL_ZOO_CACHE``; ``--warm-cache``
   keeps yours), so the first run that reads MiniLM features encodes them and the next one reads them back.
   Target: the second run's ``features_seconds`` under 10% of the first's. The prepared dataset lives in the
   same cache, so the very first run also prepares the dataset: that is ``load_seconds``, reported apart.
4. Index choice: approximate faiss indexes (``--ann``) against Flat on the same vectors (the MiniLM vectors
   the runs cached, else those of a finished dense run): overlap of the top 100 with Flat's (target: within
   1%, i.e. >= 0.99), build seconds, ms per query, index size. On a small catalogue an IVF gets as many lists
   as it can train, and the same nprobe: it then scans a larger share of the catalogue than at full size.

Writes ``scale.md`` (printed too), ``scale.csv``, ``ann.csv`` and one log per run (``logs/``) to ``--out``.
The generated files are kept (``--data``, default under the cache) and reused while the sizes match.
Temporary results and cache folders are made under ``$TMPDIR``: at full size they hold several GB.

    python benchmarks/scale.py                               # full size: hours on a CPU
    python benchmarks/scale.py --products 20000 --models bm25,light_two_tower,light_two_tower/pretrained
    python benchmarks/scale.py [--judgments N] [--data DIR] [--timeout MIN] [--out DIR] [--warm-cache]
                               [--stop-over-budget]
                               [--ann HNSW32 IVF4096,Flat] [--nprobe 64] [--ef-search 128 256] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent

# The official ESCI US size, as esci_scale.py generates it; other sizes keep its proportions.
FULL_PRODUCTS = 1_200_000
OTHER_LOCALES_PER_PRODUCT = 0.5  # es/jp rows in the products file (600k at full size): read and skipped
JUDGMENTS_PER_PRODUCT = 0.5      # 600k judgments (20 per query: 30k queries) at full size

TIME_BUDGET_S = 30 * 60
RSS_BUDGET_GIB = 8.0
FEATURE_CACHE_TARGET = 0.10      # a run reading cached features spends < 10% of the encoding run's feature time
OVERLAP_TARGET = 0.99            # an approximate index keeps 99% of Flat's top 100
ANN_K = 100
HEARTBEAT_S = 300
BUDGET_POLL_S = 30.0             # how often --stop-over-budget reads a run's log
MIN_OBSERVED_TRAIN_S = 120.0     # training seen before its rate judges a run: two of the log's progress lines
PROGRESS_INTERVAL_S = 60.0       # a progress line at least this often within an epoch (quiet.PLAIN_INTERVAL_S)
# A run's figures are idle-host figures only while other processes leave the cores alone: torch's OpenMP threads
# wait at every barrier for a thread whose core another job's time slice holds (a nice-19 encoding job on the
# other core slowed light_two_tower's two-thread training 9x). Above this share of one core, the report says so.
BUSY_HOST_PERCENT = 10.0

STAGES = ("load", "features", "train", "validation", "encode", "index", "search", "metrics")
# Child environment: offline model loading, no tokenizer thread pools fighting the OMP threads.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# Runs the CLI with a stack dump on SIGUSR1: a timed-out run tells where it was before it is killed (SIGUSR1,
# not SIGABRT's dump, since an abort may write a core file of many GB).
CLI_WITH_STACK_DUMP = ("import faulthandler, runpy, signal; faulthandler.register(signal.SIGUSR1, all_threads=True); "
                       "runpy.run_module('retrieval_zoo', run_name='__main__', alter_sys=True)")

# Where a stack dump says a run was: (stage, path suffix of the frame's file or "", its functions or None for
# any), the most specific first (validation encodes and searches inside the fit; mining runs BM25 in features).
STAGE_FRAMES = [
    ("validation", "retrieval_zoo/validation.py", None),
    ("train", "pytorch_lightning/trainer/trainer.py", None),
    ("load", "", {"load_dataset"}),
    ("features (MiniLM sentence encoding)", "retrieval_zoo/data/text.py", {"sentence_features"}),
    ("features (hard-negative mining)", "retrieval_zoo/data/negatives.py", None),
    ("features", "retrieval_zoo/data/datamodule.py", {"setup"}),
    ("model build", "", {"build_model"}),
    ("encode", "", {"encode_catalog"}),
    ("query encode", "", {"encode_units"}),
    ("index", "retrieval_zoo/index.py", {"build_index", "_train"}),
    ("search", "retrieval_zoo/index.py", {"search", "exact_search"}),
    ("index", "retrieval_zoo/models/bm25.py", {"index"}),
    ("search", "retrieval_zoo/models/bm25.py", {"retrieve"}),
    ("metrics", "", {"evaluate_run", "rerank_run"}),
]
FRAME_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+ in (?P<function>\S+)')
# The log's training progress (retrieval_zoo/quiet.py PlainProgress): "epoch 1/1  451/679 steps  604.4s  rss ..."
PROGRESS_LINE = re.compile(r"^epoch (?P<epoch>\d+)(?:/\d+)?\s+(?P<done>\d+)/(?P<total>\d+) steps\s+"
                           r"(?P<seconds>[\d.]+)s", re.MULTILINE)
INPUTS_READY_LINE = re.compile(r"^inputs ready in (?P<seconds>[\d.]+) s", re.MULTILINE)


@dataclass
class Run:
    """One model / variant: how it is run, and what it measured."""

    model: str
    variant: str
    one_epoch: bool = False        # trains more than one epoch by config: run with trainer.max_epochs=1
    reads_sentence_features: bool = False
    status: str = "not run"        # ok, failed, timed out, over budget (--stop-over-budget)
    detail: str = ""               # the stage it timed out at (and its training progress), why it was stopped
                                   # over budget, or the error line
    wall_s: float | None = None
    peak_rss_gib: float | None = None
    encoded_features: bool = False  # this run wrote new sentence-feature cache entries (it encoded them)
    others_cpu_pct: float | None = None  # other processes' CPU during the run, % of one core (None: no /proc/stat)
    device: str = "cpu"            # the GPU's name when the run used one (meta.json), else cpu
    timings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    log: str = ""
    budget: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}/{self.variant}"


# -- sizes and data --------------------------------------------------------------------------------------
def data_sizes(args: argparse.Namespace) -> dict[str, int]:
    judgments = args.judgments or round(args.products * JUDGMENTS_PER_PRODUCT)
    return {"products": args.products, "other_locales": round(args.products * OTHER_LOCALES_PER_PRODUCT),
            "judgments": judgments}


def user_cache() -> Path:
    """The project's cache folder as ``retrieval_zoo.data.registry.cache_dir`` finds it (no import: the parent
    stays small, see ``run_child``)."""
    return Path(os.environ.get("RETRIEVAL_ZOO_CACHE") or Path.home() / ".cache" / "retrieval_zoo")


def default_data_dir(sizes: dict[str, int]) -> Path:
    return user_cache() / "scale" / f"esci-us-{sizes['products']}p-{sizes['judgments']}j"


def ensure_data(folder: Path, sizes: dict[str, int], logs: Path, threads: int) -> Path:
    """``folder/raw`` holding the generated parquet files, made once per size (``sizes.json`` says which)."""
    sizes_file = folder / "sizes.json"
    if sizes_file.exists() and json.loads(sizes_file.read_text()) == sizes:
        print(f"data: reusing {folder} ({sizes_text(sizes)})", flush=True)
        return folder / "raw"
    print(f"data: generating {sizes_text(sizes)} into {folder} ...", flush=True)
    started = time.perf_counter()
    sizes_file.unlink(missing_ok=True)  # written last: a generation cut short is never taken for a whole one
    # in a child: the generator peaks at several GB, and Linux carries a parent's peak RSS into the ru_maxrss
    # of every child it forks afterwards (see esci_scale.py)
    child_job("generate", {"raw": str(folder / "raw"), **sizes}, logs / "generate.log", None, threads)
    sizes_file.write_text(json.dumps(sizes))
    print(f"data: generated in {time.perf_counter() - started:.0f} s", flush=True)
    return folder / "raw"


def sizes_text(sizes: dict[str, int]) -> str:
    return (f"{sizes['products']:,} US products + {sizes['other_locales']:,} es/jp, {sizes['judgments']:,} "
            f"judgments over ~{sizes['judgments'] // 20:,} queries")


def generate_data(job: dict[str, Any]) -> dict[str, Any]:
    """(child) esci_scale.py's generator, imported by path: benchmarks/ is not a package."""
    spec = importlib.util.spec_from_file_location("esci_scale", BENCHMARKS / "esci_scale.py")
    esci_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(esci_scale)
    options = argparse.Namespace(products=job["products"], other_locales=job["other_locales"],
                                 judgments=job["judgments"], row_group_rows=None)
    esci_scale.generate(Path(job["raw"]), options)
    return {}


# -- the plan: which runs, which device --------------------------------------------------------------------
def plan_runs(job: dict[str, Any]) -> dict[str, Any]:
    """(child) The requested model / variant pairs, checked against the registry, and the device."""
    import torch

    from retrieval_zoo.models import list_models, list_variants, load_config
    from retrieval_zoo.models.base import TwoTowerModel
    from retrieval_zoo.models.registry import model_entry, model_variants

    if job["models"]:
        pairs = model_variants(job["models"])
    else:  # every model, and the pretrained start of each that has one
        pairs = [(m, v) for m in list_models() for v in ("default", "pretrained") if v in list_variants(m)]
    runs = []
    for model, variant in pairs:
        config = load_config(model, variant)  # an unknown model or variant fails here, naming the valid ones
        trainer = config.get("trainer") or {}
        trains = issubclass(model_entry(model).factory, TwoTowerModel) and trainer.get("max_steps", -1) != 0
        epochs = trainer.get("max_epochs")
        model_section = config.get("model") or {}
        reads_features = (variant == "pretrained" or model.startswith("minilm")
                          or bool(model_section.get("pretrained_sentence")))
        runs.append({"model": model, "variant": variant, "reads_sentence_features": reads_features,
                     "one_epoch": trains and (epochs is None or epochs < 0 or epochs > 1)})  # -1: no limit
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"runs": runs, "device": device}


# -- children --------------------------------------------------------------------------------------------
def child_env(threads: int, cache: Path | None) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if cache is not None:
        env["RETRIEVAL_ZOO_CACHE"] = str(cache)
    return env


def child_job(kind: str, job: dict[str, Any], log: Path, cache: Path | None, threads: int,
              timeout_s: float | None = None) -> dict[str, Any]:
    """Run one of this script's own child jobs (``--child``) and return its JSON answer."""
    io = log.with_suffix(".job.json")
    io.write_text(json.dumps(job))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-io", str(io)]
    outcome = run_child(command, log, child_env(threads, cache), timeout_s)
    answer = io.with_suffix(".out.json")
    if outcome.status != "ok" or not answer.exists():
        raise ChildFailed(f"{kind} {outcome.status}{': ' + outcome.detail if outcome.detail else ''} (log: {log})")
    result = json.loads(answer.read_text())
    io.unlink()
    answer.unlink()
    return result


class ChildFailed(RuntimeError):
    pass


@dataclass
class ChildOutcome:
    status: str           # ok, failed, timed out, over budget
    detail: str
    wall_s: float
    peak_rss_gib: float
    others_cpu_pct: float | None = None


def host_busy_seconds(stat_text: str | None = None) -> float | None:
    """CPU seconds the whole host has spent busy since boot, from /proc/stat's first line (user, nice, system,
    irq, softirq, steal; idle and iowait left out), or None where there is no /proc/stat."""
    if stat_text is None:
        try:
            stat_text = Path("/proc/stat").read_text()
        except OSError:
            return None
    fields = [int(value) for value in stat_text.splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cpu_percent(busy_before: float | None, busy_after: float | None, own_cpu_s: float,
                       wall_s: float) -> float | None:
    """Other processes' CPU while a run went, as % of one core: the host's busy seconds less the run's own."""
    if busy_before is None or busy_after is None or wall_s <= 0:
        return None
    return round(100 * max(0.0, busy_after - busy_before - own_cpu_s) / wall_s, 1)


def run_child(command: list[str], log: Path, env: dict[str, str], timeout_s: float | None,
              label: str = "", stop_reason: Callable[[float], str | None] | None = None) -> ChildOutcome:
    """Run ``command`` with its output in ``log``; its wall time and peak RSS; stopped past ``timeout_s``, or as
    soon as ``stop_reason(seconds so far)`` gives a reason (polled every BUDGET_POLL_S)."""
    started, busy_before = time.perf_counter(), host_busy_seconds()
    with log.open("w") as out:
        # its own session: a timeout kills the whole process group, grandchildren included
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True)
    try:
        status, usage, stopped, detail = wait_with_timeout(process, started, timeout_s, log, label, stop_reason)
    except BaseException:  # Ctrl-C or an error here: leave no run behind
        kill_group(process.pid)
        raise
    wall = time.perf_counter() - started
    peak = usage.ru_maxrss / 2**20  # ru_maxrss is KiB on Linux: the largest process of the tree, not the sum
    others = others_cpu_percent(busy_before, host_busy_seconds(), usage.ru_utime + usage.ru_stime, wall)
    if stopped:
        return ChildOutcome(stopped, detail, wall, peak, others)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return ChildOutcome("ok", "", wall, peak, others)
    return ChildOutcome("failed", f"exit {code}: {last_error_line(log)}", wall, peak, others)


def wait_with_timeout(process: subprocess.Popen, started: float, timeout_s: float | None, log: Path,
                      label: str, stop_reason: Callable[[float], str | None] | None = None
                      ) -> tuple[int, Any, str, str]:
    """Reap the child with ``os.wait4`` (its rusage); past the timeout, dump its stack, kill it, name the stage
    (and, in training, how far it got); once ``stop_reason`` gives a reason, kill it with that reason.
    Returns (wait status, rusage, "" or "timed out" or "over budget", detail)."""
    next_heartbeat, next_poll = started + HEARTBEAT_S, started + BUDGET_POLL_S
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            return status, usage, "", ""
        now = time.perf_counter()
        if timeout_s is not None and now - started > timeout_s:
            stage = stop_and_locate(process.pid, log)
            status, usage = reap(process)
            return status, usage, "timed out", timed_out_detail(stage, log.read_text(errors="replace"))
        if stop_reason is not None and now >= next_poll:
            next_poll = now + BUDGET_POLL_S
            reason = stop_reason(now - started)
            if reason:
                kill_group(process.pid)
                status, usage = reap(process)
                return status, usage, "over budget", reason
        if label and now >= next_heartbeat:
            print(f"    {label}: still running, {(now - started) / 60:.0f} min", flush=True)
            next_heartbeat += HEARTBEAT_S
        time.sleep(0.5)


def reap(process: subprocess.Popen) -> tuple[int, Any]:
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return status, usage


def timed_out_detail(stage: str | None, log_text: str) -> str:
    """Where a stopped run was; in training, how far its epoch got and what the rest would have taken."""
    if stage is None:
        return "timed out"
    progress = last_progress(log_text) if stage == "train" else None
    return f"timed out at {stage}" + (f" ({progress.text()})" if progress else "")


@dataclass(frozen=True)
class TrainProgress:
    """A run's last training progress line: how far its epoch got, and in how many seconds."""

    epoch: int
    done: int      # steps of the epoch done
    total: int     # steps in the epoch
    seconds: float  # since the epoch started

    @property
    def remaining_s(self) -> float:
        """The epoch's steps still to go, at its rate so far (steps of one epoch take alike)."""
        return self.seconds / self.done * (self.total - self.done)

    def text(self) -> str:
        return (f"epoch {self.epoch}: step {self.done:,}/{self.total:,} after {self.seconds:,.0f} s, "
                f"{self.done / self.seconds:.2f} steps/s: {self.remaining_s / 60:,.0f} min of the epoch to go")


def last_progress(log_text: str) -> TrainProgress | None:
    found = [m for m in PROGRESS_LINE.finditer(log_text) if int(m["done"]) > 0 and float(m["seconds"]) > 0]
    if not found:
        return None
    last = found[-1]
    return TrainProgress(int(last["epoch"]), int(last["done"]), int(last["total"]), float(last["seconds"]))


def over_budget(log_text: str, elapsed_s: float, cold_features: bool) -> str | None:
    """Why a run in training can no longer meet the time budget, or None while it still can (or its rate is
    not known yet): the wall so far (less its cold feature encoding, for a pretrained run that encoded them)
    plus the epoch's remaining steps at the rate so far is already above the budget, before validation,
    encoding, search and metrics add theirs. The last progress line may be up to a line interval old, so that
    much is taken off the wall: the figure stays a lower bound."""
    progress = last_progress(log_text)
    if progress is None or progress.seconds < MIN_OBSERVED_TRAIN_S:
        return None
    ready = INPUTS_READY_LINE.search(log_text) if cold_features else None
    cold_s = float(ready["seconds"]) if ready else 0.0
    at_least = elapsed_s - PROGRESS_INTERVAL_S - cold_s + progress.remaining_s
    if at_least <= TIME_BUDGET_S:
        return None
    without = f" without its {cold_s:,.0f} s cold features" if cold_s else ""
    return (f"over budget in train: {progress.text()}; the run takes at least {at_least / 60:,.0f} min{without} "
            f"> {TIME_BUDGET_S // 60} min")


def stop_and_locate(pid: int, log: Path) -> str | None:
    """Ask the run for its Python stack (SIGUSR1, see CLI_WITH_STACK_DUMP), kill its group, read the stage."""
    before = log.stat().st_size
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.kill(pid, signal.SIGUSR1)
        time.sleep(3)  # the dump is written by a C signal handler: at once, even inside a long native call
    kill_group(pid)
    with log.open(errors="replace") as text:
        text.seek(before)
        return stage_of_stack(text.read())


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)  # the child leads its own session: its group id is its pid


def stage_of_stack(dump: str) -> str | None:
    frames = [(m["file"].replace("\\", "/"), m["function"]) for m in map(FRAME_LINE.match, dump.splitlines()) if m]
    for stage, file_suffix, functions in STAGE_FRAMES:
        if any(path.endswith(file_suffix) and (functions is None or function in functions)
               for path, function in frames):
            return stage
    return None


def last_error_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(empty log)"


# -- the runs --------------------------------------------------------------------------------------------
def bench_command(run: Run, raw: Path, results: Path) -> list[str]:
    command = [sys.executable, "-c", CLI_WITH_STACK_DUMP, "--debug", "bench", "--model", run.model,
               "--variant", run.variant, "--dataset", f"esci:path={raw}", "--seeds", "1",
               "--results", str(results), "--wandb", "disabled"]  # W&B is no model stage
    # with progress on, the log (not a terminal) gets plain lines: inputs ready, then training steps every minute,
    # each with the memory now and at its peak, so a run stopped at the timeout says how far it got
    if run.one_epoch:
        command += ["--set", "trainer.max_epochs=1"]
    return command


def measure_run(run: Run, raw: Path, results: Path, cache: Path, logs: Path, args: argparse.Namespace,
                gpu: str) -> None:
    run.log = str(logs / f"{run.model}-{run.variant}.log")
    entries_before = feature_entries(cache)

    def stop_reason(elapsed_s: float) -> str | None:
        encoded = run.variant == "pretrained" and bool(feature_entries(cache) - entries_before)
        return over_budget(Path(run.log).read_text(errors="replace"), elapsed_s, cold_features=encoded)

    outcome = run_child(bench_command(run, raw, results), Path(run.log), child_env(args.threads, cache),
                        args.timeout * 60, label=run.name, stop_reason=stop_reason if args.stop_over_budget else None)
    run.status, run.detail = outcome.status, outcome.detail
    run.wall_s, run.peak_rss_gib = round(outcome.wall_s, 1), round(outcome.peak_rss_gib, 3)
    run.others_cpu_pct = outcome.others_cpu_pct
    run.encoded_features = bool(feature_entries(cache) - entries_before)
    folder = run_folder(results, run)
    if folder is not None:
        run.run_dir = str(folder)
        run.timings = read_json(folder / "timings.json")
        run.metrics = read_json(folder / "metrics.json")
        run.device = "cpu" if read_json(folder / "meta.json").get("device") == "cpu" else gpu


def feature_entries(cache: Path) -> set[str]:
    """Sentence-feature cache entries (a folder or an .npy file per encoded text list)."""
    folder = cache / "sentence_features"
    return {p.name for p in folder.iterdir() if ".tmp" not in p.name} if folder.is_dir() else set()


def run_folder(results: Path, run: Run) -> Path | None:
    found = sorted(results.glob(f"runs/*/{run.model}/{run.variant}/seed0/timings.json"))
    return found[0].parent if found else None


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


# -- budgets ---------------------------------------------------------------------------------------------
def judge_budgets(runs: list[Run], timeout_min: float) -> None:
    for run in runs:
        run.budget = budget_verdict(run, timeout_min)


def budget_verdict(run: Run, timeout_min: float) -> str:
    if run.status == "timed out":
        return f"{run.detail} (stopped at {timeout_min:g} min)"
    if run.status == "over budget":
        return f"{run.detail} (stopped then: --stop-over-budget)"
    if run.status != "ok":
        return f"{run.status}: {run.detail}"
    broken = []
    seconds, how = judged_seconds(run)
    if seconds > TIME_BUDGET_S:
        broken.append(f"time {seconds / 60:.1f} min{how} > {TIME_BUDGET_S // 60} min")
    if run.variant != "pretrained" and run.peak_rss_gib > RSS_BUDGET_GIB:
        broken.append(f"peak RSS {run.peak_rss_gib:.1f} GiB > {RSS_BUDGET_GIB:.0f} GiB")
    if broken:
        return "; ".join(broken)
    return f"met{how}" if how else "met"


def judged_seconds(run: Run) -> tuple[float, str]:
    """A pretrained variant is judged once its features are cached: the run that encoded them without its
    features time (its other stages as measured)."""
    features = run.timings.get("features_seconds")
    if run.variant == "pretrained" and run.encoded_features and features:
        return run.wall_s - features, f" (judged without its {features:.0f} s cold features)"
    return run.wall_s, ""


def feature_cache_line(runs: list[Run], warm_cache: bool) -> str:
    """The first run that encoded sentence features against the next run that read them back."""
    readers = [r for r in runs if r.reads_sentence_features and r.status == "ok"]
    cold = next((r for r in readers if r.encoded_features), None)
    if cold is None:
        state = "the cache was warm (--warm-cache)" if warm_cache else "no run encoded sentence features"
        seen = ", ".join(f"{r.name} {r.timings.get('features_seconds')} s" for r in readers) or "no reader finished"
        return f"Sentence-feature cache: {state}; features_seconds: {seen}."
    warm = next((r for r in readers[readers.index(cold) + 1:] if not r.encoded_features), None)
    line = (f"Sentence-feature cache: {cold.name} encoded them (cold): features {cold.timings['features_seconds']} s"
            f" (load {cold.timings.get('load_seconds')} s apart)")
    if warm is None:
        return line + "; no later run read them back."
    share = warm.timings["features_seconds"] / max(cold.timings["features_seconds"], 1e-9)
    verdict = "met" if share < FEATURE_CACHE_TARGET else "NOT met"
    return (line + f"; {warm.name} read them back (warm): features {warm.timings['features_seconds']} s = "
            f"{share:.1%} of the cold run's (target < {FEATURE_CACHE_TARGET:.0%}: {verdict}).")


# -- index choice (child) --------------------------------------------------------------------------------
def compare_indexes(job: dict[str, Any]) -> dict[str, Any]:
    """(child) Approximate indexes against Flat on one set of item and test-query vectors."""
    import numpy as np

    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.index import index_and_search

    dataset = load_dataset(f"esci:path={job['raw']}")  # the runs' prepared dataset, from the same cache
    items, queries, source = ann_vectors(dataset, job["trained_runs"], job["encode_limit"])
    if items is None:
        return {"source": source, "rows": []}
    k = min(ANN_K, len(items))
    flat = index_and_search(items, queries, k, "Flat")
    rows = [index_row(flat, flat, "exact", k)]
    for factory, nprobe, ef_search, depth in index_settings(job["factories"], len(items), job["nprobe"],
                                                            job["ef_search"]):
        found = index_and_search(items, queries, k, factory, nprobe, ef_search)
        rows.append(index_row(found, flat, depth, k))
    shape = f"{len(items):,} items x {items.shape[1]}, {len(queries):,} test queries"
    return {"source": f"{source} ({shape}; {np.dtype(items.dtype).name})", "rows": rows}


def index_row(found, flat, depth: str, k: int) -> dict[str, Any]:
    overlap = top_overlap(found.indices, flat.indices)
    return {"index": found.factory, "search depth": depth, f"overlap@{k}": f"{overlap:.4f}",
            f">= {OVERLAP_TARGET}": "yes" if overlap >= OVERLAP_TARGET else "no",
            "build s": f"{found.build_seconds:,.2f}", "query ms": f"{found.latency_ms:.3f}",
            "index MB": f"{found.index_bytes / 2**20:,.1f}"}


def top_overlap(approximate, exact) -> float:
    """Mean over queries of |approximate top k ∩ exact top k| / k (faiss pads a short list with -1)."""
    import numpy as np

    shares = [len(np.intersect1d(a[a >= 0], e[e >= 0])) / max((e >= 0).sum(), 1)
              for a, e in zip(approximate, exact, strict=True)]
    return float(np.mean(shares)) if shares else float("nan")


def index_settings(factories: list[str], n_items: int, nprobe: int,
                   ef_searches: list[int]) -> list[tuple[str, int, int, str]]:
    """(factory, nprobe, efSearch, search depth in words) per ``--ann`` factory, an HNSW once per ``--ef-search``
    depth. An IVF with more lists than the
    catalogue can train (faiss wants >= 39 vectors per list) gets the largest power-of-two list count that
    fits; nprobe stays, so a small catalogue scans a larger share of its lists than the full one would (the
    share is shown)."""
    settings = []
    for factory in factories:
        match = re.match(r"^(.*?IVF)(\d+)(.*)$", factory)
        if match is None:
            depths = ef_searches if "HNSW" in factory else ef_searches[:1]
            settings += [(factory, nprobe, ef, f"efSearch {ef}" if "HNSW" in factory else "-") for ef in depths]
            continue
        lists = int(match[2])
        fits = 1 << max(0, (n_items // 39).bit_length() - 1)
        shrunk = lists > fits
        lists = fits if shrunk else lists
        probes = min(nprobe, lists)
        note = f" ({match[1]}{match[2]} needs {39 * int(match[2]):,} vectors)" if shrunk else ""
        settings.append((f"{match[1]}{lists}{match[3]}", probes, ef_searches[0],
                         f"nprobe {probes}: {probes / lists:.1%} of the lists{note}"))
    return settings


def ann_vectors(dataset, trained_runs: list[list[str]], encode_limit: int):
    """Item and test-query vectors: the MiniLM ones the runs cached, else those of a finished dense run, else
    MiniLM encoded here on a small catalogue. (items, queries, where they came from) or (None, None, why)."""
    from retrieval_zoo.data.features import DEFAULT_ITEM_TEXT, compose_item_texts

    item_texts = compose_item_texts(dataset.products, DEFAULT_ITEM_TEXT)
    # the runs encode every unit's query, distinct and sorted (features.build_units): the same cache key
    all_queries = sorted(set(dataset.queries["query"].to_list()))
    test_texts = dataset.queries.filter(dataset.queries["split"] == "test")["query"].to_list()
    cached = cached_sentence_features(item_texts, all_queries)
    if cached is not None:
        return cached[0], pick_rows(cached[1], all_queries, test_texts), "MiniLM vectors read from the runs' cache"
    for name, run_dir in trained_runs:
        vectors = run_vectors(run_dir, dataset)
        if vectors is not None:
            return (*vectors, f"the item and query vectors of the trained run {name} (no MiniLM vectors in the cache)")
    if len(item_texts) <= encode_limit:
        from retrieval_zoo.data import text

        return (text.sentence_features(item_texts), pick_rows(text.sentence_features(all_queries), all_queries,
                test_texts), "MiniLM vectors encoded here (not in the runs' cache)")
    return None, None, "skipped: no cached MiniLM vectors and no finished dense run to take vectors from"


def cached_sentence_features(item_texts: list[str], query_texts: list[str]):
    """Both MiniLM matrices if the cache holds them, else None; never encodes nor starts a cache entry, since a
    1.2M-item encode takes hours on a CPU."""
    from retrieval_zoo.data import text

    items, queries = text.cached_sentence_features(item_texts), text.cached_sentence_features(query_texts)
    return None if items is None or queries is None else (items, queries)


def pick_rows(vectors, texts: list[str], wanted: list[str]):
    import numpy as np

    row = {t: i for i, t in enumerate(texts)}
    return np.ascontiguousarray(vectors[[row[t] for t in wanted]], dtype=np.float32)


def run_vectors(run_dir: str, dataset):
    """(items, test queries) of a finished run reloaded from its folder, or None (BM25, or it fails)."""
    from retrieval_zoo.serving import load_model

    try:
        served = load_model(run_dir, dataset)
        if not served.dense:
            return None
        return served.encode_items(), served.encode_units(split="test")
    except Exception as error:  # one unloadable run should not stop the index check: try the next one
        print(f"cannot take vectors from {run_dir}: {error}", flush=True)
        return None


def measure_indexes(runs: list[Run], raw: Path, cache: Path, logs: Path, args: argparse.Namespace) -> dict:
    # the fallback vectors: trained two-tower runs that read no MiniLM features, in run order
    candidates = [[r.name, r.run_dir] for r in runs if r.status == "ok" and r.run_dir
                  and not r.reads_sentence_features and Path(r.run_dir, "model.pt").exists()]
    job = {"raw": str(raw), "trained_runs": candidates, "factories": args.ann, "nprobe": args.nprobe,
           "ef_search": args.ef_search, "encode_limit": args.ann_encode_limit}
    print(f"index check: Flat vs {', '.join(args.ann)} ...", flush=True)
    started = time.perf_counter()
    try:
        answer = child_job("ann", job, logs / "ann.log", cache, args.threads, args.timeout * 60)
    except ChildFailed as error:
        answer = {"source": f"failed: {error}", "rows": []}
    print(f"index check: done in {time.perf_counter() - started:.0f} s", flush=True)
    return answer


# -- the report ------------------------------------------------------------------------------------------
def outside_pipeline_seconds(run: Run) -> float | None:
    """Wall time neither the runner's total nor the dataset's loading (its own column) covers: start-up and
    imports, writing the run folder, the board and its plots."""
    total = run.timings.get("total_seconds")
    if total is None or run.wall_s is None:
        return None
    return max(0.0, run.wall_s - total - (run.timings.get("load_seconds") or 0.0))


RUN_COLUMNS = [  # (header, value of a run, format)
    ("model/variant", lambda r: r.name, "{}"),
    ("device", lambda r: r.device, "{}"),
    *[(f"{stage} s", lambda r, s=stage: r.timings.get(f"{s}_seconds"), "{:,.1f}") for stage in STAGES],
    ("wall s", lambda r: r.wall_s, "{:,.1f}"),
    ("other s", outside_pipeline_seconds, "{:,.1f}"),
    ("peak GiB", lambda r: r.peak_rss_gib, "{:.2f}"),
    ("others' CPU %", lambda r: r.others_cpu_pct, "{:.1f}"),
    ("train pairs/s", lambda r: r.timings.get("train_pairs_per_s"), "{:,.0f}"),
    ("encode items/s", lambda r: r.timings.get("encode_items_per_s"), "{:,.0f}"),
    ("query ms", lambda r: r.timings.get("query_latency_ms"), "{:.2f}"),
    ("ndcg@10", lambda r: r.metrics.get("ndcg@10"), "{:.4f}"),
    ("recall@100", lambda r: r.metrics.get("recall@100"), "{:.4f}"),
    ("budget", lambda r: r.budget, "{}"),
]


def cell(value: Any, form: str = "{}") -> str:
    return "–" if value is None or value == "" else form.format(value).replace("|", "/")


def report(runs: list[Run], indexes: dict, sizes: dict[str, int], args: argparse.Namespace, gpu: str) -> str:
    from retrieval_zoo.reports import markdown_table

    run_table = "\n".join(markdown_table([header for header, _, _ in RUN_COLUMNS],
                                         [[cell(value(r), form) for _, value, form in RUN_COLUMNS] for r in runs]))
    rows = indexes["rows"]
    ann_table = "\n".join(markdown_table(list(rows[0]), [list(row.values()) for row in rows])) if rows else ""
    gpu_line = f"GPU: {gpu}" if gpu != "cpu" else "GPU: not measured (no device in this run)"
    epochs = ", ".join(r.name for r in runs if r.one_epoch) or "none"
    return "\n\n".join(filter(None, [
        f"# ESCI at scale: {sizes_text(sizes)}",
        f"{args.threads} threads (OMP_NUM_THREADS); timeout {args.timeout:g} min per run"
        f"{' (and stopped once over budget: --stop-over-budget)' if args.stop_over_budget else ''}; trained one "
        f"epoch (trainer.max_epochs=1): {epochs}.",
        run_table,
        "Stage seconds from each run's timings.json (train includes validation; encode is the catalogue); wall "
        "is the whole process; other = wall - the runner's total_seconds - load (start-up and imports, writing the run "
        "folder, the board and its plots); peak GiB is the process's ru_maxrss (os.wait4). Budgets: "
        f"default variants < {TIME_BUDGET_S // 60} min wall and < {RSS_BUDGET_GIB:.0f} GiB; pretrained variants "
        f"< {TIME_BUDGET_S // 60} min once their sentence features are cached. Others' CPU % is the host's busy "
        "CPU time while the run went (/proc/stat) less the run's own (rusage), per second of wall, in % of one core.",
        host_load_line(runs),
        feature_cache_line(runs, args.warm_cache),
        f"## Index choice: approximate vs Flat, top {ANN_K}",
        f"Vectors: {indexes['source']}. Target: overlap@{ANN_K} >= {OVERLAP_TARGET} (within 1% of Flat).",
        ann_table,
        gpu_line,
    ]))


def host_load_line(runs: list[Run]) -> str:
    """Whether the runs had the cores to themselves: a busy host makes every time above a contended one."""
    measured = [r for r in runs if r.others_cpu_pct is not None]
    if not measured:
        return "Other processes' CPU: not measured (no /proc/stat on this host)."
    busiest = max(r.others_cpu_pct for r in measured)
    busy = [r.name for r in measured if r.others_cpu_pct > BUSY_HOST_PERCENT]
    if busy:
        return (f"**Busy host**: other processes took more than {BUSY_HOST_PERCENT:g}% of a core during "
                f"{', '.join(busy)} (up to {busiest:.1f}%): their times are contended figures, not idle-host ones.")
    return f"Other processes' CPU during the runs: at most {busiest:.1f}% of one core (an idle host)."


def write_outputs(out: Path, runs: list[Run], indexes: dict, text: str) -> None:
    (out / "scale.md").write_text(text + "\n")
    # run_dir is left out: it named a temporary folder, gone by now
    flat_rows = [{**{k: v for k, v in asdict(r).items() if k not in ("timings", "metrics", "run_dir")},
                  **r.timings, **{f"metric_{k}": v for k, v in r.metrics.items()}} for r in runs]
    write_csv(out / "scale.csv", flat_rows)
    write_csv(out / "ann.csv", indexes["rows"])


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# -- main ------------------------------------------------------------------------------------------------
def benchmark(args: argparse.Namespace) -> None:
    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # the plan first: a misspelt model fails before a generation that takes minutes at full size
    plan = child_job("plan", {"models": args.models}, logs / "plan.log", None, args.threads)
    runs = [Run(**entry, device=plan["device"]) for entry in plan["runs"]]
    sizes = data_sizes(args)
    raw = ensure_data(args.data or default_data_dir(sizes), sizes, logs, args.threads)
    with tempfile.TemporaryDirectory(prefix="rz-scale-") as work:
        results = Path(work) / "results"  # thrown away: the repo's leaderboard never sees these runs
        cache = user_cache() if args.warm_cache else Path(work) / "cache"
        started = time.perf_counter()
        for number, run in enumerate(runs, 1):
            print(f"[{number}/{len(runs)}] {run.name}: started at {clock(time.perf_counter() - started)}", flush=True)
            measure_run(run, raw, results, cache, logs, args, plan["device"])
            print(f"[{number}/{len(runs)}] {run.name}: {run.status} in {run.wall_s:.0f} s, peak "
                  f"{run.peak_rss_gib:.2f} GiB{' (' + run.detail + ')' if run.detail else ''}; elapsed "
                  f"{clock(time.perf_counter() - started)}", flush=True)
        judge_budgets(runs, args.timeout)
        indexes = measure_indexes(runs, raw, cache, logs, args)
    text = report(runs, indexes, sizes, args, plan["device"])
    write_outputs(out, runs, indexes, text)
    print(text)
    print(f"\nwritten: {out}/scale.md, scale.csv, ann.csv, logs/", flush=True)
    failed = [f"{r.name} ({r.status})" for r in runs if r.status != "ok"]
    failed += ["the index check"] if not indexes["rows"] else []
    if failed:  # the report keeps what was measured; the exit status says that something was not
        raise SystemExit(f"not measured: {', '.join(failed)} (see the report and logs/)")


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


CHILD_JOBS = {"generate": generate_data, "plan": plan_runs, "ann": compare_indexes}


def child_main(kind: str, io: Path) -> None:
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    answer = CHILD_JOBS[kind](json.loads(io.read_text()))
    io.with_suffix(".out.json").write_text(json.dumps(answer))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=FULL_PRODUCTS, help="US products (default: 1.2M)")
    parser.add_argument("--judgments", type=int, help="judgments, 20 per query (default: half the products)")
    parser.add_argument("--data", type=Path, help="folder of the generated files, reused while the sizes match "
                                                  "(default: <cache>/scale/esci-us-<sizes>)")
    parser.add_argument("--models", help="comma list of model or model/variant (default: every model, and the "
                                         "pretrained variant of each that has one)")
    parser.add_argument("--timeout", type=float, default=45, help="minutes per run (default: 45)")
    parser.add_argument("--stop-over-budget", action="store_true",
                        help="stop a run once its training alone cannot end within the time budget (the wall so "
                             "far plus the epoch's remaining steps at the rate so far, judged after 2 min of "
                             "training); its row says so, and its later stages are not measured")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "scale", help="report folder")
    parser.add_argument("--warm-cache", action="store_true",
                        help="use your cache folder (RETRIEVAL_ZOO_CACHE) instead of a fresh one")
    parser.add_argument("--ann", nargs="+", default=["HNSW32", "IVF4096,Flat"],
                        help="faiss factories compared with Flat (IVF lists shrink to fit a small catalogue)")
    parser.add_argument("--nprobe", type=int, default=64, help="IVF cells visited per query (at most the list count)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[128, 256],
                        help="HNSW search depths, each one row (default: 128, the config's, and 256)")
    parser.add_argument("--ann-encode-limit", type=int, default=30_000,
                        help="encode MiniLM vectors for the index check only up to this many items")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="OMP_NUM_THREADS of every run (the runner has no thread setting of its own)")
    parser.add_argument("--child", choices=sorted(CHILD_JOBS), help=argparse.SUPPRESS)
    parser.add_argument("--child-io", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        return child_main(args.child, args.child_io)
    # a terminated benchmark raises here like Ctrl-C, so the run in progress is killed with it (run_child)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        benchmark(args)
    except ChildFailed as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
