"""Do bfloat16 evaluations during training choose the same checkpoints as float32 ones?

For finished runs whose target has labels: re-scores every saved checkpoint with the
run's own monitors (label-free target criteria, source validation), once in float32 and
once in bfloat16 (``inference.eval_cpu_bf16``), timing each, and scores every checkpoint
on up to ``--max-slices`` target test slices for the regret. Prints one row per run and
the two tests of the rule in docs/results/performance.md ("Rule for bfloat16 evaluations
during training"); ``--json`` keeps every number.

Usage::

    python tools/eval_bf16.py RUN_DIR [RUN_DIR ...] [--max-slices 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from checkpoint_replay import checkpoints, eval_context, stored_run

from domadapt.criteria import directions
from domadapt.models.inference_copy import native_cpu_bf16
from domadapt.selection import load_history, regret_table, score_checkpoints
from domadapt.strategies.base import build_monitors

DEFAULT = "morph_ours"


def evaluate(run_dir: Path) -> dict[bool, tuple[list[dict], float]]:
    """Every checkpoint's monitor metrics in float32 and bfloat16 (interleaved per checkpoint,
    so both see the same machine load), and the seconds each precision took."""
    cfg, domains = stored_run(run_dir)
    monitors = build_monitors(cfg, domains)
    out: dict[bool, tuple[list[dict], float]] = {False: ([], 0.0), True: ([], 0.0)}
    for step, net in checkpoints(run_dir):
        for bf16 in (False, True):
            ctx = eval_context(cfg, net, step, bf16)
            row, start = {"step": step}, time.perf_counter()
            with torch.no_grad():
                for monitor in monitors:
                    row.update(monitor.evaluate(ctx).metrics)
            records, spent = out[bf16]
            records.append(row)
            out[bf16] = (records, spent + time.perf_counter() - start)
    return out


def compare(run_dir: Path, max_slices: int) -> dict:
    history = load_history(run_dir)
    both = evaluate(run_dir)
    (fp32, t32), (bf16, t16) = both[False], both[True]
    recorded = {r["step"]: r for r in history.records}
    scores = score_checkpoints(history, max_slices, progress=False)
    iou = {step: s["target_iou"] for step, s in scores.items()}
    crit = {k: v for k, v in directions().items() if all(np.isfinite(r.get(k, np.nan)) for r in fp32)}
    tables = {"fp32": regret_table(fp32, iou, crit), "bf16": regret_table(bf16, iou, crit)}
    return {"run": str(run_dir), "eval_s_fp32": t32, "eval_s_bf16": t16, "target_iou": iou,
            "fp32": fp32, "bf16": bf16, "tables": tables,
            "max_abs_change": {k: max(abs(a[k] - b[k]) for a, b in zip(fp32, bf16)) for k in crit},
            "max_abs_vs_recorded": {k: max(abs(a[k] - recorded[a["step"]][k]) for a in fp32)
                                    for k in crit if all(k in r for r in recorded.values())}}


def report(results: list[dict]) -> str:
    lines = ["| run | eval s fp32 | eval s bf16 | morph_ours fp32: step, IoU | bf16: step, IoU | "
             "criteria with the same pick |", "|---|---:|---:|---|---|---|"]
    diffs = []
    for r in results:
        if DEFAULT not in r["tables"]["fp32"]:
            lines.append(f"| {r['run']} | no `{DEFAULT}` scores (its prior could not be fitted) |||||")
            continue
        a, b = r["tables"]["fp32"][DEFAULT], r["tables"]["bf16"][DEFAULT]
        diffs.append(b["chosen_target_iou"] - a["chosen_target_iou"])
        same = sum(r["tables"]["fp32"][k]["chosen_step"] == r["tables"]["bf16"][k]["chosen_step"]
                   for k in r["tables"]["fp32"])
        lines.append(f"| {Path(r['run']).parent.parent.name}/{Path(r['run']).name} | "
                     f"{r['eval_s_fp32']:.1f} | {r['eval_s_bf16']:.1f} | {a['chosen_step']}, "
                     f"{a['chosen_target_iou']:.3f} | {b['chosen_step']}, {b['chosen_target_iou']:.3f} | "
                     f"{same} of {len(r['tables']['fp32'])} |")
    t32 = sum(r["eval_s_fp32"] for r in results)
    t16 = sum(r["eval_s_bf16"] for r in results)
    worst = {}
    for r in results:
        for k, v in r["max_abs_change"].items():
            worst[k] = max(worst.get(k, 0.0), v)
    quality = np.mean(diffs) if diffs else float("nan")
    lines += ["", f"Native bfloat16 on this CPU: {native_cpu_bf16()}.",
              f"1. Quality: mean IoU(bf16 pick) - IoU(fp32 pick) of `{DEFAULT}` = "
              f"{quality:+.4f} (n = {len(diffs)}); the rule needs >= -0.005: "
              f"{'holds' if quality >= -0.005 else 'fails'}.",
              f"2. Cost: evaluation time {t32:.1f} s -> {t16:.1f} s ({1 - t16 / t32:.0%} less); "
              f"the rule needs >= 30 %: {'holds' if 1 - t16 / t32 >= 0.30 else 'fails'}.",
              "", "Largest change of a criterion value (bf16 - fp32, any checkpoint): "
              + ", ".join(f"`{k}` {v:.2e}" for k, v in sorted(worst.items()))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--max-slices", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [compare(run, args.max_slices) for run in args.run_dirs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    print(report(results))


if __name__ == "__main__":
    main()
