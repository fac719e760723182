"""``domadapt finetune``: how much each labeled target slice buys.

Starting from a finished run (its label-free chosen checkpoint), the model is
fine-tuned on N labeled slices of the target's *training* split and scored on
the target *test* volume, for every N and seed; a fresh model trained on the
same N slices for the same number of steps shows what the starting point was
worth. N = 0 is the starting model itself.

The N slices follow one documented, seeded rule (:func:`labeled_slices`): the
training slices holding at least ``MIN_FOREGROUND`` mitochondrion pixels, in
a permutation fixed by the seed, first N taken. The sets are nested (the 5
slices of N=5 are among the 10 of N=10), so a curve measures more labels, not
other labels. When N >= ``HOLDOUT_FROM``, a fifth of them (at least one) is
held out to choose the checkpoint (``target_val_iou``); below that the last
checkpoint is used. Every output row says which.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from domadapt.config import RunConfig, config_from_plain, save_config
from domadapt.data.atomic import atomic_path
from domadapt.data.patches import PatchSampler
from domadapt.data.prepare import load_target, prepare_labeled
from domadapt.data.transforms import intensity_stats
from domadapt.data.volume import UnlabeledVolume, Volume
from domadapt.errors import ConfigError, DataError, RunFolderError
from domadapt.inference import harmonize_image
from domadapt.markdown import table
from domadapt.models.spec import harmonizer_from_spec, is_unet, unet_from_spec
from domadapt.pipeline import checkpoint_extra, resolve_device, score_target, trainer_settings
from domadapt.strategies.base import FitResult, supervised_stage
from domadapt.training.checkpoint import checkpoint_of, load_checkpoint
from domadapt.training.losses import segmentation_loss
from domadapt.training.monitors import SourceValMonitor
from domadapt.training.trainer import Trainer

MIN_FOREGROUND = 50  # pixels (at the dataset's own resolution) for a slice to be "labeled-worthy"
HOLDOUT_FROM = 5  # N from which a fifth of the labeled slices chooses the checkpoint


@dataclass
class FinetuneSettings:
    n_labeled: list[int]
    seeds: list[int]
    steps: int = 300
    patch_size: int | None = None  # None: the starting run's data.patch_size
    lr: float | None = None  # None: the starting run's train.lr
    loss: str | None = None  # bce | dice | bce_dice; None: the starting run's
    scratch: bool = True  # also train a fresh model on the same slices
    threads: int = 0


def start_checkpoint(ref: str | Path) -> Path:
    """A run folder's selected checkpoint, or the checkpoint file given (``--from``)."""
    try:
        return checkpoint_of(ref)
    except RunFolderError as exc:
        raise RunFolderError(f"--from: {exc}") from None


def labeled_slices(mask: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The documented rule: eligible slices (>= MIN_FOREGROUND foreground), seeded order, first n."""
    foreground = (np.asarray(mask) == 1).reshape(len(mask), -1).sum(1)
    eligible = np.flatnonzero(foreground >= MIN_FOREGROUND)
    if n > len(eligible):
        raise DataError(f"--n-labeled {n} asks for more labeled slices than the target's training "
                        f"split has with mitochondria ({len(eligible)} of {len(mask)} slices).")
    order = np.random.default_rng(seed).permutation(eligible)
    return order[:n]


def split_holdout(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train slices, held-out slices choosing the checkpoint; empty below HOLDOUT_FROM)."""
    if len(chosen) < HOLDOUT_FROM:
        return chosen, chosen[:0]
    n_val = max(1, len(chosen) // 5)
    return chosen[:-n_val], chosen[-n_val:]


def finetune(start: str | Path, target: str, settings: FinetuneSettings, out: str | Path,
             data_root: str | None = None, progress: bool = True) -> Path:
    """Every (N, seed) fine-tune (and from-scratch twin); returns the results folder."""
    checkpoint = start_checkpoint(start)
    payload = load_checkpoint(checkpoint)
    if not is_unet(payload):
        raise RunFolderError(f"{checkpoint} holds no U-Net segmenter to fine-tune.")
    base = _base_config(payload, target, settings, data_root)
    train, test = _target_splits(base)
    for n in settings.n_labeled:  # fail before any training when an N is impossible
        labeled_slices(train.mask, n, settings.seeds[0])
    folder = Path(out).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    save_config(base, folder / "config.yaml")
    rows = []
    for seed in settings.seeds:
        for n in settings.n_labeled:
            for kind in (["finetuned", "scratch"] if n and settings.scratch else ["finetuned"]):
                rows.append(_one(base, payload, checkpoint, train, test, n, seed, kind, folder,
                                 settings, progress))
                _write_table(rows, folder)
    _plot(rows, folder / "label_efficiency.png", f"{base.source} model -> {target}")
    return folder


def _base_config(payload: dict, target: str, settings: FinetuneSettings,
                 data_root: str | None) -> RunConfig:
    cfg = config_from_plain(payload["config"], stored=True)
    data = replace(cfg.data, data_root=data_root or cfg.data.data_root,
                   patch_size=settings.patch_size or cfg.data.patch_size)
    train = replace(cfg.train, steps=settings.steps, lr=settings.lr or cfg.train.lr,
                    loss=settings.loss or cfg.train.loss, patience=0,
                    threads=settings.threads or cfg.train.threads,
                    warmup_steps=min(cfg.train.warmup_steps, settings.steps // 10))
    if train.loss not in ("bce", "dice", "bce_dice"):
        raise ConfigError(f"--loss must be bce, dice or bce_dice, got '{train.loss}'.")
    return replace(cfg, target=target, data=data, train=train)


def _target_splits(cfg: RunConfig):
    train = load_target(cfg, "train")
    if not isinstance(train, Volume):
        raise DataError(f"The target '{cfg.target}' has no labels in its training split; "
                        "fine-tuning needs labeled target slices.")
    test = load_target(cfg, "test")
    return train, test


def _one(base, payload, checkpoint, train: Volume, test, n, seed, kind, folder, settings, progress):
    """One fine-tune (or scratch run, or N=0 scoring) in its own run-like folder."""
    from domadapt.data.prepare import TargetTest

    start = time.perf_counter()
    cfg = replace(base, seed=seed)
    run_dir = folder / f"seed{seed}" / f"n{n:03d}-{kind}"
    chosen = labeled_slices(train.mask, n, seed)
    fit_slices, held = split_holdout(chosen)
    net, spec = _net(payload, kind, seed)  # spec: the stored harmonizer, or None
    harmonizer = None
    if spec is not None:  # built once: it harmonizes the labeled slices and the test volume
        harmonizer = harmonizer_from_spec(spec)
    device = resolve_device(cfg.train.device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    selection = "starting model" if n == 0 else "last checkpoint"
    if n:
        net = _train(cfg, net, harmonizer, spec, train, fit_slices, held, run_dir, device, progress)
        if len(held):
            selection = f"target_val_iou on {len(held)} held-out labeled slices"
    if harmonizer is not None:
        net = torch.nn.Sequential(harmonizer, net)
    labels = test.mask if isinstance(test, Volume) else None
    image = UnlabeledVolume(test.image, test.voxel_size_nm, test.name)
    stats = intensity_stats(test.image)
    fit = FitResult(net.eval(), checkpoint, selection, 0, 0, [])
    scores = score_target(cfg, fit, TargetTest(image, labels, stats), run_dir, device, progress)
    return {"kind": kind if n else "start", "n_labeled": n, "seed": seed,
            "iou": scores.get("iou"), "dice": scores.get("dice"),
            "iou_slice_mean": scores.get("iou_slice_mean"), "selection": selection,
            "slices": " ".join(map(str, sorted(chosen.tolist()))),
            "wall_time_s": round(time.perf_counter() - start, 1), "run_dir": str(run_dir)}


def _net(payload: dict, kind: str, seed: int) -> tuple[torch.nn.Module, dict | None]:
    """The U-Net to train and, for a model behind a harmonizer, its stored harmonizer spec (kept
    fixed: the labeled target slices are harmonized once, whole, as the test volume is at
    prediction). The scratch twin is a plain U-Net on the raw slices, without one."""
    spec = payload["model_spec"]
    torch.manual_seed(seed)
    net = unet_from_spec(spec)
    if kind != "finetuned":
        return net, None
    net.load_state_dict(payload["modules"][payload["predictor"]])
    return net, payload.get("harmonizer")


def _train(cfg: RunConfig, net, harmonizer: torch.nn.Module | None, harmonizer_spec: dict | None,
           train: Volume, fit_slices, held, run_dir: Path, device, progress: bool) -> torch.nn.Module:
    """Fine-tune ``net`` on the labeled slices (harmonized first when a harmonized model's
    ``harmonizer`` is given; its ``harmonizer_spec`` is stored with the checkpoints); the chosen
    weights are loaded into ``net``."""
    px = cfg.data.pixel_size_nm

    def prepared(slices: np.ndarray, name: str) -> Volume:
        volume, _ = prepare_labeled(Volume(train.image[np.sort(slices)], train.mask[np.sort(slices)],
                                               train.voxel_size_nm, f"{train.name}:{name}"), px)
        if harmonizer is not None:
            volume = replace(volume, image=harmonize_image(harmonizer, volume.image, cfg, device))
        return volume

    labeled = prepared(fit_slices, "labeled")
    monitors, criterion = [], None
    if len(held):
        val_prepared = prepared(held, "held_out")
        monitors = [_TargetValMonitor(val_prepared, segmentation_loss(cfg.train.loss))]
        criterion = "target_val_iou"
    d = cfg.data
    sampler = PatchSampler([labeled.image], [labeled.mask], d.patch_size, d.batch_size,
                           d.foreground_patch_prob, cfg.seed)
    stage = supervised_stage("finetune", net, cfg, sampler, cfg.train.steps, monitors)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    extra = checkpoint_extra(cfg)
    if harmonizer_spec is not None:  # so that `domadapt predict` harmonizes as this model was trained
        extra["harmonizer"] = harmonizer_spec
    trainer = Trainer(run_dir, device, cfg.seed, extra=extra, progress=progress,
                      **trainer_settings(cfg))
    result = trainer.fit(stage)
    if criterion:
        net.load_state_dict(load_checkpoint(result.best_path(criterion))["modules"]["net"])
    return net


class _TargetValMonitor(SourceValMonitor):
    """IoU on held-out *labeled target* slices (the fine-tune may use them: they are its labels)."""

    name = "target_val"
    directions = {"target_val_iou": "max"}

    def evaluate(self, ctx):
        result = super().evaluate(ctx)
        metrics = {k.replace("source_val", "target_val"): v for k, v in result.metrics.items()}
        return type(result)(metrics, {})


# ---------------------------------------------------------------------- table and curve


def _write_table(rows: list[dict], folder: Path) -> None:
    with atomic_path(folder / "label_efficiency.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(folder / "label_efficiency.md") as tmp:
        tmp.write_text(render_table(rows))


def _mean(rows: list[dict], kind: str, n: int, key: str) -> tuple[float, float, int] | None:
    values = [r[key] for r in rows if r["n_labeled"] == n and r["kind"] in (kind, "start")
              and r[key] is not None and (n == 0 or r["kind"] == kind)]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values)), len(values)


def render_table(rows: list[dict]) -> str:
    """Mean ± std over seeds per N: fine-tuned vs from scratch (IoU, Dice, slice-mean IoU)."""
    ns = sorted({r["n_labeled"] for r in rows})
    body = []
    for n in ns:
        cells = []
        for key in ("iou", "dice", "iou_slice_mean"):
            for kind in (("finetuned", "scratch") if key != "iou_slice_mean" else ("finetuned",)):
                stat = _mean(rows, kind, n, key) if (n or kind == "finetuned") else None
                cells.append("—" if stat is None else f"{stat[0]:.3f} ± {stat[1]:.3f} ({stat[2]})")
        selection = next(r["selection"] for r in rows if r["n_labeled"] == n)
        body.append([n, *cells, selection])
    head = ["N labeled", "fine-tuned IoU", "from scratch IoU", "fine-tuned Dice", "from scratch Dice",
            "fine-tuned slice-mean IoU", "selection"]
    return (table(head, body, "rrrrrrl") + "\n\nN = 0 is the starting model; target test volume "
            "scores; mean ± std over seeds (n).\n")


def _plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ns = sorted({r["n_labeled"] for r in rows})
    for ax, key, label in ((axes[0], "iou", "target IoU"), (axes[1], "dice", "target Dice")):
        for kind, style in (("finetuned", "o-"), ("scratch", "s--")):
            points = [(n, _mean(rows, kind, n, key)) for n in ns if n or kind == "finetuned"]
            points = [(n, s) for n, s in points if s is not None]
            if points:
                ax.errorbar([n for n, _ in points], [s[0] for _, s in points],
                            yerr=[s[1] for _, s in points], fmt=style, capsize=3,
                            label="fine-tuned from the run" if kind == "finetuned" else "from scratch")
        ax.set_xlabel("labeled target slices (N)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
