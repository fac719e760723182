"""Batch augmentation on the training device, driven by an explicit generator.

Geometric transforms (flips, 90-degree rotations) act on image and mask
alike; intensity transforms (brightness, contrast, gamma, noise, blur) act on
the image only and widen the range of appearances the network sees, which is
cheap insurance against the contrast and noise shifts between EM domains.
Random numbers are drawn on the CPU from the caller's generator so a resumed
run replays the same augmentations.
"""

from __future__ import annotations

import kornia
import torch

from domadapt.config import AugmentConfig


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _geometric(batch: dict[str, torch.Tensor], cfg: AugmentConfig, g: torch.Generator) -> None:
    n = batch["image"].shape[0]
    flips = torch.rand(n, 2, generator=g) < 0.5 if cfg.flip else torch.zeros(n, 2, dtype=bool)
    turns = torch.randint(4, (n,), generator=g) if cfg.rot90 else torch.zeros(n, dtype=torch.long)
    for key, tensor in list(batch.items()):
        out = []
        for i in range(n):
            t = tensor[i]
            if flips[i, 0]:
                t = t.flip(-1)
            if flips[i, 1]:
                t = t.flip(-2)
            if turns[i] and t.shape[-1] == t.shape[-2]:
                t = torch.rot90(t, int(turns[i]), dims=(-2, -1))
            out.append(t)
        batch[key] = torch.stack(out)


def _intensity(image: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    n = image.shape[0]
    shape = (n, 1, 1, 1)
    if cfg.contrast > 0:
        scale = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g).view(shape).to(image.device)
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        image = (image - mean) * scale + mean
    if cfg.brightness > 0:
        image = image + _uniform(n, -cfg.brightness, cfg.brightness, g).view(shape).to(image.device)
    if cfg.gamma > 0:
        gamma = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, g)).view(shape).to(image.device)
        image = image.clamp(0, 1.5) ** gamma
    if cfg.blur > 0:
        sigma = _uniform(n, 1e-3, cfg.blur, g).to(image.device)
        size = 2 * int(3 * cfg.blur) + 1
        image = kornia.filters.gaussian_blur2d(image, (size, size), sigma[:, None].repeat(1, 2))
    if cfg.noise > 0:
        std = _uniform(n, 0, cfg.noise, g).view(shape)
        noise = torch.randn(image.shape, generator=g) * std
        image = image + noise.to(image.device)
    return image


def augment_batch(batch: dict[str, torch.Tensor], cfg: AugmentConfig,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Augment a batch in a new dict (``image`` and optional ``mask`` keys)."""
    out = dict(batch)
    if cfg.flip or cfg.rot90:
        _geometric(out, cfg, generator)
    out["image"] = _intensity(out["image"], cfg, generator)
    return out
