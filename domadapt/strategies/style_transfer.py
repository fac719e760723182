"""Style-transfer harmonization: make one EM domain look like the other, then segment.

``style.kind`` picks the harmonizer: classical ones fitted in seconds without
training (``histogram`` matching, ``fda`` Fourier domain adaptation,
``meanstd`` matching, ``equalize``: both domains histogram-equalised), or an
unpaired translator trained on unlabeled patches of both domains through the
shared trainer (``cut``, ``cyclegan``; stage ``translator``, two optimisers).

``style.direction``:

- ``target_to_source`` (the reference paper's main setting): target images are
  harmonized toward the source and segmented by a source-trained model. The
  harmonizer is stored in every segmentation checkpoint, so ``domadapt predict``
  harmonizes new target volumes the same way, tile by tile with blending.
  ``style.segmenter_from`` reuses the saved checkpoints of a finished run
  (e.g. the pair's baseline) instead of training a new segmenter.
- ``source_to_target``: the labeled source images are harmonized toward the
  target and the segmenter is trained on them; target images stay as they are.

No choice reads target labels: the translator's checkpoint is the one whose
translated intensities are closest to the destination domain's
(``translation_w1``), and the segmenter's is chosen by ``selection.criterion``
on harmonized unlabeled target images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from domadapt.config import RunConfig
from domadapt.data import harmonize
from domadapt.data.patches import PatchSampler
from domadapt.data.volume import UnlabeledVolume, Volume
from domadapt.errors import ConfigError
from domadapt.inference import harmonize_image
from domadapt.models.spec import harmonizer_spec, unet_from_spec
from domadapt.selection import load_history
from domadapt.stage_options import StageOptions, stage_named, stage_steps, validate_stages
from domadapt.strategies.base import (
    Domains,
    FitResult,
    Strategy,
    StrategyContext,
    build_monitors,
    check_reusable,
    load_modules,
    new_segmentation_net,
    rescoring_stage,
    saved_segmentation_checkpoints,
    segmentation_stage,
    select,
    source_sampler,
)
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.monitors import Monitor, RecordedMonitor, SourceValMonitor, fixed_slice_sample
from domadapt.training.trainer import Stage, StageResult
from domadapt.training.translation_monitor import TranslationMonitor


@dataclass
class Harmonization:
    """What is applied to each domain (None: left as it is), and how to rebuild it."""

    source: nn.Module | None
    target: nn.Module | None
    target_spec: dict | None  # stored in checkpoints so predict can rebuild ``target``
    stages: list[StageResult]


@dataclass
class StyleConfig:
    """Style-transfer harmonization: make one domain look like the other, then segment."""

    section: ClassVar[str] = "style"  # its YAML section (``style:``) and --set prefix

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

    def validate(self) -> None:
        """Ranges that types alone cannot express; each error names its key."""
        validate_style(self)


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


class StyleTransfer(Strategy):
    name = "style_transfer"
    Options = StyleConfig
    # One harmonizer each (configs/methods/), so a benchmark can compare them side by side.
    reuse_key = "style.segmenter_from"

    def can_reuse(self, cfg: RunConfig) -> bool:
        """Only a target_to_source harmonizer leaves the source as the baseline saw it."""
        return (super().can_reuse(cfg) and cfg.options.direction == "target_to_source"
                and cfg.options.kind != "equalize")

    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        cfg = ctx.config
        harm = fit_harmonization(cfg, domains, ctx)
        adapted = harmonize_domains(harm, domains, cfg, ctx.device)
        write_samples(domains, adapted, cfg, ctx.run_dir)
        if harm.target_spec is not None:
            ctx.trainer.extra["harmonizer"] = harm.target_spec
        if cfg.options.segmenter_from:
            fit = reuse_segmenter(Path(cfg.options.segmenter_from), cfg, adapted, ctx)
        else:
            net = new_segmentation_net(cfg)
            stage = segmentation_stage("segmentation", net, cfg, adapted, source_sampler(cfg, adapted))
            fit = select(ctx.trainer.fit(stage), net, cfg.selection.criterion)
        if harm.target is not None:
            fit.model = nn.Sequential(harm.target.to(ctx.device), fit.model).eval()
        fit.stages = harm.stages + fit.stages
        return fit


# ---------------------------------------------------------------------- harmonizers


def fit_harmonization(cfg: RunConfig, domains: Domains, ctx: StrategyContext) -> Harmonization:
    """Fit (or train) the harmonizer on unlabeled images of both domains."""
    style = cfg.options
    src, tgt = domains.source_train.image, domains.target_train.image
    to_source = style.direction == "target_to_source"
    moving, reference = (tgt, src) if to_source else (src, tgt)
    stages: list[StageResult] = []
    if style.kind == "equalize":  # both domains, whatever the direction
        source, target = harmonize.equalization(src), harmonize.equalization(tgt)
        return Harmonization(source, target, harmonizer_spec("equalize", target), stages)
    if style.kind == "histogram":
        module = harmonize.histogram_matching(moving, reference)
    elif style.kind == "meanstd":
        module = harmonize.mean_std_matching(moving, reference)
    elif style.kind == "fda":
        module = harmonize.fda(reference, cfg.inference.tile, style.fda_beta, cfg.seed)
    else:
        module, result = train_translator(cfg, moving, reference, ctx)
        stages.append(result)
    if to_source:
        return Harmonization(None, module, harmonizer_spec(style.kind, module, style), stages)
    return Harmonization(module, None, None, stages)


def harmonize_domains(harm: Harmonization, domains: Domains, cfg: RunConfig,
                      device: torch.device) -> Domains:
    """The splits as the segmenter and its monitors see them: harmonized where that applies.

    Unlabeled target images are only read by the target monitor, which looks at
    ``selection.target_slices`` fixed slices; only those are harmonized (the
    test volume is harmonized tile by tile at prediction time).
    """
    def labeled(volume: Volume | None) -> Volume | None:
        if volume is None or harm.source is None:
            return volume
        parts = volume.parts and [replace(p, image=harmonize_image(harm.source, p.image, cfg, device))
                                   for p in volume.parts]
        return replace(volume, image=harmonize_image(harm.source, volume.image, cfg, device),
                       parts=parts)

    def unlabeled(volume: UnlabeledVolume) -> UnlabeledVolume:
        if harm.target is None:
            return volume
        slices = fixed_slice_sample(volume, cfg.selection.target_slices, cfg.seed)
        return replace(volume, image=harmonize_image(harm.target, volume.image[slices], cfg, device))

    test = (unlabeled(domains.target_test) if cfg.selection.target_split == "target_test"
            else domains.target_test)
    return Domains(labeled(domains.source_train), labeled(domains.source_val),
                   unlabeled(domains.target_train), test)


# ---------------------------------------------------------------------- learned translators


def translator_steps(cfg: RunConfig) -> int:
    return stage_steps(stage_named(cfg.options.stages, "translator"), cfg.train.steps)


def train_translator(cfg: RunConfig, moving: np.ndarray, reference: np.ndarray,
                     ctx: StrategyContext) -> tuple[nn.Module, StageResult]:
    """Train CUT or CycleGAN (``moving`` -> ``reference``); return the chosen generator."""
    stage = translator_stage(cfg, moving, reference)
    result = ctx.trainer.fit(stage)
    load_modules(result.best_path("translation_w1"), stage.modules)
    return stage.modules["G"].eval(), result


def translator_stage(cfg: RunConfig, moving: np.ndarray, reference: np.ndarray) -> Stage:
    from domadapt.training.translation_objectives import (
        TranslationLossWeights,
        cut_objectives,
        cyclegan_objectives,
        translator_modules,
        translator_param_groups,
    )

    style = cfg.options
    modules = translator_modules(style.kind, style.generator_width, style.generator_blocks,
                                 style.discriminator_width, cfg.seed)
    options = stage_named(style.stages, "translator")
    optimizers = {name: torch.optim.Adam(params, lr=options.lr, betas=(0.5, 0.999))
                  for name, params in translator_param_groups(style.kind, modules).items()}
    weights = TranslationLossWeights(gan=style.gan_weight, nce=style.nce_weight,
                                     cycle=style.cycle_weight, identity=style.identity_weight)
    objectives = cut_objectives(weights) if style.kind == "cut" else cyclegan_objectives(weights)
    size = style.translator_patch
    a = PatchSampler([moving], None, size, style.translator_batch, seed=cfg.seed)
    b = PatchSampler([reference], None, size, style.translator_batch, seed=cfg.seed + 1)
    monitor = TranslationMonitor(fixed_patches(moving, size, cfg.seed),
                                 fixed_patches(reference, size, cfg.seed + 1))
    t = cfg.train
    return Stage(
        name="translator", modules=modules, optimizers=optimizers, objectives=objectives,
        batches=lambda g: {"a": a.sample(g)["image"], "b": b.sample(g)["image"]},
        steps=translator_steps(cfg), eval_every=options.eval_every or t.eval_every, monitors=[monitor],
        predictor=None, grad_clip=t.grad_clip, log_every=t.log_every, image_every=t.image_every)


def fixed_patches(image: np.ndarray, size: int, seed: int, n: int = 16) -> np.ndarray:
    """``n`` seeded (size, size) patches of a volume, the same at every evaluation."""
    sampler = PatchSampler([image], None, size, n, seed=seed)
    return sampler.sample(torch.Generator().manual_seed(seed))["image"][:, 0].numpy()


# ---------------------------------------------------------------------- reused segmenter


def reuse_segmenter(run_dir: Path, cfg: RunConfig, adapted: Domains, ctx: StrategyContext) -> FitResult:
    """Re-score a finished run's saved segmentation checkpoints on the harmonized target.

    The criterion sees the harmonized images the model will be applied to, so
    it may pick another checkpoint than the original run did. The trainer
    evaluates them as it evaluates any stage and writes this run's best files
    (with this run's config and harmonizer).
    """
    paths = saved_segmentation_checkpoints(run_dir, "style.segmenter_from")
    first = load_checkpoint(paths[0])
    check_reusable(first, cfg, run_dir, "style.segmenter_from")
    net = unet_from_spec(first["model_spec"])
    monitors = [_recorded_source_val(m, run_dir, first.get("config", {}), cfg)
                for m in build_monitors(cfg, adapted)]
    return select(ctx.trainer.rescore(rescoring_stage(net, cfg, monitors), paths), net,
                  cfg.selection.criterion)


#: What a source-validation score depends on besides the weights: the same values in the
#: reused run's config mean its recorded scores are the ones an evaluation would give.
_SOURCE_VAL_KEYS = (("source",), ("data",), ("inference",), ("train", "loss"), ("train", "amp"),
                    ("train", "device"), ("train", "channels_last"))


def _recorded_source_val(monitor: Monitor, run_dir: Path, recorded: dict, cfg: RunConfig) -> Monitor:
    """The source-validation monitor reads the reused run's scores where they are valid here.

    Harmonizing toward the source leaves source_val as the reused run saw it. ``recorded``
    is the reused run's config, as its checkpoints store it.
    """
    if not isinstance(monitor, SourceValMonitor) or cfg.options.direction != "target_to_source":
        return monitor
    ours = cfg.to_dict()
    if any(_key(recorded, path) != _key(ours, path) for path in _SOURCE_VAL_KEYS):
        return monitor
    history = load_history(run_dir, "segmentation").records
    return RecordedMonitor(monitor, SourceValMonitor.metric_names, history)


def _key(data: dict, path: tuple[str, ...]):
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


# ---------------------------------------------------------------------- samples


def write_samples(domains: Domains, adapted: Domains, cfg: RunConfig, run_dir: Path) -> list[Path]:
    """PNG panels (original | harmonized | a real slice of the other domain) in translated/."""
    import imageio.v3 as iio

    pairs = []
    if adapted.target_train is not domains.target_train:
        slices = fixed_slice_sample(domains.target_train, cfg.selection.target_slices, cfg.seed)
        pairs.append(("target", domains.target_train.image[slices], adapted.target_train.image,
                      domains.source_train.image))
    if adapted.source_train is not domains.source_train:
        pairs.append(("source", domains.source_train.image, adapted.source_train.image,
                      domains.target_train.image))
    out = run_dir / "translated"
    written = []
    for name, before, after, other in pairs:
        side = min(512, *before.shape[1:], *other.shape[1:])
        for i in range(min(cfg.options.samples, len(before))):
            z = i * len(before) // max(1, min(cfg.options.samples, len(before)))
            panel = np.concatenate([_crop(before[z], side), _crop(after[z], side),
                                    _crop(other[z * len(other) // len(before)], side)], axis=1)
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{name}_{i:02d}.png"
            iio.imwrite(path, (np.clip(panel, 0, 1) * 255).round().astype(np.uint8))
            written.append(path)
    return written


def _crop(plane: np.ndarray, side: int) -> np.ndarray:
    y, x = (plane.shape[0] - side) // 2, (plane.shape[1] - side) // 2
    return np.asarray(plane[y:y + side, x:x + side], np.float32)
