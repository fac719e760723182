"""Two benchmark grids' results.csv side by side: each cell paired over the seeds both ran.

    python tools/compare_grids.py OLD/results.csv NEW/results.csv [--metric target_iou_slice_mean]

For a grid re-run after a default changed (the recipe, the criterion): per (pair, method),
the two means, the paired difference NEW - OLD over the common seeds with its 95 %
t-interval, and the same pooled over all cross-domain cells and over all cells. Markdown.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from domadapt.paired import t_interval, verdict


def load(path: Path, metric: str) -> dict[tuple[str, str, int], float]:
    """(pair, method, seed) -> metric of every finished run of a results.csv."""
    with open(path, newline="") as handle:
        return {(r["pair"], r["method"], int(r["seed"])): float(r[metric])
                for r in csv.DictReader(handle) if r.get("status", "finished") == "finished"
                and r.get(metric) not in (None, "")}


def _row(label: str, old: list[float], new: list[float]) -> str:
    diffs = [b - a for a, b in zip(old, new)]
    mean, low, high = t_interval(diffs)
    return (f"| {label} | {len(diffs)} | {sum(old) / len(old):.3f} | {sum(new) / len(new):.3f} | "
            f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] | {verdict(low, high)} |")


def table(old: dict, new: dict) -> str:
    common = sorted(set(old) & set(new))
    lines = ["| cell | n | old | new | new - old [95 % t] | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    for cell in sorted({key[:2] for key in common}):
        keys = [k for k in common if k[:2] == cell]
        lines.append(_row(f"{cell[0]} {cell[1]}", [old[k] for k in keys], [new[k] for k in keys]))
    cross = [k for k in common if k[0].split("->")[0] != k[0].split("->")[1]]
    for label, keys in (("all cross-domain runs", cross), ("all runs", common)):
        if keys:
            lines.append(_row(f"**{label}**", [old[k] for k in keys], [new[k] for k in keys]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--metric", default="target_iou_slice_mean")
    args = parser.parse_args()
    print(table(load(args.old, args.metric), load(args.new, args.metric)))


if __name__ == "__main__":
    main()
