"""Finished runs' final predictions again, without and with test-time augmentation, paired.

    DOMADAPT_DATA=... python tools/tta_replay.py RUN_DIR [RUN_DIR ...] --out OUT \\
        [--tta d4] [--threads 1]

A RUN_DIR is a ``domadapt run`` folder or a benchmark's ``runs/<pair>/<method>/seedN``. For
each, the checkpoint the run selected is loaded and its whole target test volume predicted
as the run's final prediction does it (the run's tile, overlap and precision, written as
uint8 and scored at the run's threshold): once with ``inference.tta: none`` and once with
``--tta``. No training runs, so the pair differs only in the views. Each prediction is
written under OUT and OUT/tta.csv gets one row per run (appended; a run already in it is
skipped, so a killed replay resumes): both ``target_iou_slice_mean`` values and both
prediction times. ``python tools/tta_replay.py --table OUT`` prints the paired table.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import torch

from domadapt.config import config_from_plain, load_yaml
from domadapt.data.prepare import prepare_data
from domadapt.paired import t_interval
from domadapt.pipeline import score_target
from domadapt.selection import load_history, model_at_step
from domadapt.strategies.base import FitResult
from domadapt.timing import PhaseTimer
from domadapt.tta import TTA_MODES

FIELDS = ["run", "pair", "method", "seed", "tta", "iou_none", "iou_tta", "predict_s_none",
          "predict_s_tta"]


def replay(run: Path, out: Path, mode: str, data_cache: dict) -> dict:
    """Predict ``run``'s target test volume from its selected checkpoint without and with
    ``mode``; the row of tta.csv."""
    cfg = config_from_plain(load_yaml(run / "config.yaml"), stored=True)
    metrics = json.loads((run / "metrics.json").read_text())
    history = load_history(run)
    step = metrics["selected_step"]
    key = (cfg.source, cfg.target, cfg.data.max_slices)
    if key not in data_cache:
        data_cache.clear()  # one pair's volumes at a time
        data_cache[key] = prepare_data(cfg)
    test = data_cache[key].target_test_original
    fit = FitResult(model_at_step(history, step), history.stage_dir / f"step-{step:07d}.pt",
                    metrics["selection_criterion"], step, metrics["selected_epoch"], [])
    row = {"run": str(run), "pair": f"{cfg.source}->{cfg.target}", "method": cfg.method,
           "seed": cfg.seed, "tta": mode}
    for name, views in (("none", "none"), ("tta", mode)):
        timer = PhaseTimer()
        scoped = replace(cfg, inference=replace(cfg.inference, tta=views))
        dst = out / cfg.source / cfg.target / cfg.method / f"seed{cfg.seed}" / views
        scores = score_target(scoped, fit, test, dst, torch.device("cpu"), False, timer)
        row[f"iou_{name}"] = scores["iou_slice_mean"]
        row[f"predict_s_{name}"] = round(timer.seconds["predict_target_test"], 2)
    return row


def table(out: Path) -> str:
    """Markdown: per pair, mean IoU without and with views and the paired difference
    (95 % t-interval over the runs), and the prediction-time ratio."""
    with open(out / "tta.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["| pair | n | none | tta | paired diff [95 % t] | prediction time ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    pairs = sorted({r["pair"] for r in rows})
    for pair in pairs + ["all"]:
        group = [r for r in rows if pair in ("all", r["pair"])]
        none = [float(r["iou_none"]) for r in group]
        tta = [float(r["iou_tta"]) for r in group]
        mean, low, high = t_interval([b - a for a, b in zip(none, tta)])
        ratio = sum(float(r["predict_s_tta"]) for r in group) / sum(
            float(r["predict_s_none"]) for r in group)
        lines.append(f"| {pair} | {len(group)} | {sum(none) / len(none):.3f} | "
                     f"{sum(tta) / len(tta):.3f} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] | "
                     f"{ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finished run folders")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tta", default="d4", choices=[m for m in TTA_MODES if m != "none"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print OUT's paired table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ledger = args.out / "tta.csv"
    done = set()
    if ledger.is_file():
        with open(ledger, newline="") as handle:
            done = {(r["run"], r["tta"]) for r in csv.DictReader(handle)}
    data_cache: dict = {}
    for run in args.runs:
        if (str(run), args.tta) in done:
            continue
        row = replay(run, args.out, args.tta, data_cache)
        new = not ledger.is_file()
        with open(ledger, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(f"{row['pair']} {row['method']} seed {row['seed']}: {row['iou_none']:.4f} -> "
              f"{row['iou_tta']:.4f} ({row['predict_s_none']} s -> {row['predict_s_tta']} s)",
              flush=True)


if __name__ == "__main__":
    main()
