"""``domadapt run``: one adaptation run from config to metrics.json.

The run folder is the single place a run writes to::

    <out>/<source>-to-<target>/<method>/seed<N>/
      config.yaml  tb/  checkpoints/  predictions/  metrics.json  report.md

``metrics.json`` is written last and atomically: its presence means the run
finished. Target labels enter only in :func:`score_target`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from domadapt.config import (
    RunConfig,
    config_differences,
    dataset_refs,
    load_yaml,
    record,
    save_config,
    saved_record,
)
from domadapt.data.atomic import atomic_path
from domadapt.data.prepare import PreparedData, TargetTest, prepare_data
from domadapt.data.transforms import NORMALIZATION
from domadapt.errors import ConfigError, DataError, DomadaptError, RunFolderError
from domadapt.inference import predict_to_tif
from domadapt.metrics import segmentation_scores
from domadapt.models.spec import unet_spec
from domadapt.run_lock import LOCK_NAME, run_folder_lock
from domadapt.strategies import get_strategy
from domadapt.strategies.base import Domains, FitResult, StrategyContext
from domadapt.threads import resolve_threads
from domadapt.timing import PhaseTimer
from domadapt.training.distributed import DistInfo, barrier, init_from_env, shutdown
from domadapt.training.trainer import Trainer

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
#: Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = ("out", "train.threads", "data.data_root")


def dataset_label(ref: str) -> str:
    """A folder-safe name for a dataset reference (registered name or path)."""
    if "," in ref:  # several sources
        return "+".join(dataset_label(r) for r in dataset_refs(ref))
    name = Path(ref).stem if ("/" in ref or os.sep in ref or "." in ref) else ref
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def run_dir_for(cfg: RunConfig) -> Path:
    pair = f"{dataset_label(cfg.source)}-to-{dataset_label(cfg.target)}"
    return Path(cfg.out).expanduser().resolve() / pair / cfg.method / f"seed{cfg.seed}"


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available.")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def _run_files(run_dir: Path) -> list[Path]:
    """What a run wrote into its folder (the lock of a live run is not a run's file)."""
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir() if p.name != LOCK_NAME]


def refuse_existing_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run folder unless asked to resume or overwrite it."""
    if _run_files(run_dir) and not (resume or overwrite):
        raise RunFolderError(
            f"Run folder {run_dir} already exists; pass --resume to continue it "
            "or --overwrite to start again."
        )


def refuse_changed_settings(cfg: RunConfig, run_dir: Path, resume: bool,
                            section: str | None = None) -> None:
    """A resumed run keeps the settings it was started with: a change is refused, by key.

    Weights already trained cannot follow a new learning rate or width, so
    accepting the change would make config.yaml a false record of the run.
    """
    saved = run_dir / CONFIG_FILE
    if not resume or not saved.is_file():
        return
    old, new = saved_record(load_yaml(saved), section), record(cfg, section)
    if new["pretrain"]["weights"] is None:  # recorded by the run's own pretrain stage
        new["pretrain"]["weights"] = old.get("pretrain", {}).get("weights")
    changed = [k for k in config_differences(old, new) if k not in RESUMABLE_CHANGES]
    if changed:
        shown = ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else "")
        raise RunFolderError(
            f"--resume with settings that differ from {saved} ({shown}); resume with the "
            "original settings, or pass --overwrite to start again with the new ones."
        )


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create (or empty, with ``overwrite``) the run folder; a resumed run is unfinished again."""
    refuse_existing_run_dir(run_dir, resume, overwrite)
    if overwrite:
        for path in _run_files(run_dir):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)


def checkpoint_extra(cfg: RunConfig) -> dict:
    """What every checkpoint stores besides weights, so predict needs nothing else."""
    return {
        "config": cfg.to_dict(),
        "model_spec": unet_spec(cfg.model),
        "pixel_size_nm": cfg.data.pixel_size_nm,
        "normalization": dict(NORMALIZATION),
    }


def trainer_settings(cfg: RunConfig) -> dict:
    """The Trainer arguments a run's config decides, so every trainer of a run (training,
    fine-tuning) computes and evaluates the same way."""
    return {"amp": cfg.train.amp, "tile": cfg.inference.tile, "overlap": cfg.inference.overlap,
            "cpu_bf16": cfg.inference.cpu_bf16 or cfg.inference.eval_cpu_bf16,
            "train_cpu_bf16": cfg.train.cpu_bf16, "channels_last": cfg.train.channels_last}


def run(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True) -> dict:
    """Train, choose a checkpoint label-free, predict the target test volume, score it."""
    start = time.perf_counter()
    device = resolve_device(cfg.train.device)
    if device.type == "cpu" or cfg.train.threads > 0:
        torch.set_num_threads(resolve_threads(cfg.train.threads))
    dist = init_from_env(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    try:
        if not dist.is_main:
            return _run(cfg, device, dist, resume, overwrite, progress, start)
        get_strategy(cfg.method, cfg.strategy)  # an unknown method is refused before the folder is locked
        with run_folder_lock(run_dir_for(cfg)):
            return _run(cfg, device, dist, resume, overwrite, progress, start)
    finally:
        shutdown(dist)


def _run(cfg, device, dist: DistInfo, resume, overwrite, progress, start) -> dict:
    run_dir = run_dir_for(cfg)
    strategy = get_strategy(cfg.method, cfg.strategy)
    if dist.is_main:
        refuse_existing_run_dir(run_dir, resume, overwrite)  # before any slow work
        refuse_changed_settings(cfg, run_dir, resume, strategy.options)
    timer = PhaseTimer()
    with timer.phase("prepare_data"):
        data = prepare_data(cfg)  # bad data fails here, before the run folder is touched
    _refuse_unsupported_criterion(cfg, data)
    if dist.is_main:
        prepare_run_dir(run_dir, resume, overwrite)
        if not (run_dir / CONFIG_FILE).is_file():  # a resumed run keeps its record
            save_config(cfg, run_dir / CONFIG_FILE)
    barrier(dist)
    domains = Domains(data.source_train, data.source_val, data.target_train, data.target_test)
    trainer = Trainer(run_dir, device, cfg.seed, resume=resume, extra=checkpoint_extra(cfg),
                      progress=progress, dist=dist, timer=timer, **trainer_settings(cfg))
    try:
        if cfg.pretrain.dataset and not cfg.pretrain.weights:
            cfg = _pretrain(cfg, trainer, run_dir, dist)
        fit = strategy.fit(domains, StrategyContext(cfg, trainer, device, run_dir))
    except DomadaptError:
        _remove_if_untrained(run_dir, resume, dist)
        raise
    if not dist.is_main:
        return {}
    scores = score_target(cfg, fit, data.target_test_original, run_dir, device, progress, timer)
    metrics = _metrics(cfg, fit, scores, device, time.perf_counter() - start, dist.world_size)
    with timer.phase("trust_panel"):
        metrics["trust"] = run_trust_panel(cfg, fit, data, run_dir)
    metrics["trust_warnings"] = len(metrics["trust"]["warnings"])
    metrics["target_predicted_fraction"] = metrics["trust"]["target"]["foreground_fraction"]
    metrics["timings_s"] = timer.rounded()
    _write_outputs(run_dir, metrics, fit)
    return metrics


#: Target test slices the trust panel reads at most (evenly spaced), so huge volumes stay cheap.
TRUST_SLICES = 32


def run_trust_panel(cfg: RunConfig, fit: FitResult, data: PreparedData, run_dir: Path) -> dict:
    """The label-free trust panel of the written target prediction (:mod:`domadapt.trust`)."""
    import tifffile

    from domadapt.trust import trust_panel

    path = run_dir / "predictions" / "target_test_prob.tif"
    with tifffile.TiffFile(path) as tif:
        pages = np.unique(np.linspace(0, len(tif.pages) - 1, min(TRUST_SLICES, len(tif.pages)))
                          .astype(int))
        prediction = np.stack([tif.pages[int(i)].asarray() for i in pages])
    test = data.target_test_original.image
    return trust_panel(prediction, cfg.inference.threshold, tuple(test.voxel_size_nm[1:]),
                       data.source_train.mask, cfg.data.pixel_size_nm, chosen_record(fit))


def chosen_record(fit: FitResult) -> dict:
    """The final stage's evaluation record of the chosen checkpoint ({} if none matches)."""
    return next((r for r in fit.stages[-1].history if r["step"] == fit.selected_step), {})


def _refuse_unsupported_criterion(cfg: RunConfig, data: PreparedData) -> None:
    """A source too thin to hold out validation slices cannot serve a source_val criterion."""
    if data.source_val is None and cfg.selection.criterion.startswith("source_val"):
        depth = data.source_train.shape[0]
        raise DataError(
            f"The source has {depth} z-slice(s), too few to hold out validation slices "
            f"(data.source_val_fraction), which selection.criterion "
            f"'{cfg.selection.criterion}' needs; give a source with more slices or choose a "
            "target criterion, e.g. --set selection.criterion=target_consistency."
        )


def _pretrain(cfg: RunConfig, trainer: Trainer, run_dir: Path, dist: DistInfo) -> RunConfig:
    """Stage ``pretrain``; the resolved config then records the weights every net starts from."""
    from domadapt.strategies.pretrain import pretrain

    cfg = pretrain(cfg, trainer)
    trainer.extra["config"] = cfg.to_dict()
    if dist.is_main:
        save_config(cfg, run_dir / CONFIG_FILE)
    return cfg


def _remove_if_untrained(run_dir: Path, resume: bool, dist: DistInfo) -> None:
    """A configuration refused before the first checkpoint leaves no run folder behind."""
    if dist.is_main and not resume and not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def score_target(cfg: RunConfig, fit: FitResult, test: TargetTest, run_dir: Path,
                 device: torch.device, progress: bool, timer: PhaseTimer | None = None) -> dict:
    """Predict the target test volume on its own grid; score it if labels exist."""
    timer = timer or PhaseTimer()
    with timer.phase("predict_target_test"):
        out = _predict_target_test(cfg, fit, test, run_dir, device, progress)
    if test.labels is None:
        return {}
    import tifffile

    with timer.phase("score_target_test"):
        prob = tifffile.imread(out)
        return segmentation_scores(prob.reshape(test.labels.shape), test.labels,
                                   cfg.inference.threshold)


def _predict_target_test(cfg: RunConfig, fit: FitResult, test: TargetTest, run_dir: Path,
                         device: torch.device, progress: bool) -> Path:
    inf = cfg.inference
    return predict_to_tif(
        fit.model, test.image.image, run_dir / "predictions" / "target_test_prob.tif",
        voxel_size_nm=test.image.voxel_size_nm, model_pixel_nm=cfg.data.pixel_size_nm,
        norm_stats=test.stats,
        tile=inf.tile, overlap=inf.overlap, batch_size=inf.batch_size, device=device,
        amp=cfg.train.amp and device.type == "cuda", progress=progress,
        cpu_bf16=inf.cpu_bf16, tta=inf.tta,
    )


def _metrics(cfg: RunConfig, fit: FitResult, scores: dict, device, wall: float,
             world_size: int) -> dict:
    chosen = chosen_record(fit)
    return {
        "target_iou": scores.get("iou"),
        "target_dice": scores.get("dice"),
        "target_iou_slice_mean": scores.get("iou_slice_mean"),
        "source_val_iou": chosen.get("source_val_iou"),
        "selected_epoch": fit.selected_epoch,
        "selected_step": fit.selected_step,
        "selection_criterion": fit.criterion,
        "wall_time_s": round(wall, 2),
        "device": _device_name(device),
        "method": cfg.method,
        "source": cfg.source,
        "target": cfg.target,
        "seed": cfg.seed,
        "profile": cfg.profile,
        "world_size": world_size,
        "target_labels": bool(scores),
        "target_scores": scores,
        "selected_checkpoint": str(fit.checkpoint),
        "stages": {s.name: {"last_step": s.last_step, "stopped_early": s.stopped_early,
                            "evaluations": len(s.history)} for s in fit.stages},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()}threads"


def _write_outputs(run_dir: Path, metrics: dict, fit: FitResult) -> None:
    (run_dir / "report.md").write_text(render_report(metrics, fit))
    with atomic_path(run_dir / METRICS_FILE) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


def _criterion_reads(metrics: dict, criterion: str) -> str:
    """What the chosen criterion read, in words: an in-domain run's validation labels are
    labels of the target's own domain, so "label-free" would not be true there."""
    if metrics["source"] == metrics["target"] and criterion.startswith("source_val"):
        return "held-out labeled validation slices of the same dataset"
    return "label-free"


def render_report(metrics: dict, fit: FitResult) -> str:
    """A short human-readable summary of the run."""
    def fmt(value):
        return "n/a (no target labels)" if value is None else f"{value:.4f}"

    lines = [
        f"# {metrics['method']}: {metrics['source']} -> {metrics['target']} (seed {metrics['seed']})",
        "",
        f"- profile: {metrics['profile']}, device: {metrics['device']}, "
        f"wall time: {metrics['wall_time_s']:.0f} s",
        f"- checkpoint chosen by `{fit.criterion}` ({_criterion_reads(metrics, fit.criterion)}) "
        f"at step {fit.selected_step} "
        f"(evaluation {fit.selected_epoch})",
        "",
        "| target metric | value |",
        "|---|---|",
        f"| IoU (foreground, whole volume) | {fmt(metrics['target_iou'])} |",
        f"| Dice | {fmt(metrics['target_dice'])} |",
        f"| IoU, mean over slices | {fmt(metrics['target_iou_slice_mean'])} |",
        "",
        "Target labels were used only for these scores, never for training or selection.",
    ]
    if "trust" in metrics:
        from domadapt.trust import render_panel

        lines += ["", *render_panel(metrics["trust"])]
    for stage in fit.stages:
        first = stage.history[0] if stage.history else {}
        keys = [k for k, v in first.items()  # criterion parts (a/b) stay in tb/
                if k not in ("step", "epoch") and "/" not in k and isinstance(v, (int, float))]
        lines += ["", f"## Stage `{stage.name}`", "", "| step | " + " | ".join(keys) + " |"]
        lines.append("|---" * (len(keys) + 1) + "|")
        for rec in stage.history:
            cells = [f"{rec.get(k, float('nan')):.4f}" for k in keys]
            lines.append(f"| {rec['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
