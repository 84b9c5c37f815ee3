"""The MRSE image curve's gain split by what the query names: a colour (readable from the frozen image features,
linear probe 1.00) or a print style (probe 0.65), from the curve's committed files (no training, no ranked runs).

    python benchmarks/mrse_curve_by_attribute.py            # the plan's mrse_images curve, every point on disk

Prints, per point and query kind, the seed-mean ndcg@10 of ``default`` and ``text_only`` and the gain with its
95% interval over searches (the same paired t-interval as results/mechanisms.md), and writes
results/mechanisms/mrse_images_by_attribute.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mechanisms  # noqa: E402
from mrse_gate_report import named_attribute  # noqa: E402


def query_kinds(data) -> pl.DataFrame:
    """(query_id, names): what each image_attr query names."""
    queries = data.queries.filter(pl.col("group") == "image_attr")
    return queries.select("query_id", pl.col("intent").map_elements(named_attribute, return_dtype=pl.Utf8)
                          .alias("names"))


def point_by_kind(plan: dict, curve: dict, value: float, results_dir: Path, metric: str) -> list[dict]:
    spec = mechanisms.point_spec(plan, curve, value)
    data = mechanisms.point_data(spec)
    folders = {role: mechanisms.current_folders(results_dir, spec, data, curve["model"], curve[role], curve.get("set"))
               for role in ("mechanism", "control")}
    seeds = sorted(set(folders["mechanism"]) & set(folders["control"]))
    if not seeds:
        return []
    kinds = query_kinds(data)
    rows = []
    for kind in sorted(kinds["names"].unique()):
        wanted = kinds.filter(pl.col("names") == kind)["query_id"]
        means = {}
        for role in ("mechanism", "control"):
            per_seed = []
            for seed in seeds:
                folder = folders[role][seed]
                units = mechanisms.units_of(folder).filter(pl.col("query_id").is_in(wanted.implode()))["unit_id"]
                values = mechanisms.unit_values(folder, metric, curve.get("group"))
                per_seed.append(values.filter(pl.col("unit_id").is_in(units.implode())))
            means[role] = pl.concat(per_seed).group_by("unit_id").agg(pl.col("value").mean()).sort("unit_id")
        low, high = mechanisms.gain_interval(means["mechanism"], means["control"])
        a, b = float(means["mechanism"]["value"].mean()), float(means["control"]["value"].mean())
        rows.append({"knob": value, "names": kind, "searches": means["mechanism"].height, "seeds": len(seeds),
                     "mechanism": a, "control": b, "gain": a - b, "gain_low": low, "gain_high": high})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "benchmarks" / "mechanisms.yaml")
    parser.add_argument("--curve", default="mrse_images")
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    plan = mechanisms.read_mechanisms_plan(args.plan)
    curve = plan["curves"][args.curve]
    results_dir = ROOT / plan.get("results", "results/mechanisms")
    rows = [row for value in curve["points"] for row in point_by_kind(plan, curve, value, results_dir, args.metric)]
    if not rows:
        raise SystemExit(f"error: no runs of curve {args.curve} on disk; run `python benchmarks/mechanisms.py "
                         f"--curves {args.curve}` first")
    table = pl.DataFrame(rows)
    out = results_dir / f"{args.curve}_by_attribute.csv"
    table.write_csv(out)
    with pl.Config(tbl_rows=50, float_precision=3, tbl_width_chars=160):
        print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
