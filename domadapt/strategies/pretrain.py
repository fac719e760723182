"""Segmentation pretraining on another labeled dataset (e.g. a synthetic domain).

Runs before any method, as the run's stage ``pretrain``: a U-Net trained on
the pretraining dataset's labeled training split (resampled to the run's
pixel size like every volume). Its checkpoint with the best IoU on the
pretraining dataset's own held-out slices becomes ``pretrain.weights``, from
which every segmentation network of the method then starts. Neither source
nor target labels are involved, so the method's label-free choices stay so.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from domadapt.config import RunConfig, dataset_refs
from domadapt.data.patches import PatchSampler
from domadapt.data.prepare import dataset_options, prepare_labeled, split_source
from domadapt.data.registry import resolve_dataset
from domadapt.data.volume import Volume, stack_volumes
from domadapt.errors import DataError
from domadapt.strategies.base import new_segmentation_net, supervised_stage
from domadapt.training.losses import segmentation_loss
from domadapt.training.monitors import SourceValMonitor
from domadapt.training.trainer import Trainer

CRITERION = "source_val_iou"  # on the pretraining dataset's own held-out slices


def pretrain_steps(cfg: RunConfig) -> int:
    return cfg.pretrain.steps or max(1, cfg.train.steps // 2)


def pretrain(cfg: RunConfig, trainer: Trainer) -> RunConfig:
    """Train stage ``pretrain`` and return ``cfg`` with ``pretrain.weights`` set to its choice."""
    d = cfg.data
    trains, vals = zip(*(_splits(cfg, ref) for ref in pretrain_refs(cfg)))
    net = new_segmentation_net(replace(cfg, pretrain=replace(cfg.pretrain, weights=None)))
    sampler = PatchSampler([t.image for t in trains], [t.mask for t in trains], d.patch_size,
                           d.batch_size, d.foreground_patch_prob, cfg.seed)
    val = stack_volumes(list(vals), f"{cfg.pretrain.dataset}:held_out")
    monitor = SourceValMonitor(val, segmentation_loss(cfg.train.loss))
    stage = supervised_stage("pretrain", net, cfg, sampler, pretrain_steps(cfg), [monitor])
    result = trainer.fit(stage)
    weights: Path = result.best_path(CRITERION)
    return replace(cfg, pretrain=replace(cfg.pretrain, weights=str(weights)))


def pretrain_refs(cfg: RunConfig) -> list[str]:
    """The pretraining datasets: ``pretrain.dataset`` may list a mix, comma-separated, whose
    members are sampled equally often."""
    return dataset_refs(cfg.pretrain.dataset)


def _splits(cfg: RunConfig, ref: str) -> tuple[Volume, Volume]:
    """One pretraining dataset's training and held-out slices, normalised on its own."""
    d = cfg.data
    volume = resolve_dataset(ref, "train", d.data_root, **dataset_options(cfg, ref))
    if not isinstance(volume, Volume):
        raise DataError(f"pretrain.dataset '{ref}' has no labels to pretrain on.")
    prepared, _ = prepare_labeled(volume, d.pixel_size_nm)
    return split_source(prepared, max(d.source_val_fraction, 0.1))
