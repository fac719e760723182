"""Two recipes' source-only runs judged on harder targets: the same shift, k times as far.

A source-only run's weights do not depend on its target; only the checkpoint choice does.
So for each finished run S -> T (synthetic) under RUNS/<recipe>/<pair>/baseline/seedN this
tool builds T moved k times as far from S (domadapt.data.synthetic_shift.farther), scores
every saved checkpoint with the run's label-free target criteria on it, chooses with the
run's criterion, and scores the chosen checkpoint on the harder target's test volume. It
then pairs the two recipes by pair and seed (docs/results/recipe/plan-harder.md).

    python tools/harder_target.py RUNS --reference current --candidate shift --k 2 --k 3
    python tools/harder_target.py RUNS ... --k 1   # the check: repeats each run's own choice
    python tools/harder_target.py --montage harder.png --k 1 --k 2 --k 3   # how they look

``--json FILE`` keeps every run's result and reuses it on the next call.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from checkpoint_replay import checkpoints, eval_context
from label_free_preference import recipe_runs

from domadapt.config import config_from_plain, load_yaml
from domadapt.criteria import with_combined
from domadapt.data import synthetic
from domadapt.data.prepare import prepare_data
from domadapt.data.synthetic_shift import farther
from domadapt.inference import predict_to_array
from domadapt.metrics import segmentation_scores
from domadapt.paired import t_interval
from domadapt.selection import choose
from domadapt.strategies.base import Domains, target_monitor


def on_harder_target(run_dir: Path, k: float) -> dict:
    """The run's checkpoint chosen on, and scored on, its target moved k times as far."""
    cfg = config_from_plain(load_yaml(run_dir / "config.yaml"), stored=True)
    harder = farther(synthetic.get_domain(cfg.source), synthetic.get_domain(cfg.target), k)
    synthetic.SYNTHETIC_DOMAINS.setdefault(harder.name, harder)
    cfg = replace(cfg, target=harder.name)
    data = prepare_data(cfg)
    step, net = _chosen(run_dir, cfg, data)
    recorded = json.loads((run_dir / "metrics.json").read_text())
    return {"target": harder.name, "chosen_step": step, "iou_slice_mean": _test_score(net, cfg, data),
            "recorded_step": recorded["selected_step"],
            "recorded_iou_slice_mean": recorded["target_iou_slice_mean"]}


def _chosen(run_dir: Path, cfg, data) -> tuple[int, torch.nn.Module]:
    """(step, network) the run's criterion picks among its checkpoints on ``data``'s target,
    scored by the run's target criteria on their seeded crops, as the run scored them."""
    domains = Domains(data.source_train, data.source_val, data.target_train, data.target_test)
    monitor = target_monitor(cfg, domains)
    nets, records = {}, []
    with torch.no_grad():
        for step, net in checkpoints(run_dir):
            nets[step] = net
            ctx = eval_context(cfg, net, step, cfg.inference.eval_cpu_bf16)
            records.append({"step": step, **monitor.evaluate(ctx).metrics})
    step = choose(with_combined(records), cfg.selection.criterion)["step"]
    return step, nets[step]


def _test_score(net: torch.nn.Module, cfg, data) -> float:
    """``target_iou_slice_mean`` of ``net`` on the target test volume, predicted as a run does."""
    test, inf = data.target_test_original, cfg.inference
    prob = predict_to_array(net, test.image.image, voxel_size_nm=test.image.voxel_size_nm,
                            model_pixel_nm=cfg.data.pixel_size_nm, norm_stats=test.stats,
                            tile=inf.tile, overlap=inf.overlap, batch_size=inf.batch_size,
                            cpu_bf16=inf.cpu_bf16, tta=inf.tta)
    return segmentation_scores(prob.reshape(test.labels.shape), test.labels,
                               inf.threshold)["iou_slice_mean"]


def table(results: dict, reference: str, candidate: str, k: float, level: float) -> str:
    """One row per pair-seed both recipes finished, then the paired mean and interval."""
    ref, cand = results[reference], results[candidate]
    lines = [f"k = {k:g}", "",
             f"| pair | seed | {reference}: step, IoU (at k = 1) | {candidate}: step, IoU (at k = 1) "
             f"| {candidate} - {reference} |", "|---|---:|---|---|---:|"]
    diffs = []
    for key in sorted(set(ref) & set(cand)):
        a, b = ref[key], cand[key]
        diffs.append(b["iou_slice_mean"] - a["iou_slice_mean"])
        lines.append(f"| {key[0]} | {key[1]} | {_cell(a)} | {_cell(b)} | {diffs[-1]:+.3f} |")
    if diffs:
        mean, low, high = t_interval(diffs, level)
        mean_ref = np.mean([ref[key]["iou_slice_mean"] for key in set(ref) & set(cand)])
        lines += ["", f"{candidate} - {reference}: {mean:+.3f} [{low:+.3f}, {high:+.3f}] "
                      f"({100 * level:.1f} % t-interval, n = {len(diffs)}); "
                      f"{reference} mean {mean_ref:.3f}"]
    return "\n".join(lines)


def _cell(r: dict) -> str:
    return (f"{r['chosen_step']} ({r['recorded_step']}), {r['iou_slice_mean']:.3f} "
            f"({r['recorded_iou_slice_mean']:.3f})")


def montage(path: Path, ks: list[float], side: int = 256) -> None:
    """One slice of each pair's target at each k (rows), same scene per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = synthetic.GRID_PAIRS
    fig, axes = plt.subplots(len(ks), len(pairs), figsize=(2.4 * len(pairs), 2.4 * len(ks)),
                             squeeze=False)
    for col, (source, target) in enumerate(pairs):
        for row, k in enumerate(ks):
            domain = farther(synthetic.get_domain(source), synthetic.get_domain(target), k)
            image, _ = synthetic.render(domain, (1, side, side), seed=1)
            ax = axes[row][col]
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{source} -> {domain.name}", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="?",
                        help="folder holding RUNS/<recipe>/<pair>/baseline/seedN")
    parser.add_argument("--montage", type=Path, help="only draw the targets at each --k here")
    parser.add_argument("--reference", default="current", help="the recipe compared against")
    parser.add_argument("--candidate", default="shift", help="the recipe judged")
    parser.add_argument("--k", type=float, action="append", help="shift factor(s); default 2")
    parser.add_argument("--level", type=float, default=1 - 0.05 / 3, help="interval level")
    parser.add_argument("--json", type=Path, help="keep every result here (and reuse it)")
    args = parser.parse_args()
    if args.montage:
        montage(args.montage, args.k or [1.0, 2.0])
        return
    if args.runs is None:
        parser.error("give RUNS, or --montage PATH")
    torch.set_num_threads(1)
    kept = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    for k in args.k or [2.0]:
        results = {}
        for recipe in (args.reference, args.candidate):
            results[recipe] = {}
            for key, folder in recipe_runs(args.runs, recipe).items():
                name = f"{k:g}|{folder}"
                if name not in kept:
                    kept[name] = on_harder_target(folder, k)
                    if args.json:
                        args.json.write_text(json.dumps(kept, indent=1))
                results[recipe][key] = kept[name]
        print(table(results, args.reference, args.candidate, k, args.level), "\n", flush=True)


if __name__ == "__main__":
    main()
