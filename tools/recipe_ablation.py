"""The training-recipe ablation's tables and the decision of docs/results/recipe/plan.md.

    python tools/recipe_ablation.py RUNS_ROOT [--reference current] [--decide-on synth-]

Runs are read from RUNS_ROOT/<recipe>/<pair>/baseline/seed*/metrics.json (one --out per
recipe). Prints, in Markdown: each recipe x pair (target IoU mean +- std, n, the chosen
checkpoint's source-validation IoU, wall time); each candidate's paired difference to
the reference recipe over the pairs the decision is taken on (same pair and seed, 95 %
t-interval); and the rule's verdict: the candidate with the highest mean paired
difference, if it is > 0 and its mean source-validation IoU is at most 0.02 below the
reference's, among candidates with every run the reference has on those pairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from domadapt.markdown import table
from domadapt.paired import t_interval

METRIC = "target_iou_slice_mean"
SOURCE_VAL = "source_val_iou"
MAX_SOURCE_DROP = 0.02


def load(root: Path) -> dict[tuple[str, str, int], dict]:
    runs = {}
    for path in sorted(root.glob("*/*/baseline/seed*/metrics.json")):
        recipe, pair = path.parts[-5], path.parts[-4]
        runs[(recipe, pair, int(path.parent.name.removeprefix("seed")))] = json.loads(path.read_text())
    return runs


def per_cell(runs: dict) -> str:
    rows = []
    for recipe, pair in sorted({k[:2] for k in runs}, key=lambda k: (k[1], k[0])):
        ms = [runs[k] for k in sorted(runs) if k[:2] == (recipe, pair)]
        iou = np.array([m[METRIC] for m in ms])
        std = iou.std(ddof=1) if len(iou) > 1 else float("nan")
        rows.append([pair, recipe, f"{iou.mean():.3f} +- {std:.3f}",
                     len(ms), " / ".join(f"{v:.3f}" for v in iou),
                     f"{np.mean([m[SOURCE_VAL] for m in ms]):.3f}",
                     " / ".join(str(m["selected_step"]) for m in ms),
                     f"{np.mean([m['wall_time_s'] for m in ms]) / 60:.1f}"])
    return table(["pair", "recipe", f"{METRIC} mean +- std", "n", "per seed", "source-val IoU (chosen)",
                  "chosen step", "wall min"], rows, "llrrrrrr")


def paired(runs: dict, reference: str, prefix: str) -> tuple[str, list[dict]]:
    ref_keys = [k for k in runs if k[0] == reference and k[1].startswith(prefix)]
    results = []
    for recipe in sorted({k[0] for k in runs} - {reference}):
        matched = [k for k in ref_keys if (recipe, *k[1:]) in runs]
        if not matched:
            continue
        diffs = [runs[(recipe, *k[1:])][METRIC] - runs[k][METRIC] for k in matched]
        source = [runs[(recipe, *k[1:])][SOURCE_VAL] - runs[k][SOURCE_VAL] for k in matched]
        mean, low, high = t_interval(diffs)
        results.append({"recipe": recipe, "n": len(matched), "complete": len(matched) == len(ref_keys),
                        "mean": mean, "low": low, "high": high, "source_drop": -float(np.mean(source))})
    rows = [[r["recipe"], f"{r['n']} of {len(ref_keys)}",
             f"{r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]", f"{-r['source_drop']:+.3f}"]
            for r in results]
    return table(["candidate", "paired runs", f"{METRIC} vs {reference} [95 % t]",
                  "source-val IoU vs reference"], rows, "lrrr"), results


def decide(results: list[dict], reference: str) -> str:
    eligible = [r for r in results if r["complete"]]
    if not eligible:
        return f"No candidate has all its runs yet: `{reference}` stays."
    best = max(eligible, key=lambda r: r["mean"])
    if best["mean"] <= 0:
        return (f"Highest mean paired difference: `{best['recipe']}` {best['mean']:+.3f} (<= 0): "
                f"`{reference}` stays.")
    if best["source_drop"] > MAX_SOURCE_DROP:
        return (f"Highest mean paired difference: `{best['recipe']}` {best['mean']:+.3f}, but its "
                f"source-validation IoU is {best['source_drop']:.3f} below the reference's (limit "
                f"{MAX_SOURCE_DROP}): `{reference}` stays.")
    return f"The rule picks `{best['recipe']}` ({best['mean']:+.3f} mean paired difference)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--reference", default="current")
    parser.add_argument("--decide-on", default="synth-", help="prefix of the pairs that decide")
    args = parser.parse_args()
    runs = load(args.root)
    if not runs:
        raise SystemExit(f"No finished runs under {args.root}/<recipe>/<pair>/baseline/.")
    text, results = paired(runs, args.reference, args.decide_on)
    print(per_cell(runs), "", f"Paired with `{args.reference}` on the pairs starting with "
          f"`{args.decide_on}`:", "", text, "", decide(results, args.reference), sep="\n")


if __name__ == "__main__":
    main()
