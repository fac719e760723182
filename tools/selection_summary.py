"""Aggregate `domadapt select` reports of several runs into one regret table.

Usage::

    python tools/selection_summary.py RUN_DIR [RUN_DIR ...] > summary.md

Each RUN_DIR must hold a selection.json written by `domadapt select` with
labels. Prints, per criterion and pair, the regret (best target IoU over the
evaluated checkpoints minus the IoU of the one the criterion picks) and the
Spearman correlation with target IoU, then the mean regret per criterion.
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


if __name__ == "__main__":
    print(render(load(sys.argv[1:])))
