"""Cross-method regret of a label-free choice, replayed on finished benchmark runs.

What ``domadapt run --method auto`` would have kept, had its portfolio been the methods
given: for every pair and seed, each method's checkpoint picked by CRITERION, then the
best of those picks by the same criterion (a combined criterion ranks the picks among
themselves, as auto does); regret = the best target IoU over every
checkpoint of every method (labels, after the fact) minus the kept one's. Every run
needs a selection.json from ``domadapt select`` with labels (the per-checkpoint target
IoU on 40 test slices, as the selection regret tables).

Usage::

    python tools/auto_regret.py BENCH_RUNS_DIR --methods baseline,self_training-histogram \\
        [--criterion morph_ours]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from domadapt.auto import across_runs
from domadapt.criteria import directions, with_combined
from domadapt.selection import choose

#: The IoU the selection reports store per checkpoint (pooled over the scored test slices).
IOU = "target_iou"


def replay(runs: Path, methods: list[str], criterion: str) -> list[dict]:
    """One row per pair and seed with every method's pick present."""
    rows = []
    for pair in sorted(p for p in runs.iterdir() if p.is_dir()):
        seeds = sorted({s.name for m in methods for s in (pair / m).glob("seed*")})
        for seed in seeds:
            reports = {m: pair / m / seed / "selection.json" for m in methods}
            if not all(r.is_file() for r in reports.values()):
                continue
            rows.append(_row(pair.name, seed, {m: json.loads(r.read_text()) for m, r in reports.items()},
                             criterion))
    return rows


def _row(pair: str, seed: str, reports: dict[str, dict], criterion: str) -> dict:
    sign = 1.0 if directions()[criterion] == "min" else -1.0
    chosen = {}
    for method, report in reports.items():
        record = choose(with_combined(report["records"]), criterion)
        if record is not None:
            chosen[method] = record
    values = dict(zip(chosen, across_runs(list(chosen.values()), criterion)))
    picks = {m: (sign * values[m], reports[m]["target_scores"][str(r["step"])][IOU], r["step"])
             for m, r in chosen.items()}
    kept = min(picks, key=lambda m: picks[m][0])
    best = max(s[IOU] for r in reports.values() for s in r["target_scores"].values())
    return {"pair": pair, "seed": seed, "kept": kept, "kept_iou": picks[kept][1], "best_iou": best,
            "regret": best - picks[kept][1],
            "picks": {m: round(p[1], 4) for m, p in picks.items()}}


def render(rows: list[dict], methods: list[str], criterion: str) -> str:
    lines = [f"Portfolio {', '.join(methods)}; criterion `{criterion}`; IoU = `{IOU}` on the scored "
             "test slices.", "",
             "| pair | seed | kept | kept IoU | best IoU (any method, any step) | regret | "
             + " | ".join(f"{m} pick" for m in methods) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(methods)]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['seed']} | {r['kept']} | {r['kept_iou']:.3f} | "
                     f"{r['best_iou']:.3f} | {r['regret']:.3f} | "
                     + " | ".join(f"{r['picks'].get(m, float('nan')):.3f}" for m in methods) + " |")
    for pair in sorted({r["pair"] for r in rows}):
        regrets = [r["regret"] for r in rows if r["pair"] == pair]
        lines.append(f"\n{pair}: mean cross-method regret {np.mean(regrets):.3f} (n = {len(regrets)})")
    if rows:
        lines.append(f"\nAll: mean cross-method regret {np.mean([r['regret'] for r in rows]):.3f} "
                     f"(n = {len(rows)})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a benchmark's runs/ folder (<pair>/<method>/seed<N>)")
    parser.add_argument("--methods", required=True, help="comma-separated portfolio")
    parser.add_argument("--criterion", default="morph_ours")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    print(render(replay(args.runs, methods, args.criterion), methods, args.criterion))


if __name__ == "__main__":
    main()
