"""Multi-task adaptation: a Y-Net trained on source segmentation + reconstruction of both domains.

Roels et al. 2019 (Y-Net) and Franco-Barranco et al. 2022 (Attention Y-Net):
a shared encoder feeds a segmentation decoder, trained on labeled source
patches only, and a reconstruction decoder, trained on source *and* unlabeled
target patches. Reconstructing the target forces the shared encoder to
represent target images too, so the segmentation decoder reads features that
exist in both domains.

The schedule is data: ``multitask.stages`` lists stages (loss weights,
optimiser, learning rate, frozen parts, histogram matching, selection
criterion), each trained by the shared Trainer under its own name. Each stage
starts from the previous stage's selected (or last) checkpoint, read from disk,
so ``--resume`` rebuilds exactly the same starting point across stage
boundaries. ``configs/methods/multitask.yaml`` is one joint stage;
``multitask-paper.yaml`` is the reference paper's three-stage schedule.

The segmentation loss only ever sees source labels: target patches come from an
unlabeled sampler over ``domains.target_train``, which has no mask attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from domadapt.config import RunConfig
from domadapt.data.augment import augment_batch
from domadapt.data.patches import PatchSampler
from domadapt.errors import ConfigError
from domadapt.models.ynet import build_recon_decoder
from domadapt.stage_options import ALL_STAGE_KEYS, StageOptions, stage_steps, validate_stages
from domadapt.strategies.base import (
    Domains,
    FitResult,
    Strategy,
    StrategyContext,
    build_monitors,
    freeze,
    hold_frozen,
    load_modules,
    new_segmentation_net,
    require_metric,
    select,
    source_sampler,
    train_settings,
)
from domadapt.training.losses import segmentation_loss
from domadapt.training.optim import make_optimizer
from domadapt.training.reconstruction import (
    ReconstructionMonitor,
    corrupt,
    fixed_patch,
    recon_weight_at,
    reconstruction_mse,
)
from domadapt.training.trainer import Batch, Objective, Stage, StageResult


@dataclass
class StagePlan:
    """One configured stage with every default resolved against the run config."""

    name: str
    steps: int
    eval_every: int | None
    lr: float
    optimizer: str
    seg_weight: float
    recon_weight: float
    frozen: tuple[str, ...]
    histogram_matching: bool
    criterion: str
    patience: int
    handoff: str
    n_labeled: int
    n_unlabeled: int
    key: str  # the stage's config key, for error messages
    criterion_key: str  # the config key that set the criterion, for error messages

    @property
    def needs_criterion(self) -> bool:
        return self.handoff == "selected" or self.patience > 0


def plan_stages(cfg: RunConfig) -> list[StagePlan]:
    """Resolve ``multitask.stages``; the last stage is always chosen by its criterion."""
    mt, t = cfg.options, cfg.train
    plans = []
    for i, s in enumerate(mt.stages):
        recon = mt.recon_weight if s.recon_weight is None else s.recon_weight
        frozen = set(s.frozen) | ({"seg_decoder"} if s.seg_weight == 0 else set()) \
            | ({"recon_decoder"} if recon == 0 else set())
        n_lab, n_unl = batch_split(cfg, s, recon, f"multitask.stages[{i}]")
        plans.append(StagePlan(
            name=s.name, steps=stage_steps(s, t.steps), eval_every=s.eval_every,
            lr=s.lr if s.lr is not None else t.lr, optimizer=s.optimizer, seg_weight=s.seg_weight,
            recon_weight=recon, frozen=tuple(sorted(frozen)), histogram_matching=s.histogram_matching,
            criterion=s.criterion or cfg.selection.criterion,
            patience=t.patience if s.patience is None else s.patience,
            handoff="selected" if i == len(mt.stages) - 1 else s.handoff,
            n_labeled=n_lab, n_unlabeled=n_unl, key=f"multitask.stages[{i}]",
            criterion_key=f"multitask.stages[{i}].criterion" if s.criterion else "selection.criterion",
        ))
    return plans


def batch_split(cfg: RunConfig, stage: MultitaskStage, recon_weight: float,
                key: str) -> tuple[int, int]:
    """(labeled source, unlabeled target) patches per batch.

    ``multitask.unlabeled_fraction`` of the batch is target (balanced by
    default); a stage without reconstruction loss uses whole source batches.
    """
    size, fraction = cfg.data.batch_size, cfg.options.unlabeled_fraction
    if recon_weight == 0 or fraction == 0:
        n_unl = 0
    elif fraction == 1:
        n_unl = size
    elif size < 2:
        raise ConfigError("Config key 'data.batch_size' must be at least 2 to mix source and "
                          "target patches (multitask.unlabeled_fraction is between 0 and 1).")
    else:
        n_unl = min(size - 1, max(1, round(size * fraction)))
    if stage.seg_weight > 0 and n_unl == size:
        raise ConfigError(f"Config key 'multitask.unlabeled_fraction' leaves no labeled patch for "
                          f"the segmentation loss of stage '{stage.name}' ({key}.seg_weight > 0).")
    return size - n_unl, n_unl


@dataclass
class MultitaskStage(StageOptions):
    """One stage of the multi-task (Y-Net) schedule: the stage keys, plus loss weights."""

    name: str = "joint"
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"  # sgd uses momentum 0.9
    # Parts kept fixed (and in eval mode); encoder_shallow = every encoder level but the bottleneck.
    frozen: list[Literal["encoder", "encoder_shallow", "seg_decoder", "recon_decoder"]] = field(
        default_factory=list)
    seg_weight: float = 1.0  # weight of the source segmentation loss (0: no segmentation loss)
    recon_weight: float | None = None  # null: multitask.recon_weight (0: no reconstruction loss)
    histogram_matching: bool = False  # match target intensities to the source histogram first


@dataclass
class MultitaskConfig:
    """Segmentation + reconstruction network (Y-Net) trained on source and target images."""

    section: ClassVar[str] = "multitask"  # its YAML section (``multitask:``) and --set prefix

    recon: Literal["autoencode", "denoise", "masked"] = "autoencode"  # reconstruction task
    recon_weight: float = 1.0  # weight of the reconstruction (MSE) loss
    recon_weight_schedule: Literal["constant", "linear_decay"] = "constant"  # decay: to 0 per stage
    recon_skips: bool = False  # skips let the recon decoder copy its input past the encoder
    unlabeled_fraction: float = 0.5  # share of each batch that is unlabeled target patches
    noise_std: float = 0.1  # denoise: std of the Gaussian noise added to the input
    mask_ratio: float = 0.5  # masked: share of mask_patch squares hidden from the input
    mask_patch: int = 8  # masked: side of the hidden squares, in pixels
    stages: list[MultitaskStage] = field(default_factory=lambda: [MultitaskStage()])

    def validate(self) -> None:
        """Ranges that types alone cannot express; each error names its key."""
        validate_multitask(self)


def validate_multitask(mt: MultitaskConfig) -> None:
    """Ranges of the multitask keys; checked for every run (the defaults are valid)."""
    for key, value in (("unlabeled_fraction", mt.unlabeled_fraction), ("mask_ratio", mt.mask_ratio)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"Config key 'multitask.{key}' must be in [0, 1], got {value}.")
    for key, value in (("recon_weight", mt.recon_weight), ("noise_std", mt.noise_std)):
        if value < 0:
            raise ConfigError(f"Config key 'multitask.{key}' must be >= 0, got {value}.")
    if mt.mask_patch <= 0:
        raise ConfigError(f"Config key 'multitask.mask_patch' must be positive, got {mt.mask_patch}.")
    validate_stages(mt.stages, "multitask", ALL_STAGE_KEYS)
    for i, stage in enumerate(mt.stages):
        key = f"multitask.stages[{i}]"
        recon = mt.recon_weight if stage.recon_weight is None else stage.recon_weight
        if stage.seg_weight < 0 or recon < 0:
            raise ConfigError(f"Config keys '{key}.seg_weight' and '{key}.recon_weight' must be >= 0.")
        if stage.seg_weight == 0 and recon == 0:
            raise ConfigError(f"Config keys '{key}.seg_weight' and '{key}.recon_weight' are both 0: "
                              "the stage would train nothing.")


class Multitask(Strategy):
    """The Y-Net strategy; ``multitask-paper`` is the same class with the paper's stages."""

    name = "multitask"
    Options = MultitaskConfig

    def __init__(self) -> None:
        self._matched: np.ndarray | None = None  # histogram-matched target, computed once

    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        """Train the planned stages in order; the last stage's criterion picks the model."""
        cfg = ctx.config
        results: list[StageResult] = []
        start: Path | None = None
        for plan in plan_stages(cfg):
            modules = new_ynet_modules(cfg)
            if start is not None:
                load_modules(start, modules)
            target = self._target_image(domains, plan.histogram_matching)
            stage = build_stage(plan, modules, cfg, domains, target)
            result = ctx.trainer.fit(stage)
            results.append(result)
            start = result.best_path(plan.criterion) if plan.handoff == "selected" \
                else result.checkpoint_dir / "last.pt"
        fit = select(results[-1], modules["net"], plan.criterion)
        fit.stages = results
        return fit

    def _target_image(self, domains: Domains, matched: bool) -> np.ndarray:
        """Target training images, histogram-matched to the source when asked (cached)."""
        if not matched:
            return domains.target_train.image
        if self._matched is None:
            self._matched = match_to_source(domains.target_train.image, domains.source_train.image)
        return self._matched


def match_to_source(image: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Target intensities remapped so their histogram matches the source's."""
    from skimage.exposure import match_histograms

    return match_histograms(np.asarray(image, np.float32),
                            np.asarray(source, np.float32)).astype(np.float32)


def new_ynet_modules(cfg: RunConfig) -> dict[str, nn.Module]:
    """Seeded ``net`` (a plain UNet) and ``recon`` (a decoder of ``net.encoder``'s features)."""
    net = new_segmentation_net(cfg)
    m = cfg.model
    recon = build_recon_decoder(net.encoder, m.norm, m.arch == "attention_unet",
                                cfg.options.recon_skips)
    return {"net": net, "recon": recon}


def frozen_parts(modules: dict[str, nn.Module], parts: tuple[str, ...]) -> list[nn.Module]:
    """The sub-modules named by ``frozen``; encoder_shallow keeps the bottleneck trainable."""
    net, recon = modules["net"], modules["recon"]
    table = {"encoder": [net.encoder], "encoder_shallow": list(net.encoder.blocks[:-1]),
             "seg_decoder": [net.decoder], "recon_decoder": [recon]}
    return [m for part in parts for m in table[part]]


def build_stage(plan: StagePlan, modules: dict[str, nn.Module], cfg: RunConfig, domains: Domains,
                target_image: np.ndarray) -> Stage:
    """The Trainer stage of one planned multi-task stage."""
    frozen = frozen_parts(modules, plan.frozen)
    freeze(frozen)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"Config key '{plan.key}.frozen' freezes every part stage "
                          f"'{plan.name}' trains; it would learn nothing.")
    optimizer = make_optimizer(params, cfg.train, plan.lr, plan.optimizer)
    monitors = build_monitors(cfg, domains) + [recon_monitor(cfg, domains, target_image)]
    check_criterion(plan, monitors)
    return Stage(
        name=plan.name, modules=modules, optimizers={"main": optimizer},
        objectives=[multitask_objective(plan, cfg, frozen)],
        batches=mixed_batches(plan, cfg, domains, target_image),
        transform=make_transform(plan, cfg),
        steps=plan.steps, monitors=monitors, predictor="net",
        stop_metric=plan.criterion if plan.patience else None, patience=plan.patience,
        **train_settings(cfg, optimizer, plan.steps, plan.eval_every),
    )


def check_criterion(plan: StagePlan, monitors: list) -> None:
    """Fail before training when the stage's criterion is not declared by any monitor."""
    if plan.needs_criterion:
        require_metric(plan.criterion, plan.criterion_key, plan.name, monitors)


def recon_monitor(cfg: RunConfig, domains: Domains, target_image: np.ndarray) -> ReconstructionMonitor:
    """Fixed source (held-out if possible) and target patches, the same in every stage."""
    source = domains.source_val or domains.source_train
    size, mt = cfg.data.patch_size, cfg.options
    patches = {"source": fixed_patch(source.image, size, cfg.seed),
               "target": fixed_patch(target_image, size, cfg.seed)}
    return ReconstructionMonitor(patches, mt.recon, cfg.seed, noise_std=mt.noise_std,
                                 mask_ratio=mt.mask_ratio, mask_patch=mt.mask_patch)


def mixed_batches(plan: StagePlan, cfg: RunConfig, domains: Domains, target_image: np.ndarray):
    """Draw ``n_labeled`` source patches (with masks) and ``n_unlabeled`` target patches."""
    d = cfg.data
    source = source_sampler(cfg, domains, plan.n_labeled) if plan.n_labeled else None
    target = PatchSampler([target_image], None, d.patch_size, plan.n_unlabeled, 0.0, cfg.seed) \
        if plan.n_unlabeled else None

    def draw(generator: torch.Generator) -> Batch:
        batch = dict(source.sample(generator)) if source is not None else {}
        if target is not None:
            batch["target_image"] = target.sample(generator)["image"]
        return batch

    return draw


def make_transform(plan: StagePlan, cfg: RunConfig):
    """Augment both domains on the device, then build the reconstruction input and target."""
    mt = cfg.options

    def transform(batch: Batch, g: torch.Generator) -> Batch:
        out = augment_batch({k: batch[k] for k in ("image", "mask")}, cfg.augment, g) \
            if "image" in batch else {}
        if plan.recon_weight > 0:
            clean = [out["image"]] if "image" in out else []
            if "target_image" in batch:
                clean.append(augment_batch({"image": batch["target_image"]}, cfg.augment, g)["image"])
            out["recon_clean"] = torch.cat(clean)
            out["recon_input"] = corrupt(out["recon_clean"], mt.recon, g, noise_std=mt.noise_std,
                                         mask_ratio=mt.mask_ratio, mask_patch=mt.mask_patch)
        return out

    return transform


def multitask_objective(plan: StagePlan, cfg: RunConfig, frozen: list[nn.Module]) -> Objective:
    """seg_weight * segmentation loss (source labels only) + weighted reconstruction MSE."""
    seg_fn = segmentation_loss(cfg.train.loss)
    mt = cfg.options
    share_features = mt.recon == "autoencode"  # same input for both heads: one encoder pass
    n_lab = plan.n_labeled

    def loss(modules, batch, scratch):
        net, recon = modules["net"], modules["recon"]
        hold_frozen(frozen)
        parts: dict[str, float] = {}
        total, features = 0.0, None
        if plan.recon_weight > 0:
            weight = recon_weight_at(plan.recon_weight, mt.recon_weight_schedule,
                                     scratch["step"], plan.steps)
            features = net.encoder(batch["recon_input"])
            out = recon(features)
            rec = reconstruction_mse(out, batch["recon_clean"])
            total = total + weight * rec
            parts.update(recon_loss=rec.item(), recon_weight=weight,
                         **_per_domain(out.detach(), batch["recon_clean"], n_lab))
        if plan.seg_weight > 0:
            if share_features and features is not None:
                logits = net.decoder([f[:n_lab] for f in features])
            else:
                logits = net(batch["image"])
            seg = seg_fn(logits, batch["mask"])
            total = total + plan.seg_weight * seg
            parts["seg_loss"] = seg.item()
        return total, parts

    return Objective(loss)


def _per_domain(out: torch.Tensor, clean: torch.Tensor, n_source: int) -> dict[str, float]:
    """Reconstruction MSE of the source and target parts of a batch, logged separately."""
    parts = {}
    if n_source:
        parts["recon_loss_source"] = reconstruction_mse(out[:n_source], clean[:n_source]).item()
    if len(out) > n_source:
        parts["recon_loss_target"] = reconstruction_mse(out[n_source:], clean[n_source:]).item()
    return parts
