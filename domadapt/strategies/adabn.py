"""AdaBN: a source-trained segmenter with batch-norm statistics of the unlabeled target.

Batch norm normalises every feature map with running statistics gathered on the source;
on a target whose intensities and textures differ, those statistics are off and so is
every layer after them. Re-estimating them on unlabeled target patches (Li et al. 2016,
"Revisiting batch normalization for practical domain adaptation") adapts the network
without a gradient step, in seconds. Every saved checkpoint of a source-only segmenter
(reused from the pair's finished baseline, ``adabn.segmenter_from``, or trained here
first) gets target statistics from the same seeded patches, and ``selection.criterion``
chooses among the adapted checkpoints on the unlabeled target, as for any method. The
adapted weights are this run's own checkpoints, so ``domadapt predict`` needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from domadapt.data.patches import PatchSampler
from domadapt.errors import ConfigError
from domadapt.models.spec import unet_from_spec
from domadapt.strategies.base import (
    Domains,
    FitResult,
    Strategy,
    StrategyContext,
    build_monitors,
    check_reusable,
    new_segmentation_net,
    rescoring_stage,
    saved_segmentation_checkpoints,
    segmentation_stage,
    select,
    source_sampler,
)
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.trainer import StageResult


@dataclass
class AdaBNConfig:
    """Where the source-only segmenter comes from, and how many target patches adapt it."""

    section: ClassVar[str] = "adabn"  # its YAML section (``adabn:``) and --set prefix

    # A finished source-only run of the same source (e.g. the pair's baseline) whose saved
    # checkpoints are adapted; empty: a source-only segmenter is trained in this run first.
    segmenter_from: str | None = None
    # Batches of unlabeled target patches (data.batch_size x data.patch_size) averaged into
    # the new statistics of each checkpoint; the same seeded patches for every checkpoint.
    batches: int = 32

    def validate(self) -> None:
        if self.batches <= 0:
            raise ConfigError(f"Config key 'adabn.batches' must be positive, got {self.batches}.")


class AdaBN(Strategy):
    name = "adabn"
    Options = AdaBNConfig
    reuse_key = "adabn.segmenter_from"

    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        cfg = ctx.config
        trained: list[StageResult] = []
        if cfg.options.segmenter_from:
            run_dir, key = Path(cfg.options.segmenter_from), "adabn.segmenter_from"
            paths = saved_segmentation_checkpoints(run_dir, key)
            first = load_checkpoint(paths[0])
            check_reusable(first, cfg, run_dir, key)
            net = unet_from_spec(first["model_spec"])
        else:
            net = new_segmentation_net(cfg)
            stage = segmentation_stage("source", net, cfg, domains, source_sampler(cfg, domains))
            trained.append(ctx.trainer.fit(stage))
            paths = saved_segmentation_checkpoints(ctx.run_dir, "adabn", stage="source")
        batch_norms(net)  # a network without batch norm fails before any work
        sampler = PatchSampler([domains.target_train.image], None, cfg.data.patch_size,
                               cfg.data.batch_size, seed=cfg.seed)

        def adapt(modules: dict[str, nn.Module]) -> None:
            with ctx.trainer.timer.phase("segmentation/adapt_batch_norm"):
                target_statistics(modules["net"], sampler, cfg.options.batches, cfg.seed, ctx.device)

        stage = rescoring_stage(net, cfg, build_monitors(cfg, domains))
        fit = select(ctx.trainer.rescore(stage, paths, adapt=adapt), net, cfg.selection.criterion)
        fit.stages = trained + fit.stages
        return fit


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The network's batch-norm layers; none is an error (AdaBN has nothing to adapt)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ConfigError("adabn adapts batch-norm statistics, and this network has no batch "
                          "norm (model.norm); train the source segmenter with model.norm=batch.")
    return norms


def target_statistics(net: nn.Module, sampler: PatchSampler, batches: int, seed: int,
                      device: torch.device) -> None:
    """Replace every batch-norm layer's running mean and variance by their average over
    ``batches`` seeded batches of target patches; the weights are left as they are."""
    for norm in batch_norms(net):
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch weighs the same
    generator = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(sampler.sample(generator)["image"].to(device))
    net.eval()
