"""Two criteria's picks in the same runs, paired: what switching the criterion would change.

    python tools/criterion_pair.py RUN_DIR [RUN_DIR ...] --a morph_ours --b source_val_iou

Each RUN_DIR holds a selection.json from ``domadapt select`` with labels (the benchmark's
``--regret``): every checkpoint's target IoU on the scored test slices. Prints one row per
run (each criterion's step and target IoU, B minus A) and the mean of the differences with
a 95 % t-interval. Used by the in-domain criterion rule (docs/results/selection/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from domadapt.paired import t_interval


def pick(report: dict, criterion: str) -> tuple[int, float]:
    """The step a criterion picked in one run and that checkpoint's target IoU."""
    entry = report["regret"][criterion]
    return int(entry["chosen_step"]), float(entry["chosen_target_iou"])


def table(run_dirs: list[str], a: str, b: str) -> str:
    lines = [f"| run | `{a}` step, IoU | `{b}` step, IoU | {b} - {a} |", "|---|---|---|---:|"]
    diffs = []
    for run in run_dirs:
        report = json.loads((Path(run) / "selection.json").read_text())
        (step_a, iou_a), (step_b, iou_b) = pick(report, a), pick(report, b)
        diffs.append(iou_b - iou_a)
        name = "/".join(Path(run).parts[-3:])
        lines.append(f"| {name} | {step_a}, {iou_a:.3f} | {step_b}, {iou_b:.3f} | {diffs[-1]:+.3f} |")
    mean, low, high = t_interval(diffs)
    lines += ["", f"Mean {b} - {a}: **{mean:+.4f}** [{low:+.4f}, {high:+.4f}] (95 % t, n = {len(diffs)})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--a", default="morph_ours", help="the criterion switched from")
    parser.add_argument("--b", default="source_val_iou", help="the criterion switched to")
    args = parser.parse_args()
    print(table(args.runs, args.a, args.b))


if __name__ == "__main__":
    main()
