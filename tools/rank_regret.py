"""Regret of the rank-sum choice of docs/results/selection/rule-rank.md, replayed on selection reports.

    python tools/rank_regret.py RUN_DIR...

Every RUN_DIR holds a selection.json written by ``domadapt select`` with labels. For each run it
picks the checkpoint with the lowest sum of its rank under ``morph_ours`` and its rank under
``target_consistency`` (scipy's average ranks, missing values last, the earlier step on equal
sums) and compares its regret with ``morph_ours``'s; prints one row per run, the paired
difference over all runs (95 % t-interval) and the mean regrets per method.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from domadapt.criteria import with_combined
from domadapt.paired import t_interval
from domadapt.selection import choose

IOU = "target_iou"


def run_regrets(run_dir: Path) -> dict:
    report = json.loads((run_dir / "selection.json").read_text())
    iou = {int(step): s[IOU] for step, s in report["target_scores"].items()}
    best = max(iou.values())
    ours = choose(report["records"], "morph_ours")
    regret_ours = best - iou[ours["step"]]
    stored = report["regret"]["morph_ours"]["regret"]
    if abs(regret_ours - stored) > 1e-9:
        sys.exit(f"{run_dir}: morph_ours regret {regret_ours} differs from the stored {stored}")
    pick = choose(with_combined(report["records"]), "rank_morph_consistency")  # records in step order
    return {"run": str(run_dir), "method": run_dir.parent.name, "morph_ours": regret_ours,
            "rank": best - iou[pick["step"]], "step_ours": ours["step"], "step_rank": pick["step"]}


def main(run_dirs: list[str]) -> None:
    rows = [run_regrets(Path(d)) for d in run_dirs]
    print("| run | morph_ours step, regret | rank step, regret |\n|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['step_ours']}, {r['morph_ours']:.3f} | {r['step_rank']}, {r['rank']:.3f} |")
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    print("\n| method | n | `morph_ours` | `rank_morph_consistency` |\n|---|---:|---:|---:|")
    for method, group in sorted(by_method.items()):
        print(f"| {method} | {len(group)} | {np.mean([r['morph_ours'] for r in group]):.3f} | "
              f"{np.mean([r['rank'] for r in group]):.3f} |")
    mean, low, high = t_interval([r["rank"] - r["morph_ours"] for r in rows])
    print(f"\nAll {len(rows)} runs: morph_ours {np.mean([r['morph_ours'] for r in rows]):.4f}, "
          f"rank_morph_consistency {np.mean([r['rank'] for r in rows]):.4f}; "
          f"rank minus morph_ours {mean:+.4f} [{low:+.4f}, {high:+.4f}]")


if __name__ == "__main__":
    main(sys.argv[1:])
