"""Self-supervised pretraining on unlabeled source + target patches, then a source fine-tune.

Stage ``pretext`` trains the segmentation U-Net to restore corrupted patches of
*both* domains, so its encoder and decoder learn what EM structures look like in
the target too, without a single target label. Stage ``finetune`` then trains it
on labeled source patches only. The pretext task is ``ssl.pretext``:

- ``crappify`` (default): restore a patch that got Gaussian noise and was down-
  then up-sampled, the pretext of Franco-Barranco et al. 2022 (the reference paper);
- ``noise2void``: predict randomly masked pixels from their neighbourhood, the
  blind-spot training of Krull et al. 2019 (loss on the masked pixels only);
- ``masked``: reconstruct random hidden squares (loss on the hidden pixels only).

Pretext patches whose intensity std is below ``ssl.min_patch_std`` (empty resin,
background outside the tissue) are skipped: restoring them teaches nothing.

One network for both stages. The pretext uses the U-Net's own one-channel head
as a regression output, so both stages train the plain ``UNet`` under the module
key ``net``: checkpoints, monitors, ``domadapt select`` and ``domadapt predict``
work unchanged. For the fine-tune every weight carries over except the head
(``net.decoder.head``), which is re-initialised (seeded by ``seed``): it maps
features to intensities, a poor start for logits, while the encoder and decoder
features are what pretraining is for.

Stage 1 hands over its *last* weights: the pretext loss says little about
segmentation, so no criterion chooses among its checkpoints; its monitor (pretext
loss and input | corrupted | restored grids on fixed held-out source and target
patches) is logged only. The fine-tune's checkpoint is chosen by
``selection.criterion``. ``ssl.finetune`` is ``full``, ``lower_encoder_lr``
(encoder at ``encoder_lr_factor`` x ``train.lr``) or ``freeze_encoder``: two
stages through the trainer, ``finetune_frozen`` (``freeze_steps`` steps, encoder
fixed) then ``finetune`` (everything trains), so the trainer never changes
parameter groups mid-stage.

The fine-tune gets ``train.steps`` steps, as the baseline's segmentation stage
does: ssl and baseline runs with the same ``train.steps`` see the same supervised budget, and ssl spends
``ssl.stages.pretext.steps`` (default its ``share`` x ``train.steps``) more on the
pretext. Each stage starts from the previous stage's ``last.pt`` read from disk,
so ``--resume`` skips finished stages and rebuilds the same starting point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from domadapt.config import RunConfig
from domadapt.data.augment import augment_batch
from domadapt.data.patches import PatchSampler
from domadapt.errors import ConfigError, DataError
from domadapt.stage_options import SIMPLE_STAGE_KEYS, StageOptions, stage_named, stage_steps, validate_stages
from domadapt.strategies.base import (
    Domains,
    FitResult,
    Strategy,
    StrategyContext,
    build_monitors,
    load_modules,
    new_segmentation_net,
    require_metric,
    segmentation_stage,
    select,
    source_sampler,
    train_settings,
)
from domadapt.training.monitors import Monitor
from domadapt.training.optim import make_optimizer
from domadapt.training.reconstruction import (
    ReconstructionMonitor,
    blind_spot,
    crappify,
    fixed_patch,
    masked_input,
    regression_loss,
)
from domadapt.training.trainer import Batch, Objective, Stage, StageResult

#: Weights re-initialised between pretext and fine-tune (the regression head).
HEAD = ("net.decoder.head.",)
#: Fixed held-out patches per domain in the pretext monitor.
MONITOR_PATCHES = 4
#: Batches drawn at most to fill one batch with structured patches.
MAX_DRAW_ROUNDS = 50


@dataclass
class FinetunePlan:
    """One fine-tuning stage: its name, length and whether the encoder is frozen."""

    name: str
    steps: int
    freeze_encoder: bool = False


def plan_ssl(cfg: RunConfig) -> tuple[int, list[FinetunePlan]]:
    """(pretext steps, fine-tuning stages); the fine-tune takes ``train.steps`` in all."""
    ssl, steps = cfg.options, cfg.train.steps
    pretext = stage_steps(stage_named(ssl.stages, "pretext"), steps)
    if ssl.finetune != "freeze_encoder":
        return pretext, [FinetunePlan("finetune", steps)]
    frozen = ssl.freeze_steps or max(1, steps // 2)
    if frozen >= steps:
        raise ConfigError(f"Config key 'ssl.freeze_steps' must be below train.steps ({steps}), "
                          f"the fine-tune's length, got {frozen}.")
    return pretext, [FinetunePlan("finetune_frozen", frozen, True), FinetunePlan("finetune", steps - frozen)]


@dataclass
class SslConfig:
    """Self-supervised pretraining on source + target images, then a source fine-tune."""

    section: ClassVar[str] = "ssl"  # its YAML section (``ssl:``) and --set prefix

    pretext: Literal["crappify", "noise2void", "masked"] = "crappify"  # the stage-1 task
    # The pretext stage (the fine-tune is the segmentation stage: train.*); lr null: train.lr,
    # optimizer null: AdamW with train.weight_decay.
    stages: list[StageOptions] = field(default_factory=lambda: [StageOptions("pretext", share=0.5)])
    loss: Literal["mse", "mae"] = "mse"  # pretext regression loss
    noise_std: float = 0.3  # crappify: std of the Gaussian noise added before downsampling
    downsample: int = 4  # crappify: down- then up-sampling factor
    n2v_fraction: float = 0.02  # noise2void: share of pixels masked (and scored) per patch
    mask_ratio: float = 0.5  # masked: share of mask_patch squares hidden
    mask_patch: int = 8  # masked: side of the hidden squares, in pixels
    min_patch_std: float = 0.05  # pretext patches with a lower intensity std are skipped
    finetune: Literal["full", "freeze_encoder", "lower_encoder_lr"] = "full"
    freeze_steps: int | None = None  # freeze_encoder: frozen steps of train.steps; null: half
    encoder_lr_factor: float = 0.1  # lower_encoder_lr: encoder lr = factor * train.lr

    def validate(self) -> None:
        """Ranges that types alone cannot express; each error names its key."""
        validate_ssl(self)


def validate_ssl(ssl: SslConfig) -> None:
    """Ranges of the ssl keys; the step budget is checked against train.steps when planning."""
    validate_stages(ssl.stages, "ssl", SIMPLE_STAGE_KEYS, ("pretext",))
    checks = (
        ("noise_std", ssl.noise_std >= 0, ">= 0"),
        ("downsample", ssl.downsample >= 1, ">= 1"),
        ("n2v_fraction", 0.0 < ssl.n2v_fraction <= 1.0, "in (0, 1]"),
        ("mask_ratio", 0.0 < ssl.mask_ratio <= 1.0, "in (0, 1]"),
        ("mask_patch", ssl.mask_patch > 0, "positive"),
        ("min_patch_std", ssl.min_patch_std >= 0, ">= 0"),
        ("freeze_steps", ssl.freeze_steps is None or ssl.freeze_steps > 0, "positive"),
        ("encoder_lr_factor", ssl.encoder_lr_factor > 0, "positive"),
    )
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"Config key 'ssl.{key}' must be {what}, got {getattr(ssl, key)!r}.")


class Ssl(Strategy):
    """Pretext pretraining on source + target images, then fine-tuning on source labels."""

    name = "ssl"
    Options = SslConfig

    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        """Pretext stage, then the fine-tuning stages; ``selection.criterion`` picks the model."""
        cfg = ctx.config
        pretext_steps, finetunes = plan_ssl(cfg)
        monitors = build_monitors(cfg, domains)
        require_metric(cfg.selection.criterion, "selection.criterion", finetunes[-1].name, monitors)
        results = [ctx.trainer.fit(pretext_stage(cfg, domains, pretext_steps))]
        sampler = source_sampler(cfg, domains)
        for plan in finetunes:
            net = start_net(cfg, results[-1], from_pretext=len(results) == 1)
            results.append(ctx.trainer.fit(finetune_stage(plan, net, cfg, domains, sampler, monitors)))
        fit = select(results[-1], net, cfg.selection.criterion)
        fit.stages = results
        return fit


def start_net(cfg: RunConfig, previous: StageResult, from_pretext: bool) -> nn.Module:
    """A seeded U-Net holding the previous stage's last weights (a fresh head after the pretext)."""
    net = new_segmentation_net(cfg)
    load_modules(previous.checkpoint_dir / "last.pt", {"net": net}, keep=HEAD if from_pretext else ())
    return net


# ---------------------------------------------------------------------- stage 1: pretext


def pretext_input(clean: torch.Tensor, ssl: SslConfig,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(corrupted input, weight of each pixel in the loss or None for all) of a clean batch."""
    if ssl.pretext == "crappify":
        return crappify(clean, ssl.noise_std, ssl.downsample, generator), None
    if ssl.pretext == "noise2void":
        return blind_spot(clean, ssl.n2v_fraction, generator)
    return masked_input(clean, ssl.mask_ratio, ssl.mask_patch, generator)


def structured_batch(sampler: PatchSampler, generator: torch.Generator, min_std: float) -> Batch:
    """A batch of unlabeled patches whose intensity std is at least ``min_std``."""
    kept, size = [], sampler.batch_size
    for _ in range(MAX_DRAW_ROUNDS):
        image = sampler.sample(generator)["image"]
        kept.append(image[image.flatten(1).std(dim=1) >= min_std])
        if sum(len(k) for k in kept) >= size:
            return {"image": torch.cat(kept)[:size]}
    raise DataError(f"Fewer than {size} of {size * MAX_DRAW_ROUNDS} unlabeled patches have an "
                    f"intensity std >= {min_std}; lower ssl.min_patch_std.")


def pretext_stage(cfg: RunConfig, domains: Domains, steps: int) -> Stage:
    """Restoration of corrupted, structured patches of source_train and target_train images."""
    d, ssl = cfg.data, cfg.options
    options = stage_named(ssl.stages, "pretext")
    net = new_segmentation_net(cfg)
    optimizer = make_optimizer(net.parameters(), cfg.train, options.lr, options.optimizer)
    sampler = PatchSampler([domains.source_train.image, domains.target_train.image], None,
                           d.patch_size, d.batch_size, 0.0, cfg.seed)
    return Stage(
        name="pretext", modules={"net": net}, optimizers={"main": optimizer},
        objectives=[pretext_objective(ssl.loss)],
        batches=lambda g: structured_batch(sampler, g, ssl.min_patch_std),
        transform=pretext_transform(cfg),
        steps=steps, monitors=[pretext_monitor(cfg, domains)],
        predictor=None,  # a restoration network: nothing to segment with yet
        **train_settings(cfg, optimizer, steps, options.eval_every),
    )


def pretext_transform(cfg: RunConfig) -> Callable[[Batch, torch.Generator], Batch]:
    """Augment the clean patches on the device, then corrupt them."""
    def transform(batch: Batch, g: torch.Generator) -> Batch:
        clean = augment_batch({"image": batch["image"]}, cfg.augment, g)["image"]
        fed, weight = pretext_input(clean, cfg.options, g)
        out = {"clean": clean, "input": fed}
        if weight is not None:
            out["weight"] = weight
        return out

    return transform


def pretext_objective(kind: str) -> Objective:
    """MSE or MAE between the restored and the clean patch (on the weighted pixels)."""
    def loss(modules, batch, scratch):
        value = regression_loss(modules["net"](batch["input"]), batch["clean"],
                                batch.get("weight"), kind)
        return value, {"pretext_loss": value.item()}

    return Objective(loss)


class PretextMonitor(ReconstructionMonitor):
    """Pretext loss on fixed held-out patches and input | corrupted | restored grids; logged only."""

    name = "pretext"
    image_tag = "pretext"

    def __init__(self, patches: dict[str, np.ndarray], ssl: SslConfig, seed: int = 0) -> None:
        self.ssl = ssl
        super().__init__(patches, ssl.pretext, seed)

    def corrupt(self, clean: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        return pretext_input(clean, self.ssl, g)

    def restore(self, modules: dict[str, nn.Module], fed: torch.Tensor) -> torch.Tensor:
        return modules["net"](fed)

    def score(self, domain: str, out: torch.Tensor) -> dict[str, float]:
        loss = regression_loss(out, self.clean[domain], self.weights[domain], self.ssl.loss)
        return {f"pretext_loss_{domain}": float(loss)}

    def panels(self, domain: str, out: torch.Tensor) -> list[torch.Tensor]:
        return [self.clean[domain], self.inputs[domain], out]


def pretext_monitor(cfg: RunConfig, domains: Domains) -> PretextMonitor:
    """Patches never trained on: source_val (else source_train) and target_test *images*."""
    source = domains.source_val or domains.source_train
    size = cfg.data.patch_size
    patches = {name: np.stack([fixed_patch(image, size, cfg.seed + i) for i in range(MONITOR_PATCHES)])
               for name, image in (("source", source.image), ("target", domains.target_test.image))}
    return PretextMonitor(patches, cfg.options, cfg.seed)


# ---------------------------------------------------------------------- stage 2: fine-tune


def finetune_stage(plan: FinetunePlan, net: nn.Module, cfg: RunConfig, domains: Domains,
                   sampler: PatchSampler, monitors: list[Monitor]) -> Stage:
    """Supervised source stage; frozen encoder or a lower encoder learning rate as planned."""
    frozen = [net.encoder] if plan.freeze_encoder else []
    params = encoder_lr_groups(net, cfg) if cfg.options.finetune == "lower_encoder_lr" else None
    return segmentation_stage(plan.name, net, cfg, domains, sampler, plan.steps, params=params,
                              frozen=frozen, monitors=monitors)


def encoder_lr_groups(net: nn.Module, cfg: RunConfig) -> list[dict]:
    """Decoder at ``train.lr`` (first: the logged rate), encoder at ``encoder_lr_factor`` of it."""
    return [{"params": list(net.decoder.parameters())},
            {"params": list(net.encoder.parameters()), "lr": cfg.train.lr * cfg.options.encoder_lr_factor}]
