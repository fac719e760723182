"""Self-training: a mean teacher turns its confident target predictions into labels.

The student starts from a source-only segmenter (``self_training.segmenter_from``,
a finished run of the same source, or a source-only stage trained first) and
then learns, at every step, from a labeled source batch and an unlabeled
target batch. The teacher, an exponential moving average of the student,
predicts the target patches as they are (the weak view); its confident pixels
(``max(p, 1 - p) >= threshold``, plus the most confident ``class_keep`` share of
the pixels it gives each class) become pseudo-labels, and the student is
trained on a strong view of the same patches: flips and 90-degree turns
(applied to the pseudo-labels as well, so they stay aligned pixel for pixel)
plus brightness, contrast, gamma, blur and noise. The pseudo-label loss is the
run's segmentation loss, weighted by ``unsup_weight`` after a sigmoid ramp-up.

Variants (configs/methods/self_training-*.yaml):

- ``harmonizer: histogram | fda``: target images are harmonized toward the
  source before teacher and student see them; the harmonizer is stored in
  every checkpoint, so ``domadapt predict`` applies it too.
- ``section_weight > 0`` (2.5D): the student's prediction on a target section
  is also trained toward the teacher's confident pixels on a neighbouring
  section (z +- 1, same y/x window), with no alignment step: serial EM sections
  are registered, and a mitochondrion crosses several of them, so the
  neighbour's labels are right almost everywhere but at object borders.

The strategy receives the target as an UnlabeledVolume and reads no target
label; the checkpoint (the teacher's weights) is chosen by ``selection.criterion``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import nn

from domadapt.augment_options import AugmentConfig, validate_augment
from domadapt.config import RunConfig
from domadapt.data import harmonize
from domadapt.data.augment import augment_batch
from domadapt.data.patches import PatchSampler
from domadapt.errors import ConfigError, RunFolderError
from domadapt.inference import harmonize_image
from domadapt.models.spec import harmonizer_spec, unet_from_spec
from domadapt.stage_options import SIMPLE_STAGE_KEYS, StageOptions, stage_named, stage_steps, validate_stages
from domadapt.strategies.base import (
    Domains,
    FitResult,
    Strategy,
    StrategyContext,
    build_monitors,
    check_reusable,
    new_segmentation_net,
    require_metric,
    segmentation_stage,
    select,
    source_sampler,
    train_settings,
)
from domadapt.strategies.style_transfer import fixed_patches
from domadapt.training.checkpoint import checkpoint_of, load_checkpoint
from domadapt.training.losses import segmentation_loss
from domadapt.training.mean_teacher import (
    label_stats,
    pseudo_labels,
    sigmoid_rampup,
)
from domadapt.training.monitors import fixed_slice_sample
from domadapt.training.optim import make_optimizer
from domadapt.training.pseudo_label_monitor import PseudoLabelMonitor
from domadapt.training.trainer import Batch, Objective, Stage
from domadapt.training.weight_average import ema_update

STAGE = "self_training"


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

    section: ClassVar[str] = "self_training"  # its YAML section (``self_training:``) and --set prefix

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

    def validate(self) -> None:
        """Ranges that types alone cannot express; each error names its key."""
        validate_self_training(self)


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
    validate_augment(st.strong, "self_training.strong")


class SelfTraining(Strategy):
    name = "self_training"
    Options = SelfTrainingConfig
    # The benchmark points this key at the pair's finished source-only run.
    reuse_key = "self_training.segmenter_from"

    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        cfg = ctx.config
        module = target_harmonizer(cfg, domains)
        if module is not None:
            ctx.trainer.extra["harmonizer"] = harmonizer_spec(cfg.options.harmonizer, module)
        adapted = harmonized_target(module, domains, cfg, ctx.device)
        stages = []
        if cfg.options.segmenter_from:
            start = reused_segmenter(Path(cfg.options.segmenter_from), cfg)
        else:
            start = new_segmentation_net(cfg)
            first = select(ctx.trainer.fit(segmentation_stage(
                "segmentation", start, cfg, adapted, source_sampler(cfg, adapted))),
                start, cfg.selection.criterion)
            stages = first.stages
        stage = self_training_stage(start, cfg, adapted)
        result = ctx.trainer.fit(stage)
        fit = select_teacher(result, stage.modules["teacher"], cfg.selection.criterion)
        if module is not None:
            fit.model = nn.Sequential(module.to(ctx.device), fit.model).eval()
        fit.stages = stages + fit.stages
        return fit


# ---------------------------------------------------------------------- the starting point


def target_harmonizer(cfg: RunConfig, domains: Domains) -> nn.Module | None:
    """The harmonizer toward the source named by ``self_training.harmonizer`` (None: none)."""
    st = cfg.options
    source, target = domains.source_train.image, domains.target_train.image
    if st.harmonizer == "histogram":
        return harmonize.histogram_matching(target, source)
    if st.harmonizer == "fda":
        return harmonize.fda(source, cfg.inference.tile, st.fda_beta, cfg.seed)
    return None


def harmonized_target(module: nn.Module | None, domains: Domains, cfg: RunConfig,
                      device: torch.device) -> Domains:
    """The target as teacher, student and monitors see it: harmonized through and through
    (training patches come from anywhere in it); a monitored test split only on its sampled slices."""
    if module is None:
        return domains
    train = replace(domains.target_train,
                    image=harmonize_image(module, domains.target_train.image, cfg, device))
    test = domains.target_test
    if cfg.selection.target_split == "target_test":
        slices = fixed_slice_sample(test, cfg.selection.target_slices, cfg.seed)
        test = replace(test, image=harmonize_image(module, test.image[slices], cfg, device))
    return replace(domains, target_train=train, target_test=test)


def reused_segmenter(run_dir: Path, cfg: RunConfig) -> nn.Module:
    """The segmenter a finished run selected (its metrics.json names the checkpoint)."""
    key = "self_training.segmenter_from"
    try:
        payload = load_checkpoint(checkpoint_of(run_dir))
    except RunFolderError as exc:
        raise RunFolderError(f"{key}: {exc} Give the folder of a finished baseline run of the "
                             "same source.") from None
    check_reusable(payload, cfg, run_dir, key)
    if "harmonizer" in payload:
        raise ConfigError(f"{key}: {run_dir} segments harmonized images; start from a run that "
                          "segments the source as it is (e.g. a baseline run).")
    spec = payload["model_spec"]
    if (spec["arch"], spec["width"], spec["depth"], spec["norm"]) != (
            cfg.model.arch, cfg.model.width, cfg.model.depth, cfg.model.norm):
        raise ConfigError(f"{key}: {run_dir} holds a {spec['arch']} of width {spec['width']} and "
                          f"depth {spec['depth']}; this run's model section differs.")
    net = unet_from_spec(spec)
    net.load_state_dict(payload["modules"][payload.get("predictor") or "net"])
    return net


# ---------------------------------------------------------------------- the stage


def self_training_steps(cfg: RunConfig) -> int:
    return stage_steps(stage_named(cfg.options.stages, STAGE), cfg.train.steps)


def batch_split(cfg: RunConfig) -> tuple[int, int]:
    """(labeled source, unlabeled target) patches per step, at least one of each."""
    size = cfg.data.batch_size
    if size < 2:
        raise ConfigError("self_training needs data.batch_size >= 2: each step holds labeled "
                          "source and unlabeled target patches.")
    n_target = min(size - 1, max(1, round(size * cfg.options.unlabeled_fraction)))
    return size - n_target, n_target


def self_training_stage(start: nn.Module, cfg: RunConfig, domains: Domains) -> Stage:
    """Student and teacher from ``start``; the teacher is what monitors evaluate and what is kept."""
    st, t = cfg.options, cfg.train
    student = start.train()
    teacher = copy.deepcopy(start).requires_grad_(False)
    steps = self_training_steps(cfg)
    n_source, n_target = batch_split(cfg)
    source = source_sampler(cfg, domains, n_source)
    target = PatchSampler([domains.target_train.image], None, cfg.data.patch_size, n_target, 0.0,
                          cfg.seed + 1, neighbours=st.section_weight > 0)

    def batches(generator: torch.Generator) -> Batch:
        labeled, unlabeled = source.sample(generator), target.sample(generator)
        return {**labeled, **{f"target_{k}": v for k, v in unlabeled.items()}}

    def transform(batch: Batch, generator: torch.Generator) -> Batch:
        out = augment_batch({"image": batch["image"], "mask": batch["mask"]}, cfg.augment, generator)
        return {**batch, **out}

    monitors = build_monitors(cfg, domains)
    monitors.append(PseudoLabelMonitor(
        fixed_patches(domains.target_train.image, cfg.data.patch_size, cfg.seed, n=8), st.threshold,
        st.class_keep))
    require_metric(cfg.selection.criterion, "selection.criterion", STAGE, monitors)
    options = stage_named(st.stages, STAGE)
    optimizer = make_optimizer(student.parameters(), t, options.lr or t.lr * st.lr_factor, options.optimizer)
    return Stage(
        name=STAGE, modules={"net": student, "teacher": teacher}, optimizers={"main": optimizer},
        objectives=[mean_teacher_objective(cfg, steps)], batches=batches, transform=transform,
        steps=steps, monitors=monitors, predictor="teacher",
        stop_metric=cfg.selection.criterion if t.patience else None, patience=t.patience,
        **train_settings(cfg, optimizer, steps))


def mean_teacher_objective(cfg: RunConfig, steps: int) -> Objective:
    """Source loss + ramped pseudo-label loss (+ the neighbouring-section term), one student pass.

    Source, strong target and nothing else go through the student in a single
    forward, which keeps batch-norm statistics shared and DDP's one-forward rule.
    """
    st = cfg.options
    loss_fn = segmentation_loss(cfg.train.loss)
    rampup = round(st.rampup_share * steps)

    def loss(modules, batch, scratch):
        student, teacher = modules["net"], modules["teacher"]
        if scratch["step"] > 0:  # the optimiser stepped since the last update
            ema_update(teacher, student, st.ema_decay)
        teacher.eval()
        views = {"image": batch["target_image"]}
        with torch.no_grad():
            views["mask"] = pseudo_labels(torch.sigmoid(teacher(views["image"]).float()),
                                          st.threshold, st.class_keep)
            if "target_neighbour" in batch:
                views["near"] = pseudo_labels(torch.sigmoid(teacher(batch["target_neighbour"]).float()),
                                              st.threshold, st.class_keep)
        strong = augment_batch(views, st.strong, scratch["generator"])
        n_source = batch["image"].shape[0]
        logits = student(torch.cat([batch["image"], strong["image"]]))
        supervised = loss_fn(logits[:n_source], batch["mask"])
        target_logits = logits[n_source:]
        weight = st.unsup_weight * sigmoid_rampup(scratch["step"], rampup)
        unsupervised = loss_fn(target_logits, strong["mask"])
        value = supervised + weight * unsupervised
        parts = {"seg_loss": supervised.item(), "pseudo_loss": unsupervised.item(),
                 "unsup_weight": weight, **label_stats(strong["mask"], target_logits)}
        if "near" in strong:
            section = loss_fn(target_logits, strong["near"])
            value = value + st.section_weight * weight * section
            parts["section_loss"] = section.item()
        return value, parts

    return Objective(loss)


def select_teacher(result, teacher: nn.Module, criterion: str) -> FitResult:
    """The teacher weights of the checkpoint ``criterion`` chose."""
    path = result.best_path(criterion)
    teacher.load_state_dict(load_checkpoint(path)["modules"]["teacher"])
    teacher.eval()
    info = result.best[criterion]
    return FitResult(teacher, path, criterion, int(info["step"]), int(info["epoch"]), [result])

