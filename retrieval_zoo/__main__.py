"""Command line: ``python -m retrieval_zoo <command>`` (also installed as ``retrieval-zoo``).

- ``bench --model mgdspr [--dataset simshop] [--seeds 3] [--variant no_user] [--set model.dim=64 ...]``
- ``leaderboard [--dataset simshop] [--seeds 3] [--models a,b] [--plan benchmarks/leaderboard.yaml]``
- ``claims`` — re-test benchmarks/claims against the saved runs and rebuild results/leaderboard.md
- ``data --dataset esci [--path DIR] [--features light_two_tower/pretrained,...]`` — download (with internet) /
  verify / prepare a dataset; ``--features`` also caches the frozen sentence features those runs read
- ``list`` — models with their variants, datasets
- ``export-mteb RUN_DIR [--out FILE]`` — a run's test scores as MTEB's retrieval result JSON (``runs.export_mteb``)

Exit codes: 0 done; 2 a user error (bad argument, config, dataset, file), printed as one ``error: ...`` line on
stderr (``--debug``, before the command, shows the traceback instead); 130 / 143 interrupted by SIGINT / SIGTERM,
with one line saying what reached the leaderboard. Anything else (a bug) keeps Python's traceback and exit 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback

import yaml
from jsonargparse import ArgumentParser

from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.interrupts import EXIT_CODES, Interrupted, commits_done, interrupts_raise
from retrieval_zoo.models.registry import ConfigError

COMMANDS = ("bench", "leaderboard", "claims", "data", "list", "export-mteb")
# Errors that come from what the user gave (arguments, configs, datasets, files), not from a bug.
USER_ERRORS = (ConfigError, DatasetError, ValueError, OSError, yaml.YAMLError, argparse.ArgumentError)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="retrieval_zoo", description="e-commerce embedding retrieval benchmark",
                            exit_on_error=False)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    commands = parser.add_subcommands(dest="command")

    bench = ArgumentParser(description="train and evaluate one model", exit_on_error=False)
    bench.add_argument("--model", required=True, help="a registered model name (see `list`)")
    bench.add_argument("--dataset", default="simshop", help="dataset name, optionally name:key=value,...")
    bench.add_argument("--seeds", type=int, default=1, help="number of seeds (0..n-1)")
    bench.add_argument("--variant", default=None, help="an ablation variant named in the model's config")
    bench.add_argument("--config", default=None, help="a YAML config file replacing the model's own")
    # repeated --set flags add up (argparse "extend"): the last must not silently drop the ones before it
    bench.add_argument("--set", action="extend", nargs="+", default=[],
                       help="overrides, e.g. --set model.dim=64 trainer.max_epochs=2 (repeatable)")
    bench.add_argument("--results", default="results", help="results folder")
    bench.add_argument("--wandb", default=None, help="online, offline or disabled")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    commands.add_subcommand("bench", bench)

    board = ArgumentParser(description="run the benchmark plan and rebuild the leaderboard", exit_on_error=False)
    board.add_argument("--plan", default="benchmarks/leaderboard.yaml", help="runs to make (YAML)")
    board.add_argument("--seeds", type=int, default=None, help="override the plan's seeds")
    board.add_argument("--only", default=None, help="comma-separated model names to run from the plan")
    board.add_argument("--results", default="results")
    board.add_argument("--wandb", default=None)
    board.add_argument("--resume", action="store_true", help="skip the runs already on the leaderboard")
    commands.add_subcommand("leaderboard", board)

    claims = ArgumentParser(description="test the claims in benchmarks/claims against saved runs",
                            exit_on_error=False)
    claims.add_argument("--claims", default="benchmarks/claims")
    claims.add_argument("--results", default="results")
    commands.add_subcommand("claims", claims)

    data = ArgumentParser(description="download / verify / prepare a dataset", exit_on_error=False)
    data.add_argument("--dataset", required=True)
    data.add_argument("--path", default=None, help="folder holding the official files")
    data.add_argument("--features", default=None,
                      help="comma list of model or model/variant: also encode and cache the frozen sentence features "
                           "their runs read (e.g. light_two_tower/pretrained), so the runs start from the cache")
    commands.add_subcommand("data", data)

    commands.add_subcommand("list", ArgumentParser(description="list models, variants and datasets",
                                                    exit_on_error=False))

    mteb = ArgumentParser(description="write a run's test scores as an MTEB retrieval result (JSON)",
                          exit_on_error=False)
    mteb.add_argument("run_dir", help="a run folder, e.g. results/runs/simshop/mgdspr/default/seed0")
    mteb.add_argument("--out", default=None, help="the JSON file (default: RUN_DIR/mteb/<dataset>.json)")
    commands.add_subcommand("export-mteb", mteb)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = _first_command(argv)
    debug = "--debug" in argv[:first]
    command = argv[first] if first < len(argv) and argv[first] in COMMANDS else None  # until parsed
    commits_before = commits_done()
    try:
        with interrupts_raise():
            args = _parser().parse_args(argv)
            command = args.command
            _run(command, args[command])
    except Interrupted as stop:
        if debug:
            traceback.print_exc()
        print(interrupt_message(stop.signum, command, commits_done() - commits_before), file=sys.stderr)
        return stop.exit_code
    except SystemExit as stop:
        # Lightning turns a SIGTERM it sees first into SIGTERMException, a SystemExit whose status is 0
        if type(stop).__name__ != "SIGTERMException":
            raise
        print(interrupt_message(signal.SIGTERM, command, commits_done() - commits_before), file=sys.stderr)
        return EXIT_CODES[signal.SIGTERM]
    except USER_ERRORS as error:
        if debug:
            raise
        print(error_line(error, command), file=sys.stderr)
        return 2
    return 0


def _first_command(argv: list[str]) -> int:
    """The position of the subcommand in ``argv`` (top-level options such as --debug come before it)."""
    return next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))


def error_line(error: BaseException, command: str | None) -> str:
    """One ``error: ...`` line, whatever newlines the message holds."""
    text = ""
    for line in (line.strip() for line in str(error).splitlines() if line.strip()):
        text += ("" if not text else " " if text.endswith(":") else "; ") + line
    text = text or type(error).__name__
    if isinstance(error, argparse.ArgumentError):
        text += f" (see: python -m retrieval_zoo {command + ' ' if command else ''}--help)"
    return f"error: {text}"


def interrupt_message(signum: int, command: str | None, commits: int) -> str:
    """What an interrupt left behind, in one line. The runner commits an invocation's runs to the leaderboard in
    one step at its end (``interrupts.commit_guard``), so an interrupt loses only uncommitted work."""
    head = f"interrupted by {signal.Signals(signum).name} (exit {128 + signum})"
    if command not in ("bench", "leaderboard"):
        return f"{head}: `{command or 'retrieval_zoo'}` did not finish"
    if commits == 0:
        return (f"{head}: nothing from this invocation was committed to the leaderboard; runs finished earlier are "
                "unchanged; staged folders are cleaned at the next start")
    return (f"{head}: {commits} commit(s) of this invocation reached the leaderboard whole; work after the last "
            "one was not committed; staged folders are cleaned at the next start")


def _run(command: str, options) -> None:
    if command == "bench":
        from retrieval_zoo.runner import run_benchmark

        run_benchmark(options.model, options.dataset, options.seeds, options.variant, options.set,
                      options.results, options.wandb, progress=not options.no_progress,
                      config_file=options.config)
    elif command == "leaderboard":
        from retrieval_zoo.plan import run_plan

        only = options.only.split(",") if options.only else None
        run_plan(options.plan, options.results, seeds=options.seeds, only=only, wandb=options.wandb,
                 resume=options.resume)
    elif command == "claims":
        from retrieval_zoo.plan import refresh_claims

        print(refresh_claims(options.claims, options.results))
    elif command == "data":
        from retrieval_zoo.data.prepare import prepare

        dataset = prepare(options.dataset, options.path)
        print(dataset.describe())
        if options.features:
            from retrieval_zoo.runner import cache_sentence_features

            for spec in options.features.split(","):
                model, _, variant = spec.strip().partition("/")
                print(cache_sentence_features(model, dataset, variant or None))
    elif command == "export-mteb":
        from retrieval_zoo.runs import export_mteb

        print(export_mteb(options.run_dir, options.out))
    else:
        _print_listing()


def _print_listing() -> None:
    from retrieval_zoo.data.registry import dataset_description, list_datasets
    from retrieval_zoo.models import list_models, list_variants
    from retrieval_zoo.models.registry import model_entry

    print("models:")
    for name in list_models():
        entry = model_entry(name)
        kind = "baseline" if entry.baseline else "zoo"
        print(f"  {name:18s} [{kind}] {entry.description}; variants: {', '.join(list_variants(name))}")
    print("datasets:")
    for name in list_datasets():
        print(f"  {name:18s} {dataset_description(name)}")


if __name__ == "__main__":
    sys.exit(main())
