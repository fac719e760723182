"""Reconstruction tasks of the multi-task strategy and the monitor that shows them.

Three variants of the auxiliary task, all scored by MSE against the clean patch:

- ``autoencode``: reconstruct the input itself;
- ``denoise``: reconstruct the clean patch from one with Gaussian noise added;
- ``masked``: reconstruct the clean patch from one where random squares are
  replaced by the patch mean (a masked-image-modelling pretext task).

Random numbers come from the caller's CPU generator, so a resumed run replays
the same corruptions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from domadapt.training.monitors import EvalContext, Monitor, MonitorResult


def corrupt(image: torch.Tensor, variant: str, generator: torch.Generator, *,
            noise_std: float = 0.1, mask_ratio: float = 0.5, mask_patch: int = 8) -> torch.Tensor:
    """The reconstruction branch's input for a clean (B, 1, H, W) batch."""
    if variant == "autoencode":
        return image
    if variant == "denoise":
        noise = torch.randn(image.shape, generator=generator) * noise_std
        return image + noise.to(image.device, image.dtype)
    if variant == "masked":
        hidden = _square_mask(image, mask_ratio, mask_patch, generator)
        return image * (1 - hidden) + image.mean(dim=(1, 2, 3), keepdim=True) * hidden
    raise ValueError(f"Unknown reconstruction variant '{variant}'.")


def _square_mask(image: torch.Tensor, ratio: float, size: int, g: torch.Generator) -> torch.Tensor:
    """1 on hidden ``size`` x ``size`` squares (each hidden with probability ``ratio``)."""
    n, _, height, width = image.shape
    cells = (n, 1, -(-height // size), -(-width // size))
    hidden = (torch.rand(cells, generator=g) < ratio).float()
    hidden = hidden.repeat_interleave(size, 2).repeat_interleave(size, 3)[..., :height, :width]
    return hidden.to(image.device, image.dtype)


def recon_weight_at(base: float, schedule: str, step: int, steps: int) -> float:
    """Weight of the reconstruction loss at ``step`` of a stage of ``steps`` steps.

    ``linear_decay`` goes from ``base`` to 0 over the stage: the reconstruction
    task shapes the encoder early and gives way to segmentation later.
    """
    if schedule == "constant":
        return base
    if schedule == "linear_decay":
        return base * max(0.0, 1.0 - step / max(1, steps))
    raise ValueError(f"Unknown reconstruction weight schedule '{schedule}'.")


def reconstruction_mse(recon: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(recon.float(), clean.float())


def fixed_patch(image: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded (size, size) patch of a (Z, Y, X) volume, the same at every evaluation."""
    rng = np.random.default_rng(seed)
    z = int(rng.integers(image.shape[0]))
    plane = np.asarray(image[z], np.float32)
    pad = ((0, max(0, size - plane.shape[0])), (0, max(0, size - plane.shape[1])))
    if any(p for _, p in pad):
        plane = np.pad(plane, pad, mode="reflect" if min(plane.shape) > 1 else "edge")
    y = int(rng.integers(plane.shape[0] - size + 1))
    x = int(rng.integers(plane.shape[1] - size + 1))
    return plane[y:y + size, x:x + size].copy()


class ReconstructionMonitor(Monitor):
    """MSE and an (input | reconstruction [| clean]) grid for fixed source and target patches.

    Logged only (no direction): a low reconstruction error says nothing about
    segmentation quality, so it must not choose checkpoints.
    """

    name = "reconstruction"
    directions: dict[str, str] = {}

    def __init__(self, patches: dict[str, np.ndarray], variant: str, seed: int = 0,
                 **corruption: float) -> None:
        self.variant, self.corruption = variant, corruption
        g = torch.Generator().manual_seed(seed)
        self.clean = {k: torch.from_numpy(p)[None, None] for k, p in patches.items()}
        self.inputs = {k: corrupt(v, variant, g, **corruption) for k, v in self.clean.items()}

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        net, recon = ctx.modules["net"], ctx.modules["recon"]
        modes = [net.training, recon.training]
        net.eval(), recon.eval()
        metrics, images = {}, {}
        try:
            for domain, clean in self.clean.items():
                fed = self.inputs[domain].to(ctx.device)
                out = recon(net.encoder(fed)).float().cpu()
                metrics[f"recon_mse_{domain}"] = float(reconstruction_mse(out, clean))
                if ctx.want_images:
                    images[f"recon_{domain}"] = _grid(self.inputs[domain], out, clean,
                                                      self.variant != "autoencode")
        finally:
            net.train(modes[0]), recon.train(modes[1])
        return MonitorResult(metrics, images)


def _grid(fed: torch.Tensor, out: torch.Tensor, clean: torch.Tensor, show_clean: bool) -> torch.Tensor:
    """Panels side by side as a (3, H, k*W) image in [0, 1]."""
    panels = [fed, out, clean] if show_clean else [fed, out]
    row = torch.cat([p[0, 0].clamp(0, 1) for p in panels], dim=1)
    return row[None].repeat(3, 1, 1)
