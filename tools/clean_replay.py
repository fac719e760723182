"""Replay the cleaning of docs/results/recipe/plan-clean.md on finished runs' written predictions.

    DOMADAPT_DATA=... DOMADAPT_CACHE=... python tools/clean_replay.py --out rows.csv RUN_DIR...

For every run folder (holding metrics.json and predictions/target_test_prob.tif) it scores the
prediction as written (`raw`, checked against metrics.json) and after removing 2-D specks and
filling 2-D holes smaller than f x the source's 5th-percentile object area, for each f of
``--fractions``. One CSV row per run; then the paired differences per fraction with 95 %
t-intervals, over the cross-domain runs, per method and per pair.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from domadapt.config import config_from_plain, load_yaml
from domadapt.data.prepare import load_target
from domadapt.metrics import segmentation_scores
from domadapt.paired import t_interval

_EIGHT = np.ones((3, 3), dtype=bool)


def min_area_px(area_um2: float, pixel_um: tuple[float, float]) -> int:
    """An area in µm² as a whole number of pixels of (y, x) size ``pixel_um``, at least 1."""
    return max(1, round(area_um2 / (pixel_um[0] * pixel_um[1])))


def clean_binary(binary: np.ndarray, n_px: int) -> np.ndarray:
    """A bool copy of a (Y, X) or (Z, Y, X) mask without specks and holes under ``n_px`` pixels."""
    mask = np.asarray(binary, dtype=bool)
    if mask.ndim == 2:
        return _clean_plane(mask, n_px)
    return np.stack([_clean_plane(plane, n_px) for plane in mask]) if len(mask) else mask.copy()


def _clean_plane(plane: np.ndarray, n_px: int) -> np.ndarray:
    kept = _keep_large(plane, n_px)
    holes = _small_holes(~kept, n_px)
    return kept | holes


def _keep_large(plane: np.ndarray, n_px: int) -> np.ndarray:
    labels, count = ndi.label(plane, structure=_EIGHT)
    if count == 0:
        return plane.copy()
    large = np.bincount(labels.ravel()) >= n_px
    large[0] = False
    return large[labels]


def _small_holes(background: np.ndarray, n_px: int) -> np.ndarray:
    """Background components under ``n_px`` pixels that touch no border of the image."""
    labels, count = ndi.label(background)
    if count == 0:
        return np.zeros_like(background)
    small = np.bincount(labels.ravel()) < n_px
    small[0] = False
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    small[border] = False
    return small[labels]


def test_volume(run_dir: Path, cache: dict):
    """The run's target test volume (labels and voxel size), loaded once per target."""
    cfg = config_from_plain(load_yaml(run_dir / "config.yaml"), stored=True)
    key = (cfg.target, cfg.data.max_slices)
    if key not in cache:
        cache[key] = load_target(cfg, "test")
    return cfg, cache[key]


def replay(run_dir: Path, fractions: list[float], cache: dict) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg, test = test_volume(run_dir, cache)
    prob = tifffile.imread(run_dir / "predictions" / "target_test_prob.tif").reshape(test.mask.shape)
    binary = prob >= cfg.inference.threshold * 255.0
    raw = segmentation_scores(binary, test.mask)["iou_slice_mean"]
    if abs(raw - metrics["target_iou_slice_mean"]) > 1e-9:
        sys.exit(f"{run_dir}: raw {raw} differs from metrics.json {metrics['target_iou_slice_mean']}")
    row = {"run": str(run_dir), "source": metrics["source"], "target": metrics["target"],
           "method": metrics["method"], "seed": metrics["seed"], "raw": raw,
           "predict_s": metrics.get("timings_s", {}).get("predict_target_test")}
    a5 = metrics["trust"]["source"]["area_um2_p5"]
    pixel_um = tuple(v / 1000.0 for v in test.voxel_size_nm[1:])
    for f in fractions:
        n = min_area_px(f * a5, pixel_um)
        start = time.perf_counter()
        cleaned = clean_binary(binary, n)
        row[f"clean_{f:g}_s"] = round(time.perf_counter() - start, 3)
        row[f"n_px_{f:g}"] = n
        row[f"clean_{f:g}"] = segmentation_scores(cleaned, test.mask)["iou_slice_mean"]
    return row


def summary(rows: list[dict], fractions: list[float]) -> None:
    groups = defaultdict(list)
    for r in rows:
        if r["source"] != r["target"]:
            groups["all cross-domain"].append(r)
        groups[r["method"]].append(r)
        groups[f"{r['source']}->{r['target']}"].append(r)
    for f in fractions:
        print(f"\nclean-{f:g} minus raw, target_iou_slice_mean (mean [95 % t], n):")
        for name, group in groups.items():
            mean, low, high = t_interval([r[f"clean_{f:g}"] - r["raw"] for r in group])
            raw = np.mean([r["raw"] for r in group])
            cleaned = np.mean([r[f"clean_{f:g}"] for r in group])
            print(f"  {name}: raw {raw:.3f} -> {cleaned:.3f}: {mean:+.4f} [{low:+.4f}, {high:+.4f}] "
                  f"(n = {len(group)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--fractions", default="0.25,0.5,1.0")
    parser.add_argument("--out", type=Path, required=True, help="CSV, one row per run")
    args = parser.parse_args()
    fractions = [float(x) for x in args.fractions.split(",")]
    cache: dict = {}
    rows = []
    for run_dir in args.runs:
        rows.append(replay(run_dir, fractions, cache))
        print(f"{run_dir}: raw {rows[-1]['raw']:.4f}", flush=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary(rows, fractions)


if __name__ == "__main__":
    main()
