"""Paired comparison of two sets of runs of the same pairs and seeds (e.g. a setting on vs off).

    python tools/paired_runs.py /tmp/grid/fp32 /tmp/grid/fast

Runs are matched by (source, target, method, seed) from their metrics.json. Prints one
row per matched run (target IoU slice mean, source-val IoU of the chosen checkpoint,
wall time) and the mean paired difference (second minus first) with a 95 % t-interval,
over all runs and then separately over the cross-domain and the in-domain (source = target)
runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def load(root: str) -> dict[tuple, dict]:
    runs = {}
    for path in Path(root).rglob("metrics.json"):
        m = json.loads(path.read_text())
        runs[(m["source"], m["target"], m["method"], m["seed"])] = m
    return runs


def interval(diffs: list[float]) -> str:
    """Mean and 95 % t-interval of paired differences."""
    d = np.asarray(diffs, float)
    if len(d) < 2:
        return f"{d.mean():+.3f} (n = {len(d)})"
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] (n = {len(d)})"


def main(first: str, second: str) -> None:
    a, b = load(first), load(second)
    keys = sorted(set(a) & set(b))
    print("| pair | seed | target IoU A | target IoU B | source-val IoU A | source-val IoU B "
          "| wall s A | wall s B |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in keys:
        x, y = a[k], b[k]
        print(f"| {k[0]}->{k[1]} | {k[3]} | {x['target_iou_slice_mean']:.3f} | "
              f"{y['target_iou_slice_mean']:.3f} | {x['source_val_iou']:.3f} | "
              f"{y['source_val_iou']:.3f} | {x['wall_time_s']:.0f} | {y['wall_time_s']:.0f} |")
    print(f"\nA = {first}, B = {second}")
    groups = {"all runs": keys, "cross-domain runs": [k for k in keys if k[0] != k[1]],
              "in-domain runs": [k for k in keys if k[0] == k[1]]}
    for name, group in groups.items():
        if group:
            summarise(name, group, a, b)


def summarise(name: str, keys: list[tuple], a: dict, b: dict) -> None:
    """Mean paired differences B - A over ``keys`` (target IoU, source-val IoU, wall ratio)."""
    tgt = [b[k]["target_iou_slice_mean"] - a[k]["target_iou_slice_mean"] for k in keys]
    src = [b[k]["source_val_iou"] - a[k]["source_val_iou"] for k in keys]
    wall = [b[k]["wall_time_s"] / a[k]["wall_time_s"] for k in keys]
    print(f"\n{name}:")
    print(f"target IoU (slice mean), B - A: {interval(tgt)}")
    print(f"source-val IoU, B - A: {interval(src)}")
    print(f"wall time, B / A: {np.mean(wall):.2f} (mean over runs)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
