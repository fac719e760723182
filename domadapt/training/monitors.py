"""What the trainer can watch during a stage.

A monitor evaluates the current model and returns named metrics plus optional
image grids. Each monitor *declares* the direction of the metrics it can be
selected on (``"max"`` or ``"min"``); metrics without a declared direction
are logged only and can neither stop training nor choose a checkpoint. The
direction is never implied by a metric's name.

Monitors of the target domain receive an
:class:`~domadapt.data.volume.UnlabeledVolume`, which has no mask attribute:
they cannot read target labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from domadapt.data.volume import IGNORE_LABEL, UnlabeledVolume, Volume
from domadapt.inference import predict_slice
from domadapt.metrics import segmentation_scores
from domadapt.models.inference_copy import inference_copy

Direction = str  # "max" or "min"


@dataclass
class EvalContext:
    """What a monitor may use: the stage's modules and the segmentation predictor."""

    modules: dict[str, nn.Module]
    predictor: nn.Module | None
    device: torch.device
    amp: bool
    step: int
    want_images: bool = True
    tile: int = 256
    overlap: int = 32
    batch_size: int = 8
    cpu_bf16: bool = False  # predict in bfloat16 on CPUs that compute it natively


@dataclass
class MonitorResult:
    metrics: dict[str, float]
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # tag -> (3, H, W) in [0, 1]


class Monitor:
    """Base class: subclasses set ``name``, ``directions`` and implement ``evaluate``."""

    name: str = "monitor"
    directions: dict[str, Direction] = {}

    def evaluate(self, ctx: EvalContext) -> MonitorResult:  # pragma: no cover - interface
        raise NotImplementedError


def predict_stack(ctx: EvalContext, images: np.ndarray) -> np.ndarray:
    """Probabilities (Z, Y, X) of the stage's predictor on normalised slices."""
    model = ctx.predictor
    if model is None:
        raise ValueError("This monitor needs a segmentation predictor in the stage.")
    fast = inference_copy(model, ctx.device, ctx.cpu_bf16)  # the training model stays as it is
    return np.stack([
        predict_slice(fast, np.asarray(im, np.float32), tile=ctx.tile, overlap=ctx.overlap,
                      batch_size=ctx.batch_size, device=ctx.device, amp=ctx.amp)
        for im in images
    ])


def image_grid(image: np.ndarray, prob: np.ndarray, mask: np.ndarray | None = None,
               max_side: int = 384) -> torch.Tensor:
    """Input | prediction | overlay, side by side, as a (3, H, 3W) tensor in [0, 1].

    The overlay shows the prediction in magenta and, where labels exist, the
    ground truth in green (their overlap appears white-ish).
    """
    step = max(1, int(np.ceil(max(image.shape) / max_side)))
    image, prob = image[::step, ::step], prob[::step, ::step]
    grey = np.clip(image, 0, 1)
    pred = (prob >= 0.5).astype(np.float32)
    overlay = np.stack([grey, grey, grey])
    overlay[0] = np.maximum(overlay[0], 0.8 * pred)
    overlay[2] = np.maximum(overlay[2], 0.8 * pred)
    if mask is not None:
        overlay[1] = np.maximum(overlay[1], 0.8 * (mask[::step, ::step] == 1))
    panels = [np.stack([grey] * 3), np.stack([prob] * 3), overlay]
    return torch.from_numpy(np.concatenate(panels, axis=2).astype(np.float32))


class SourceValMonitor(Monitor):
    """Loss and IoU on the held-out labeled source slices (source_val)."""

    name = "source_val"
    directions = {"source_val_iou": "max", "source_val_loss": "min"}
    metric_names = ("source_val_iou", "source_val_dice", "source_val_loss")

    def __init__(self, volume: Volume,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.volume, self.loss_fn = volume, loss_fn

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        prob = predict_stack(ctx, self.volume.image)
        scores = segmentation_scores(prob, self.volume.mask)
        logits = torch.logit(torch.from_numpy(prob), eps=1e-6)[:, None]
        loss = float(self.loss_fn(logits, torch.from_numpy(self.volume.mask)[:, None]))
        metrics = {"source_val_iou": scores["iou"], "source_val_dice": scores["dice"],
                   "source_val_loss": loss}
        images = {}
        if ctx.want_images:
            z = _most_foreground_slice(self.volume.mask)
            images["source_val"] = image_grid(self.volume.image[z], prob[z], self.volume.mask[z])
        return MonitorResult(metrics, images)


class RecordedMonitor(Monitor):
    """Another run's logged metrics at the same step, in place of evaluating again.

    A reused segmenter's checkpoints meet unchanged source validation slices, so
    the run that trained them already measured what a new evaluation would; reading
    it back halves the cost of re-scoring them. Steps the record lacks are evaluated
    by ``fallback``. Its image grids are not redrawn.
    """

    def __init__(self, fallback: Monitor, metric_names: tuple[str, ...],
                 records: list[dict]) -> None:
        self.fallback, self.metric_names = fallback, metric_names
        self.name, self.directions = fallback.name, fallback.directions
        self.records = {int(r["step"]): r for r in records
                        if all(isinstance(r.get(k), (int, float)) for k in metric_names)}

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        record = self.records.get(ctx.step)
        if record is None:
            return self.fallback.evaluate(ctx)
        return MonitorResult({k: float(record[k]) for k in self.metric_names})


def _most_foreground_slice(mask: np.ndarray) -> int:
    labeled = np.where(mask == IGNORE_LABEL, 0, mask)
    return int(labeled.reshape(len(mask), -1).sum(1).argmax())


def fixed_slice_sample(volume: UnlabeledVolume, n: int, seed: int) -> np.ndarray:
    """Indices of a fixed, seeded sample of z-slices (sorted), the same at every evaluation."""
    depth = volume.shape[0]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(depth, size=min(n, depth), replace=False))


@dataclass(frozen=True, eq=False)
class CropSample:
    """Fixed crops of fixed z-slices: ``image[z, y:y + height, x:x + width]`` for each z."""

    slices: np.ndarray
    offsets: list[tuple[int, int]]
    height: int
    width: int

    def read(self, image: np.ndarray) -> np.ndarray:
        """The crops stacked as (n, height, width) float32."""
        return np.stack([np.asarray(image[z, y:y + self.height, x:x + self.width], np.float32)
                         for z, (y, x) in zip(self.slices, self.offsets)])


def fixed_crop_sample(volume: UnlabeledVolume, n: int, crop: int, seed: int) -> CropSample:
    """A fixed, seeded crop of at most ``crop`` x ``crop`` pixels from each of ``n`` slices.

    Scoring crops keeps an evaluation's cost independent of the slice size (a
    2000x2000 target costs what a 512x512 one does). Slices no larger than the
    crop are used whole, with the same slices as :func:`fixed_slice_sample`, so
    small targets are monitored exactly as before; ``crop <= 0`` means whole slices.
    """
    slices = fixed_slice_sample(volume, n, seed)
    _, rows, cols = volume.shape
    height, width = (rows, cols) if crop <= 0 else (min(crop, rows), min(crop, cols))
    rng = np.random.default_rng([seed, 1])  # its own stream: the slice choice stays as it was
    offsets = [(int(rng.integers(0, rows - height + 1)), int(rng.integers(0, cols - width + 1)))
               for _ in slices]
    return CropSample(slices, offsets, height, width)
