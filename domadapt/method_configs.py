"""Configuration dataclasses of the adaptation methods (multitask, ssl, style) and their checks.

Kept apart from :mod:`domadapt.config` so that file stays about the run itself;
``RunConfig`` holds one field per method (``multitask``, ``ssl``, ``style``) and
``from domadapt.config import MultitaskConfig`` keeps working. Validation
follows the same rule as the rest of the config: every error names its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from domadapt.augment_options import AugmentConfig
from domadapt.errors import ConfigError
from domadapt.stage_options import StageOptions, validate_stages

#: A multitask stage takes every stage key.
MULTITASK_STAGE_KEYS = {"steps", "share", "lr", "optimizer", "eval_every", "criterion", "patience",
                        "handoff", "frozen"}
#: The stage keys of a stage that only trains (no hand-off, own criterion or frozen parts).
SIMPLE_STAGE_KEYS = {"steps", "share", "lr", "optimizer", "eval_every"}


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

    recon: Literal["autoencode", "denoise", "masked"] = "autoencode"  # reconstruction task
    recon_weight: float = 1.0  # weight of the reconstruction (MSE) loss
    recon_weight_schedule: Literal["constant", "linear_decay"] = "constant"  # decay: to 0 per stage
    recon_skips: bool = False  # skips let the recon decoder copy its input past the encoder
    unlabeled_fraction: float = 0.5  # share of each batch that is unlabeled target patches
    noise_std: float = 0.1  # denoise: std of the Gaussian noise added to the input
    mask_ratio: float = 0.5  # masked: share of mask_patch squares hidden from the input
    mask_patch: int = 8  # masked: side of the hidden squares, in pixels
    stages: list[MultitaskStage] = field(default_factory=lambda: [MultitaskStage()])


@dataclass
class SslConfig:
    """Self-supervised pretraining on source + target images, then a source fine-tune."""

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
    validate_stages(mt.stages, "multitask", MULTITASK_STAGE_KEYS)
    for i, stage in enumerate(mt.stages):
        key = f"multitask.stages[{i}]"
        recon = mt.recon_weight if stage.recon_weight is None else stage.recon_weight
        if stage.seg_weight < 0 or recon < 0:
            raise ConfigError(f"Config keys '{key}.seg_weight' and '{key}.recon_weight' must be >= 0.")
        if stage.seg_weight == 0 and recon == 0:
            raise ConfigError(f"Config keys '{key}.seg_weight' and '{key}.recon_weight' are both 0: "
                              "the stage would train nothing.")


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


@dataclass
class StyleConfig:
    """Style-transfer harmonization: make one domain look like the other, then segment."""

    kind: Literal["histogram", "fda", "meanstd", "equalize", "cut", "cyclegan"] = "histogram"
    # target_to_source: harmonize target images, segment them with a source-trained model;
    # source_to_target: harmonize the labeled source images, train the segmenter on them.
    direction: Literal["target_to_source", "source_to_target"] = "target_to_source"
    fda_beta: float = 0.01  # half-side of the swapped low-frequency square / tile side
    # A finished run folder (e.g. a baseline run of the same pair) whose saved segmentation
    # checkpoints are reused instead of training a new segmenter (target_to_source only);
    # its checkpoints are re-scored by selection.criterion on the harmonized target.
    segmenter_from: str | None = None
    # The learned translators' stage (cut, cyclegan): Adam with betas (0.5, 0.999).
    stages: list[StageOptions] = field(default_factory=lambda: [
        StageOptions("translator", share=0.5, lr=2e-4, eval_every=100)])
    translator_batch: int = 4
    translator_patch: int = 128
    generator_width: int = 16
    generator_blocks: int = 6
    discriminator_width: int = 32
    gan_weight: float = 1.0
    nce_weight: float = 1.0  # cut
    cycle_weight: float = 10.0  # cyclegan
    identity_weight: float = 0.5  # cyclegan, relative to cycle_weight
    samples: int = 4  # translated sample PNGs written into the run folder


def validate_style(style: StyleConfig) -> None:
    """Ranges of the style keys."""
    validate_stages(style.stages, "style", {"steps", "share", "lr", "eval_every"}, ("translator",))
    checks = (
        ("fda_beta", 0.0 <= style.fda_beta < 0.5, "in [0, 0.5)"),
        ("translator_batch", style.translator_batch > 0, "positive"),
        ("translator_patch", style.translator_patch > 0 and style.translator_patch % 4 == 0,
         "a positive multiple of 4"),
        ("generator_width", style.generator_width > 0, "positive"),
        ("generator_blocks", style.generator_blocks >= 0, ">= 0"),
        ("discriminator_width", style.discriminator_width > 0, "positive"),
        ("samples", style.samples >= 0, ">= 0"),
    )
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"Config key 'style.{key}' must be {what}, got {getattr(style, key)!r}.")
    for key in ("gan_weight", "nce_weight", "cycle_weight", "identity_weight"):
        if getattr(style, key) < 0:
            raise ConfigError(f"Config key 'style.{key}' must be >= 0, got {getattr(style, key)!r}.")
    if style.segmenter_from and style.kind == "equalize":
        raise ConfigError("Config key 'style.segmenter_from' cannot serve style.kind=equalize: it "
                          "equalizes the source too, so its segmenter must be trained anew.")
    if style.segmenter_from and style.direction != "target_to_source":
        raise ConfigError("Config key 'style.segmenter_from' needs style.direction=target_to_source: "
                          "a source_to_target run must train its segmenter on the harmonized source.")


@dataclass
class StrongView(AugmentConfig):
    """The student's view of a target patch (the keys of ``augment``; geometric ones also move
    the pseudo-label, so it stays aligned pixel for pixel)."""

    flip: bool = True
    rot90: bool = True
    brightness: float = 0.2
    contrast: float = 0.3
    gamma: float = 0.3
    noise: float = 0.05
    blur: float = 1.0


@dataclass
class SelfTrainingConfig:
    """Mean teacher on unlabeled target patches: confident teacher pixels train the student."""

    # A finished run folder of the same source (e.g. the pair's baseline) whose selected
    # checkpoint is the starting segmenter; null: a source-only stage is trained first.
    segmenter_from: str | None = None
    # The mean-teacher stage; lr null: train.lr * lr_factor, optimizer null: AdamW.
    stages: list[StageOptions] = field(default_factory=lambda: [StageOptions("self_training", share=0.5)])
    lr_factor: float = 0.25  # the student starts trained, so it fine-tunes at a lower rate
    ema_decay: float = 0.99  # teacher = ema_decay * teacher + (1 - ema_decay) * student, per step
    # A teacher pixel becomes a pseudo-label when max(p, 1 - p) >= threshold (p: foreground
    # probability on the weak view); the others are ignored by the loss.
    threshold: float = 0.9
    # Also label the most confident class_keep share of the pixels the teacher assigns to each
    # class (per batch), so both classes get pseudo-labels from an uncalibrated teacher; 0: off.
    class_keep: float = 0.5
    unsup_weight: float = 1.0  # weight of the pseudo-label loss after the ramp-up
    rampup_share: float = 0.2  # share of the steps over which unsup_weight rises from 0 (sigmoid)
    unlabeled_fraction: float = 0.5  # share of each batch that is unlabeled target patches
    # Harmonizer applied to target images before teacher and student (and stored in checkpoints).
    harmonizer: Literal["none", "histogram", "fda"] = "none"
    fda_beta: float = 0.01
    # 2.5D: the student's prediction on a section is also trained toward the teacher's confident
    # pixels of a neighbouring section (z +- 1, same y/x); 0 disables.
    section_weight: float = 0.0
    strong: StrongView = field(default_factory=StrongView)


def validate_self_training(st: SelfTrainingConfig) -> None:
    """Ranges of the self_training keys."""
    validate_stages(st.stages, "self_training", SIMPLE_STAGE_KEYS, ("self_training",))
    checks = (
        ("lr_factor", st.lr_factor > 0, "positive"),
        ("ema_decay", 0.0 <= st.ema_decay < 1.0, "in [0, 1)"),
        ("threshold", 0.5 <= st.threshold < 1.0, "in [0.5, 1)"),
        ("class_keep", 0.0 <= st.class_keep <= 1.0, "in [0, 1]"),
        ("unsup_weight", st.unsup_weight >= 0, ">= 0"),
        ("rampup_share", 0.0 <= st.rampup_share <= 1.0, "in [0, 1]"),
        ("unlabeled_fraction", 0.0 < st.unlabeled_fraction < 1.0, "in (0, 1)"),
        ("fda_beta", 0.0 <= st.fda_beta < 0.5, "in [0, 0.5)"),
        ("section_weight", st.section_weight >= 0, ">= 0"),
    )
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"Config key 'self_training.{key}' must be {what}, "
                              f"got {getattr(st, key)!r}.")
    for key in ("brightness", "contrast", "gamma", "noise", "blur"):
        if getattr(st.strong, key) < 0:
            raise ConfigError(f"Config key 'self_training.strong.{key}' must be >= 0, "
                              f"got {getattr(st.strong, key)!r}.")
