"""Markdown table of finished run folders found under the given directories.

    python tools/runs_table.py /tmp/st/runs-histogram /tmp/st/runs-fda ...

One row per run (metrics.json): pair, method (with its style kind / ssl pretext),
target IoU (slice mean and whole volume), selection criterion and step, wall time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def variant(run_dir: Path, method: str) -> str:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if method.startswith("style_transfer"):
        style = config["style"]
        reused = " (reused segmenter)" if style.get("segmenter_from") else ""
        return f"{method} {style['kind']} {style['direction']}{reused}"
    if method.startswith("ssl"):
        return f"{method} {config['ssl']['pretext']}"
    return method


def main(folders: list[str]) -> None:
    rows = []
    for folder in folders:
        for metrics_path in sorted(Path(folder).glob("**/metrics.json")):
            m = json.loads(metrics_path.read_text())
            rows.append((f"{m['source']}->{m['target']}", variant(metrics_path.parent, m["method"]),
                         m["target_iou_slice_mean"], m["target_iou"], m["selection_criterion"],
                         m["selected_step"], m["wall_time_s"] / 60))
    print("| pair | method | target IoU (slice mean) | target IoU | chosen by | step | wall (min) |")
    print("|---|---|---:|---:|---|---:|---:|")
    for pair, name, slice_iou, iou, criterion, step, wall in sorted(rows):
        print(f"| {pair} | {name} | {slice_iou:.3f} | {iou:.3f} | {criterion} | {step} | {wall:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
