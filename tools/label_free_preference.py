"""Which of two recipes the label-free criterion prefers, pair-seed by pair-seed.

    python tools/label_free_preference.py RUNS_ROOT --reference current --candidate shift

Runs are read from RUNS_ROOT/<recipe>/<pair>/baseline/seed*/ (one --out per recipe). For
each pair-seed both runs' chosen checkpoints are compared on the parts of the criterion
they were chosen by (for `rank_morph_consistency`: `morph_ours`, `target_consistency`),
as `--method auto` compares methods: both runs score the same seeded target crops. The
candidate is preferred when it is better on every part, the reference when it is, and
otherwise the pair-seed is split (docs/results/recipe/plan-label-free.md). Target IoU,
wall times and trust warnings are printed beside it; they decide nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from domadapt.auto import candidate
from domadapt.criteria import REGISTRY, directions
from domadapt.markdown import table
from domadapt.paired import t_interval

METRIC = "target_iou_slice_mean"


def preference(reference: dict, other: dict, parts: tuple[str, ...]) -> str:
    """'candidate', 'reference' or 'split': who is better on every part (ties are splits)."""
    sign = {p: 1.0 if directions()[p] == "min" else -1.0 for p in parts}
    better = [sign[p] * (other[p] - reference[p]) < 0 for p in parts]
    worse = [sign[p] * (other[p] - reference[p]) > 0 for p in parts]
    return "candidate" if all(better) else "reference" if all(worse) else "split"


def recipe_runs(root: Path, recipe: str) -> dict[tuple[str, int], Path]:
    """(pair, seed) -> one recipe's finished source-only run, ROOT/<recipe>/<pair>/baseline/seedN."""
    found = {}
    for path in sorted((root / recipe).glob("*/baseline/seed*/metrics.json")):
        folder = path.parent
        found[(folder.parts[-3], int(folder.name.removeprefix("seed")))] = folder
    return found


def load(root: Path, recipe: str) -> dict[tuple[str, int], dict]:
    return {key: candidate(recipe, folder, json.loads((folder / "metrics.json").read_text()))
            for key, folder in recipe_runs(root, recipe).items()}


def report(root: Path, reference: str, other: str) -> str:
    ref, cand = load(root, reference), load(root, other)
    keys = sorted(set(ref) & set(cand))
    if not keys:
        raise SystemExit(f"No pair-seed has a finished run under both {reference} and {other} in {root}.")
    parts = REGISTRY[ref[keys[0]]["criterion"]].parts or (ref[keys[0]]["criterion"],)
    rows, votes, diffs = [], [], []
    for key in keys:
        a, b = ref[key], cand[key]
        a_parts, b_parts = _scores(a), _scores(b)
        vote = preference(a_parts, b_parts, parts)
        votes.append(vote)
        diffs.append(b[METRIC] - a[METRIC])
        rows.append([key[0], key[1], *(f"{a_parts[p]:.4f} / {b_parts[p]:.4f}" for p in parts),
                     {"candidate": other, "reference": reference}.get(vote, "split"),
                     f"{a[METRIC]:.3f} / {b[METRIC]:.3f}", f"{a['step']} / {b['step']}",
                     f"{a['wall_time_s'] / 60:.1f} / {b['wall_time_s'] / 60:.1f}",
                     _warnings(a) + " / " + _warnings(b)])
    heads = ["pair", "seed", *(f"{p} ({reference} / {other})" for p in parts), "preferred",
             f"{METRIC} (report only)", "chosen step", "wall min", "trust warnings"]
    out = [table(heads, rows, "lr" + "r" * len(parts) + "lrrrl")]
    mean, low, high = t_interval(np.array(diffs))
    walls = [np.mean([runs[k]["wall_time_s"] for k in keys]) for runs in (ref, cand)]
    out.append(f"\n{other} preferred on {votes.count('candidate')} of {len(keys)} pair-seeds, "
               f"{reference} on {votes.count('reference')}, split {votes.count('split')}.")
    out.append(f"Wall-time ratio r = {walls[1] / walls[0]:.3f} ({walls[1]:.0f} s / {walls[0]:.0f} s).")
    out.append(f"Report only: {METRIC} {other} - {reference} = {mean:+.3f} [{low:+.3f}, {high:+.3f}] "
               f"(95 % t, n = {len(keys)}).")
    return "\n".join(out)


def _scores(run: dict) -> dict[str, float]:
    """The chosen checkpoint's values that compare across runs: a combined criterion's parts,
    or a single criterion's own value."""
    return run["parts"] or {run["criterion"]: run["value"]}


def _warnings(run: dict) -> str:
    """The number of trust warnings the run's own report gave (pipeline.py counts them)."""
    return str(run.get("trust_warnings") or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding one --out folder per recipe")
    parser.add_argument("--reference", default="current", help="the recipe compared against")
    parser.add_argument("--candidate", default="shift", help="the recipe under test")
    args = parser.parse_args()
    print(report(args.root, args.reference, args.candidate))


if __name__ == "__main__":
    main()
