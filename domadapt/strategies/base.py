"""The Strategy interface and the Domains every strategy receives.

``Domains.target_train`` and ``Domains.target_test`` are
:class:`~domadapt.data.volume.UnlabeledVolume` objects: they have no mask
attribute, so no strategy can reach target labels. The pipeline keeps those
labels aside and uses them once, to score the final prediction.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from domadapt.config import RunConfig
from domadapt.criteria import REGISTRY, available
from domadapt.data.augment import augment_batch
from domadapt.data.patches import PatchSampler
from domadapt.data.volume import UnlabeledVolume, Volume
from domadapt.errors import ConfigError, DataError, RunFolderError
from domadapt.models.spec import is_unet
from domadapt.models.unet import build_unet
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.losses import segmentation_loss
from domadapt.training.monitors import Monitor, SourceValMonitor
from domadapt.training.optim import make_optimizer, make_scheduler
from domadapt.training.trainer import Objective, Stage, StageResult, Trainer


@dataclass
class Domains:
    """Prepared volumes (normalised, at the common pixel size) in the split vocabulary."""

    source_train: Volume
    source_val: Volume | None
    target_train: UnlabeledVolume
    target_test: UnlabeledVolume


@dataclass
class StrategyContext:
    config: RunConfig
    trainer: Trainer
    device: torch.device
    run_dir: Path


@dataclass
class FitResult:
    """The chosen segmentation model and how it was chosen.

    ``model`` maps normalised (B, 1, H, W) tiles at the common pixel size to
    logits.
    """

    model: nn.Module
    checkpoint: Path
    criterion: str
    selected_step: int
    selected_epoch: int
    stages: list[StageResult] = field(default_factory=list)


class Strategy(ABC):
    """An adaptation method: one file in strategies/ and one YAML in configs/methods/."""

    name: str = "strategy"
    # Config key naming a finished source-only run whose segmenter the method can start from
    # (the benchmark sets it to the pair's baseline run); None: the method trains its own.
    reuse_key: str | None = None
    # The dataclass of the strategy's own settings, read from its YAML section
    # (``Options.section``, e.g. ``ssl:``) and handed to it as ``cfg.options``; a ``validate``
    # method, if any, checks ranges. None: the strategy takes no settings of its own.
    Options: type | None = None

    @property
    def options(self) -> str | None:
        """The config section this strategy reads; its runs' config.yaml holds no other."""
        return self.Options.section if self.Options is not None else None

    def can_reuse(self, cfg: RunConfig) -> bool:
        """Whether this configuration would take a reused segmenter (and has none set yet)."""
        if self.reuse_key is None:
            return False
        return not getattr(cfg.options, self.reuse_key.split(".")[1])

    @abstractmethod
    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        """Train through ``ctx.trainer`` and return the label-free chosen model."""


# ---------------------------------------------------------------------- shared building blocks


def build_monitors(cfg: RunConfig, domains: Domains) -> list[Monitor]:
    """The monitors named in ``selection.monitors``, built on the right splits."""
    loss_fn = segmentation_loss(cfg.train.loss)
    factories: dict[str, Callable[[], Monitor | None]] = {
        "source_val": lambda: (SourceValMonitor(domains.source_val, loss_fn)
                               if domains.source_val is not None else None),
        "target": lambda: target_monitor(cfg, domains),
    }
    monitors = []
    for name in cfg.selection.monitors:
        if name not in factories:
            raise ConfigError(
                f"Unknown monitor '{name}' in selection.monitors; valid: {', '.join(factories)}."
            )
        monitor = factories[name]()
        if monitor is not None:
            monitors.append(monitor)
    return monitors


def fit_priors(cfg: RunConfig, source: Volume) -> list:
    """Morphological priors fitted on the source TRAINING masks only.

    A prior that cannot be fitted (e.g. a tiny source with too few objects) is
    skipped with a warning, unless the selection criterion needs it: then the
    run stops before training with the reason and the way out.
    """
    from domadapt.morphology import PaperSolidityCriterion
    from domadapt.morphology_prior import MorphologyPrior

    chosen = cfg.selection.criterion
    needed = {chosen, *(REGISTRY[chosen].parts if chosen in REGISTRY else ())}
    priors = []
    for name, make in (("morph_paper", lambda: PaperSolidityCriterion().fit(source.mask)),
                       ("morph_ours", lambda: MorphologyPrior().fit(source.mask,
                                                                    cfg.data.pixel_size_nm))):
        try:
            priors.append(make())
        except DataError as exc:
            if name in needed:
                raise ConfigError(
                    f"selection.criterion '{chosen}' needs the morphological prior {name}, which cannot be "
                    f"fitted here: {exc} Choose another criterion, e.g. "
                    "--set selection.criterion=source_val_iou."
                ) from None
            warnings.warn(f"morphological prior {name} skipped: {exc}", stacklevel=2)
    return priors


def target_monitor(cfg: RunConfig, domains: Domains) -> Monitor:
    """Label-free criteria on a fixed sample of unlabeled target slices."""
    from domadapt.training.target_monitor import TargetCriteriaMonitor

    volume = getattr(domains, cfg.selection.target_split)
    return TargetCriteriaMonitor(volume, fit_priors(cfg, domains.source_train),
                                 cfg.selection.target_slices, cfg.seed, cfg.inference.threshold,
                                 cfg.selection.target_crop)


def new_segmentation_net(cfg: RunConfig) -> nn.Module:
    """A U-Net initialised by the seed, or from ``pretrain.weights`` when set."""
    torch.manual_seed(cfg.seed)
    m = cfg.model
    net = build_unet(m.arch, m.width, m.depth, m.norm)
    if cfg.pretrain.weights:
        payload = load_checkpoint(cfg.pretrain.weights)
        try:
            net.load_state_dict(payload["modules"][payload.get("predictor") or "net"])
        except (KeyError, RuntimeError):
            raise ConfigError(f"pretrain.weights {cfg.pretrain.weights} holds no segmentation "
                              "network of this run's model (model.arch/width/depth/norm).") from None
    return net


def source_sampler(cfg: RunConfig, domains: Domains, batch_size: int | None = None) -> PatchSampler:
    """Labeled source patches; several sources (``--source a,b``) contribute equally."""
    d = cfg.data
    parts = domains.source_train.parts or [domains.source_train]
    return PatchSampler([p.image for p in parts], [p.mask for p in parts], d.patch_size,
                        batch_size or d.batch_size, d.foreground_patch_prob, cfg.seed)


def segmentation_objective(loss_name: str, frozen: Sequence[nn.Module] = ()) -> Objective:
    """Supervised loss of the ``net`` module on a labeled batch."""
    loss_fn = segmentation_loss(loss_name)

    def loss(modules, batch, scratch):
        hold_frozen(frozen)
        value = loss_fn(modules["net"](batch["image"]), batch["mask"])
        return value, {"seg_loss": value.item()}

    return Objective(loss)


def segmentation_stage(name: str, net: nn.Module, cfg: RunConfig, domains: Domains,
                       sampler: PatchSampler, steps: int | None = None, *,
                       params: Iterable | None = None, frozen: Sequence[nn.Module] = (),
                       monitors: list[Monitor] | None = None) -> Stage:
    """A supervised stage on labeled patches, evaluated by the configured monitors.

    ``params`` (parameters or parameter groups, default all of ``net``) lets a
    fine-tune give the encoder its own learning rate; ``frozen`` parts are kept
    fixed and in eval mode.
    """
    monitors = build_monitors(cfg, domains) if monitors is None else monitors
    require_metric(cfg.selection.criterion, "selection.criterion", name, monitors)
    return supervised_stage(name, net, cfg, sampler, steps if steps is not None else cfg.train.steps,
                            monitors, params=params, frozen=frozen,
                            stop_metric=cfg.selection.criterion)


def supervised_stage(name: str, net: nn.Module, cfg: RunConfig, sampler: PatchSampler, steps: int,
                     monitors: list[Monitor], *, params: Iterable | None = None,
                     frozen: Sequence[nn.Module] = (), stop_metric: str | None = None) -> Stage:
    """The ``net`` trained on augmented labeled patches with ``train``'s optimiser and schedule
    (early stopping on ``stop_metric`` when ``train.patience`` is set)."""
    t = cfg.train
    freeze(frozen)
    optimizer = make_optimizer(net.parameters() if params is None else params, t)
    return Stage(
        name=name, modules={"net": net}, optimizers={"main": optimizer},
        objectives=[segmentation_objective(t.loss, frozen)],
        batches=sampler.sample,
        transform=lambda batch, g: augment_batch(batch, cfg.augment, g),
        steps=steps, monitors=monitors, predictor="net",
        stop_metric=stop_metric if t.patience else None, patience=t.patience,
        **train_settings(cfg, optimizer, steps),
    )


def train_settings(cfg: RunConfig, optimizer: torch.optim.Optimizer, steps: int,
                   eval_every: int | None = None) -> dict:
    """The Stage fields every stage takes from ``train``: schedules, clipping, logging
    (``eval_every``: a stage's own, else ``train.eval_every``)."""
    t = cfg.train
    return {"eval_every": eval_every or t.eval_every,
            "schedulers": {"main": make_scheduler(optimizer, t, steps)},
            "grad_clip": t.grad_clip, "log_every": t.log_every, "image_every": t.image_every,
            "average": t.weight_average}


def freeze(parts: Sequence[nn.Module]) -> None:
    """Exclude ``parts`` from training (objectives hold them in eval mode: :func:`hold_frozen`)."""
    for part in parts:
        part.requires_grad_(False)


def hold_frozen(parts: Sequence[nn.Module]) -> None:
    """Put frozen parts back in eval mode at each step: the trainer sets every module to train
    mode, and frozen batch-norm statistics must not drift."""
    for part in parts:
        part.eval()


def load_modules(path: Path, modules: dict[str, nn.Module], keep: tuple[str, ...] = ()) -> None:
    """Weights of a previous stage's checkpoint into fresh modules, read from disk.

    Reading the hand-off from disk makes ``--resume`` start a stage from exactly
    the weights an uninterrupted run used. Entries whose qualified name
    (``"<module>.<parameter>"``) starts with a prefix in ``keep`` keep their
    current values, e.g. a freshly initialised head.
    """
    payload = load_checkpoint(path)
    for key, module in modules.items():
        current = module.state_dict()
        module.load_state_dict({
            name: current[name] if f"{key}.{name}".startswith(keep) else value
            for name, value in payload["modules"][key].items()})


def rescoring_stage(net: nn.Module, cfg: RunConfig, monitors: list[Monitor]) -> Stage:
    """The ``segmentation`` stage of a method that trains nothing and scores saved
    checkpoints (:meth:`Trainer.rescore`): the run's monitors on ``net``, no optimiser."""
    require_metric(cfg.selection.criterion, "selection.criterion", "segmentation", monitors)
    return Stage(name="segmentation", modules={"net": net}, optimizers={}, objectives=[],
                 batches=lambda g: {}, steps=0, eval_every=cfg.train.eval_every,
                 monitors=monitors, predictor="net", image_every=cfg.train.image_every)


def saved_segmentation_checkpoints(run_dir: Path, key: str, stage: str = "segmentation") -> list[Path]:
    """The step checkpoints of a finished run's ``stage``, oldest first (config ``key`` named
    the run folder)."""
    paths = sorted((run_dir / "checkpoints" / stage).glob("step-*.pt"))
    if not paths:
        raise RunFolderError(f"{key}: {run_dir} holds no saved segmentation checkpoints "
                             f"(checkpoints/{stage}/step-*.pt); give a finished baseline "
                             "run folder of this pair.")
    return paths


def check_reusable(payload: dict, cfg: RunConfig, run_dir: Path, key: str) -> None:
    """A finished run's segmenter may start this run only if it saw the same source at the
    same pixel size (config ``key`` named the run folder)."""
    trained = payload.get("config", {})
    if trained.get("source") != cfg.source:
        raise ConfigError(f"{key}: {run_dir} was trained on source "
                          f"'{trained.get('source')}', not '{cfg.source}'.")
    if float(payload.get("pixel_size_nm", -1)) != cfg.data.pixel_size_nm:
        raise ConfigError(f"{key}: {run_dir} works at {payload.get('pixel_size_nm')} nm, this run "
                          f"at {cfg.data.pixel_size_nm} nm (data.pixel_size_nm).")
    if not is_unet(payload):
        raise ConfigError(f"{key}: {run_dir} holds no U-Net segmenter.")


def require_metric(metric: str, key: str, stage: str, monitors: list[Monitor]) -> None:
    """Fail before training when ``metric`` (set by config ``key``) is declared by no monitor."""
    declared = available({m for mon in monitors for m in mon.directions})
    if metric not in declared:
        raise ConfigError(f"Config key '{key}' names '{metric}', which no monitor of stage "
                          f"'{stage}' declares; available: {', '.join(sorted(declared)) or 'none'}.")


def select(result: StageResult, net: nn.Module, criterion: str) -> FitResult:
    """Load the checkpoint that ``criterion`` chose into ``net``."""
    path = result.best_path(criterion)
    payload = load_checkpoint(path)
    net.load_state_dict(payload["modules"]["net"])
    net.eval()
    info = result.best[criterion]
    return FitResult(net, path, criterion, int(info["step"]), int(info["epoch"]), [result])
