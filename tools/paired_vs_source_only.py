"""Every method of a benchmark folder against source-only on the same pairs and seeds.

    python tools/paired_vs_source_only.py BENCHMARK_DIR [--metric target_iou_slice_mean]

Runs are read from BENCHMARK_DIR/runs/*/*/seed*/metrics.json. One Markdown row per
(pair, method): mean +- std over seeds, n, the paired difference to the baseline run
of the same pair and seed with its 95 % t-interval over seeds, and the mean wall time.
A difference is called a win or a loss only when its interval excludes 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from domadapt.paired import t_interval, verdict


def load(root: Path) -> dict[tuple, dict]:
    runs = {}
    for path in sorted(root.glob("runs/*/*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        runs[(f"{m['source']}->{m['target']}", m["method"], int(m["seed"]))] = m
    return runs


def table(runs: dict[tuple, dict], metric: str) -> str:
    lines = [f"| pair | method | {metric} mean +- std | n | paired diff vs source-only "
             "[95 % t-interval] | verdict | wall min (mean) |", "|---|---|---|---:|---|---|---:|"]
    for pair in sorted({k[0] for k in runs}):
        methods = sorted({k[1] for k in runs if k[0] == pair}, key=lambda m: (m != "baseline", m))
        for method in methods:
            seeds = sorted(k[2] for k in runs if k[:2] == (pair, method))
            values = np.array([runs[(pair, method, s)][metric] for s in seeds])
            wall = np.mean([runs[(pair, method, s)]["wall_time_s"] for s in seeds]) / 60
            std = values.std(ddof=1) if len(values) > 1 else float("nan")
            row = f"| {pair} | {method} | {values.mean():.3f} +- {std:.3f} | {len(values)} |"
            paired = [s for s in seeds if (pair, "baseline", s) in runs]
            if method == "baseline" or not paired:
                lines.append(f"{row} - | - | {wall:.1f} |")
                continue
            diffs = np.array([runs[(pair, method, s)][metric] - runs[(pair, "baseline", s)][metric]
                              for s in paired])
            mean, low, high = t_interval(diffs)
            lines.append(f"{row} {mean:+.3f} [{low:+.3f}, {high:+.3f}] (seeds {paired}) | "
                         f"{verdict(low, high)} | {wall:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark_dir", type=Path)
    parser.add_argument("--metric", default="target_iou_slice_mean")
    args = parser.parse_args()
    runs = load(args.benchmark_dir)
    if not runs:
        raise SystemExit(f"No finished runs under {args.benchmark_dir}/runs.")
    print(table(runs, args.metric))


if __name__ == "__main__":
    main()
