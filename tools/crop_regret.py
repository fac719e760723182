"""Does scoring crops instead of whole slices change which checkpoint is chosen?

For a finished run whose target has labels: re-scores every evaluated
checkpoint with the target criteria on the run's sampled target slices, once on
whole slices (``selection.target_crop: 0``, the old behaviour) and once on the
run's crops, and prints each criterion's chosen step, the chosen checkpoint's
target IoU and the regret under both (target IoU from ``domadapt select``'s
scoring of up to ``--max-slices`` evenly spaced target test slices).

Usage::

    python tools/crop_regret.py RUN_DIR [--max-slices 10] [--crops 0,512,1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from checkpoint_replay import checkpoints, eval_context, stored_run

from domadapt.selection import load_history, regret_table, score_checkpoints
from domadapt.strategies.base import fit_priors
from domadapt.training.target_monitor import TargetCriteriaMonitor

#: The target criteria the monitor computes, with their directions.
CRITERIA = {"morph_paper": "min", "morph_ours": "min", "target_consistency": "max",
            "target_entropy": "min", "target_im": "min"}


def criteria_per_checkpoint(run_dir: Path, crop: int) -> list[dict]:
    """The target criteria of every evaluated checkpoint, recomputed with crops of ``crop`` px."""
    cfg, domains = stored_run(run_dir)
    volume = getattr(domains, cfg.selection.target_split)
    monitor = TargetCriteriaMonitor(volume, fit_priors(cfg, domains.source_train),
                                    cfg.selection.target_slices, cfg.seed, cfg.inference.threshold,
                                    crop)
    return [{"step": step, **monitor.evaluate(eval_context(cfg, net, step, cfg.inference.cpu_bf16)).metrics}
            for step, net in checkpoints(run_dir)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-slices", type=int, default=10)
    parser.add_argument("--crops", default="0,512", help="crop sides to compare (0: whole slices)")
    args = parser.parse_args()
    scores = score_checkpoints(load_history(args.run_dir), args.max_slices, progress=False)
    target_iou = {step: s["target_iou"] for step, s in scores.items()}
    records = {int(c): criteria_per_checkpoint(args.run_dir, int(c)) for c in args.crops.split(",")}
    tables = {c: regret_table(r, target_iou, CRITERIA) for c, r in records.items()}
    name = {c: "whole slices" if c == 0 else f"crops of {c} px" for c in records}
    print(f"{args.run_dir}: best target IoU {max(target_iou.values()):.3f} at step "
          f"{max(target_iou, key=target_iou.get)}\n")
    print("| criterion | " + " | ".join(f"{name[c]}: step, IoU, regret" for c in tables) + " |")
    print("|---" * (len(tables) + 1) + "|")
    for criterion in CRITERIA:
        cells = [_cell(table.get(criterion)) for table in tables.values()]
        print(f"| {criterion} | " + " | ".join(cells) + " |")
    print("\n| step | target IoU | " + " | ".join(f"morph_paper ({name[c]})" for c in records) + " |")
    print("|---" * (len(records) + 2) + "|")
    for i, step in enumerate(sorted(target_iou)):
        values = [f"{records[c][i]['morph_paper']:.4f}" for c in records]
        print(f"| {step} | {target_iou[step]:.3f} | " + " | ".join(values) + " |")


def _cell(row: dict | None) -> str:
    if row is None:
        return "n/a"
    return f"{row['chosen_step']}, {row['chosen_target_iou']:.3f}, {row['regret']:.3f}"


if __name__ == "__main__":
    main()
