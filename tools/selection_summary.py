"""Aggregate `domadapt select` reports of several runs into one regret table.

Usage::

    python tools/selection_summary.py RUN_DIR [RUN_DIR ...] > summary.md
    python tools/selection_summary.py --by-method RUN_DIR [RUN_DIR ...]

Each RUN_DIR (``<pair>/<method>/seed<N>``) must hold a selection.json written by
`domadapt select` with labels. Prints, per criterion and pair, the regret (best
target IoU over the evaluated checkpoints minus the IoU of the one the criterion
picks) and the Spearman correlation with target IoU, then the mean regret per
criterion. ``--by-method`` groups the runs by pair and method (mean regret, mean
Spearman and n per cell) and applies the default-criterion rule of
docs/results/selection/rule.md: lowest mean regret over all runs, mean regrets within
TIE of the lowest tie, a tie goes to the higher mean Spearman.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def load(run_dirs: list[str]) -> list[tuple[str, dict]]:
    rows = []
    for run in run_dirs:
        report = json.loads((Path(run) / "selection.json").read_text())
        pair = Path(run).parents[1].name
        rows.append((pair, report))
    return rows


def render(rows: list[tuple[str, dict]]) -> str:
    criteria = sorted({c for _, r in rows for c in r.get("regret", {})})
    head = "| pair | best IoU | " + " | ".join(f"{c} regret / rho" for c in criteria) + " |"
    lines = [head, "|" + "---|" * (len(criteria) + 2)]
    regrets: dict[str, list[float]] = {c: [] for c in criteria}
    for pair, report in rows:
        best = max(s["target_iou"] for s in report["target_scores"].values())
        cells = []
        for c in criteria:
            row = report["regret"].get(c)
            if row is None:
                cells.append("-")
                continue
            regrets[c].append(row["regret"])
            rho = "n/a" if row["spearman"] is None else f"{row['spearman']:+.2f}"
            cells.append(f"{row['regret']:.3f} / {rho}")
        lines.append(f"| {pair} | {best:.3f} | " + " | ".join(cells) + " |")
    means = [f"**{np.mean(v):.3f}**" if v else "-" for v in regrets.values()]
    lines.append("| mean regret | | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


#: Mean regrets this close to the lowest tie (docs/results/selection/rule.md).
TIE = 0.005


def _cell(values: list[tuple[float, float | None]]) -> str:
    if not values:
        return "-"
    rhos = [r for _, r in values if r is not None]
    rho = f"{np.mean(rhos):+.2f}" if rhos else "n/a"
    return f"{np.mean([g for g, _ in values]):.3f} / {rho} ({len(values)})"


def by_method(run_dirs: list[str]) -> str:
    """Regret / Spearman (n) per pair x method x criterion, all-run means, and the rule's pick."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in run_dirs:
        report = json.loads((Path(run) / "selection.json").read_text())
        key = (Path(run).parents[1].name, Path(run).parents[0].name)
        groups.setdefault(key, []).append(report.get("regret", {}))
    criteria = sorted({c for reports in groups.values() for r in reports for c in r})
    every = {c: [(r[c]["regret"], r[c]["spearman"]) for rs in groups.values() for r in rs if c in r]
             for c in criteria}
    lines = ["| pair | method | " + " | ".join(f"`{c}`" for c in criteria) + " |",
             "|---|---|" + "---|" * len(criteria)]
    for (pair, method), reports in sorted(groups.items()):
        cells = [_cell([(r[c]["regret"], r[c]["spearman"]) for r in reports if c in r]) for c in criteria]
        lines.append(f"| {pair} | {method} | " + " | ".join(cells) + " |")
    lines.append("| **all runs** | | " + " | ".join(f"**{_cell(every[c])}**" for c in criteria) + " |")
    mean = {c: float(np.mean([g for g, _ in v])) for c, v in every.items() if v}
    rho = {c: float(np.mean([r for _, r in every[c] if r is not None] or [-1.0])) for c in mean}
    low = min(mean.values())
    tied = [c for c in mean if mean[c] <= low + TIE]
    pick = max(tied, key=lambda c: rho[c])
    order = sorted(mean, key=lambda c: (mean[c], -rho[c]))
    lines += ["", "Cells: mean regret / mean Spearman (n runs).", "",
              "Ranking by mean regret: " + ", ".join(f"`{c}` {mean[c]:.3f}" for c in order) + ".",
              f"Tied within {TIE}: " + ", ".join(f"`{c}` (rho {rho[c]:+.2f})" for c in tied)
              + f". Rule's pick: `{pick}`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--by-method":
        print(by_method(args[1:]))
    else:
        print(render(load(args)))
