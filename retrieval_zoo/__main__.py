"""Command line: ``python -m retrieval_zoo <command>`` (also installed as ``retrieval-zoo``).

- ``bench --model mgdspr [--dataset simshop] [--seeds 3] [--variant no_user] [--set model.dim=64 ...]``
- ``leaderboard [--dataset simshop] [--seeds 3] [--models a,b] [--plan benchmarks/leaderboard.yaml]``
- ``claims`` — re-test benchmarks/claims against the saved runs and rebuild results/leaderboard.md
- ``data --dataset esci [--path DIR]`` — download (with internet) / verify / prepare a dataset
- ``list`` — models with their variants, datasets
"""

from __future__ import annotations

import sys

from jsonargparse import ArgumentParser

from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.models.registry import ConfigError


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="retrieval_zoo", description="e-commerce embedding retrieval benchmark")
    commands = parser.add_subcommands(dest="command")

    bench = ArgumentParser(description="train and evaluate one model")
    bench.add_argument("--model", required=True, help="a registered model name (see `list`)")
    bench.add_argument("--dataset", default="simshop", help="dataset name, optionally name:key=value,...")
    bench.add_argument("--seeds", type=int, default=1, help="number of seeds (0..n-1)")
    bench.add_argument("--variant", default=None, help="an ablation variant named in the model's config")
    bench.add_argument("--config", default=None, help="a YAML config file replacing the model's own")
    bench.add_argument("--set", nargs="*", default=[], help="overrides, e.g. --set model.dim=64 trainer.max_epochs=2")
    bench.add_argument("--results", default="results", help="results folder")
    bench.add_argument("--wandb", default=None, help="online, offline or disabled")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    commands.add_subcommand("bench", bench)

    board = ArgumentParser(description="run the benchmark plan and rebuild the leaderboard")
    board.add_argument("--plan", default="benchmarks/leaderboard.yaml", help="runs to make (YAML)")
    board.add_argument("--seeds", type=int, default=None, help="override the plan's seeds")
    board.add_argument("--only", default=None, help="comma-separated model names to run from the plan")
    board.add_argument("--results", default="results")
    board.add_argument("--wandb", default=None)
    board.add_argument("--resume", action="store_true", help="skip the runs already on the leaderboard")
    commands.add_subcommand("leaderboard", board)

    claims = ArgumentParser(description="test the claims in benchmarks/claims against saved runs")
    claims.add_argument("--claims", default="benchmarks/claims")
    claims.add_argument("--results", default="results")
    commands.add_subcommand("claims", claims)

    data = ArgumentParser(description="download / verify / prepare a dataset")
    data.add_argument("--dataset", required=True)
    data.add_argument("--path", default=None, help="folder holding the official files")
    commands.add_subcommand("data", data)

    commands.add_subcommand("list", ArgumentParser(description="list models, variants and datasets"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command
    options = args[command]
    try:
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

            print(prepare(options.dataset, options.path))
        else:
            _print_listing()
    except (ConfigError, DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


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
