"""Optimisers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from domadapt.config import TrainConfig


def make_optimizer(params: Iterable, cfg: TrainConfig, lr: float | None = None,
                   kind: str | None = None) -> torch.optim.Optimizer:
    """AdamW by default (robust for small U-Nets trained from scratch); a stage's
    ``optimizer`` key may ask for Adam (the reference's later stages, no weight decay) or
    SGD with momentum 0.9. ``lr`` None: ``train.lr``."""
    lr = lr if lr is not None else cfg.lr
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   steps: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 5 % of the base rate (or constant)."""
    total = steps if steps is not None else cfg.steps
    warmup = min(cfg.warmup_steps, max(total - 1, 0))
    cosine = cfg.schedule == "cosine"
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Schedule(total, warmup, cosine))


class _Schedule:
    """Picklable schedule (a lambda would not survive checkpointing)."""

    def __init__(self, total: int, warmup: int, cosine: bool) -> None:
        self.total, self.warmup, self.cosine = total, warmup, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if not self.cosine:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))
