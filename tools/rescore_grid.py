"""A finished benchmark grid's tables again, as if its runs had chosen by another criterion.

    DOMADAPT_DATA=... python tools/rescore_grid.py configs/benchmarks/real.yaml \\
        --runs BENCH_OUT --out SHADOW_OUT [--criterion rank_morph_consistency] [--threads 2]

Every run's evaluation history is kept, so a new default criterion's choice can be replayed
without training. For each grid run this writes a shadow folder under SHADOW_OUT (symlinks to
the run's files) whose metrics.json holds the scores of the checkpoint the criterion picks
(in-domain runs: ``selection.in_domain_criterion``, as the package chooses them). Where the
pick moved, the whole target test volume is predicted again and the trust panel recomputed;
otherwise the run's own prediction and scores stand. The benchmark's own collector then
writes results.csv, summary.md and the figures of SHADOW_OUT.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from domadapt.benchmark.collect import collect_rows, write_outputs
from domadapt.benchmark.grid import grid, load_benchmark_config, run_config
from domadapt.config import RunConfig, SelectionConfig, config_from_plain, load_yaml
from domadapt.data.prepare import prepare_data
from domadapt.pipeline import run_dir_for, run_trust_panel, score_target
from domadapt.selection import choose, load_history, model_at_step
from domadapt.strategies.base import FitResult


class _Stage:
    """What the trust panel reads of a fit's last stage: its evaluation records."""

    def __init__(self, history: list[dict]) -> None:
        self.history = history


def shadow_run(src: Path, dst: Path, criterion: str, data_cache: dict) -> str:
    """Write ``dst`` for run ``src``; returns what happened to its pick."""
    metrics = json.loads((src / "metrics.json").read_text())
    history = load_history(src)
    pick, before = choose(history.records, criterion), metrics["selected_step"]
    moved = pick["step"] != before
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        keep_own = entry.name == "metrics.json" or (moved and entry.name == "predictions")
        if not keep_own and not (dst / entry.name).is_symlink():
            os.symlink(entry, dst / entry.name)
    metrics.update(selection_criterion=criterion, rescored_from=str(src))
    if moved:
        cfg = config_from_plain(load_yaml(src / "config.yaml"), stored=True)
        metrics.update(_rescore(cfg, history, pick, dst, criterion, data_cache))
    (dst / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return f"moved {before} -> {pick['step']}" if moved else "unchanged"


def _rescore(cfg: RunConfig, history, pick: dict, dst: Path, criterion: str, data_cache: dict) -> dict:
    key = (cfg.source, cfg.target, cfg.data.max_slices)
    if key not in data_cache:
        data_cache[key] = prepare_data(cfg)
    data = data_cache[key]
    net = model_at_step(history, pick["step"])
    fit = FitResult(net, history.stage_dir / f"step-{pick['step']:07d}.pt", criterion, pick["step"],
                    pick["epoch"], [_Stage(history.records)])
    scores = score_target(cfg, fit, data.target_test_original, dst, torch.device("cpu"), False)
    trust = run_trust_panel(cfg, fit, data, dst)
    return {"target_iou": scores["iou"], "target_dice": scores["dice"],
            "target_iou_slice_mean": scores["iou_slice_mean"], "target_scores": scores,
            "selected_step": pick["step"], "selected_epoch": pick["epoch"],
            "selected_checkpoint": str(fit.checkpoint), "source_val_iou": pick.get("source_val_iou"),
            "trust": trust, "trust_warnings": len(trust["warnings"]),
            "target_predicted_fraction": trust["target"]["foreground_fraction"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the grid's benchmark YAML")
    parser.add_argument("--runs", required=True, help="the finished grid's --out")
    parser.add_argument("--out", required=True, help="where the shadow grid and its tables go")
    parser.add_argument("--criterion", default=SelectionConfig().criterion)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source_bc = load_benchmark_config(args.config, out=args.runs)
    shadow_bc = load_benchmark_config(args.config, out=args.out)
    in_domain = SelectionConfig().in_domain_criterion or args.criterion
    data_cache: dict = {}
    for phase in grid(source_bc):
        for spec in phase:
            dst = run_dir_for(run_config(shadow_bc, spec))
            if (dst / "metrics.json").is_file():
                continue
            criterion = in_domain if spec.source == spec.target else args.criterion
            what = shadow_run(run_dir_for(run_config(source_bc, spec)), dst, criterion, data_cache)
            print(f"{spec.source}->{spec.target} {spec.method} seed {spec.seed}: {what}", flush=True)
    written = write_outputs(shadow_bc, collect_rows(shadow_bc))
    print("wrote", ", ".join(sorted(str(p) for p in written.values())))


if __name__ == "__main__":
    main()
