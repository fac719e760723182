"""Image corruptions for reconstruction tasks, their losses, and the monitor that shows them.

The multi-task strategy's auxiliary task has three variants, scored by MSE
against the clean patch:

- ``autoencode``: reconstruct the input itself;
- ``denoise``: reconstruct the clean patch from one with Gaussian noise added;
- ``masked``: reconstruct the clean patch from one where random squares are
  replaced by the patch mean (a masked-image-modelling pretext task).

The self-supervised strategy's pretext tasks add :func:`crappify` (noise, then
down- and up-sampling; Franco-Barranco et al. 2022) and :func:`blind_spot`
(Noise2Void masking; Krull et al. 2019), with losses restricted to the pixels
that were hidden (:func:`regression_loss`).

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
        return masked_input(image, mask_ratio, mask_patch, generator)[0]
    raise ValueError(f"Unknown reconstruction variant '{variant}'.")


def masked_input(image: torch.Tensor, ratio: float, size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(image with hidden squares set to the patch mean, 1 on the hidden pixels)."""
    hidden = _square_mask(image, ratio, size, generator)
    return image * (1 - hidden) + image.mean(dim=(1, 2, 3), keepdim=True) * hidden, hidden


def crappify(image: torch.Tensor, noise_std: float, factor: int,
             generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise, then area down-sampling by ``factor`` and bilinear up-sampling back.

    The pretext of Franco-Barranco et al. 2022: restoring such a patch needs the
    network to know what EM structures look like at full resolution, on any
    domain whose images it is shown.
    """
    noisy = corrupt(image, "denoise", generator, noise_std=noise_std)
    if factor <= 1:
        return noisy
    height, width = image.shape[-2:]
    small = F.interpolate(noisy, size=(max(1, height // factor), max(1, width // factor)),
                          mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def blind_spot(image: torch.Tensor, fraction: float, generator: torch.Generator,
               radius: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Void masking (Krull et al. 2019): (input, 1 on the masked pixels).

    A ``fraction`` of the pixels take the value of a random other pixel of their
    (2 * radius + 1)^2 neighbourhood; the loss is computed on those pixels only,
    so the network must predict them from their surroundings and cannot learn
    the identity (pixel-wise independent noise is unpredictable and averages out).
    """
    n, c, height, width = image.shape
    chosen = torch.rand(image.shape, generator=generator) < fraction
    side = 2 * radius + 1
    k = torch.randint(side * side - 1, image.shape, generator=generator)
    k = k + (k >= side * side // 2)  # skip the centre: never the pixel itself
    ys = _step_inside(torch.arange(height).view(1, 1, -1, 1), k // side - radius, height)
    xs = _step_inside(torch.arange(width).view(1, 1, 1, -1), k % side - radius, width)
    index = (ys * width + xs).flatten(2).to(image.device)
    neighbour = image.flatten(2).gather(2, index).view_as(image)
    chosen = chosen.to(image.device)
    return torch.where(chosen, neighbour, image), chosen.to(image.dtype)


def _step_inside(position: torch.Tensor, offset: torch.Tensor, size: int) -> torch.Tensor:
    """``position + offset``, or ``position - offset`` where that would leave the image."""
    moved = position + offset
    return torch.where((moved < 0) | (moved >= size), position - offset, moved)


def regression_loss(out: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor | None = None,
                    kind: str = "mse") -> torch.Tensor:
    """MSE or MAE, averaged over the pixels where ``weight`` is 1 (all pixels without one)."""
    err = out.float() - clean.float()
    err = err.abs() if kind == "mae" else err.square()
    if weight is None:
        return err.mean()
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


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
    """Error and an (input | reconstruction [| clean]) grid for fixed source and target patches.

    Logged only (no direction): a low reconstruction error says nothing about
    segmentation quality, so it must not choose checkpoints. A patch may be a
    stack (N, H, W): its metric is the mean over the stack and the grid shows the
    first. Subclasses change the corruption, the forward pass, the score and the
    panels (the self-supervised strategy's pretext monitor).
    """

    name = "reconstruction"
    directions: dict[str, str] = {}
    image_tag = "recon"

    def __init__(self, patches: dict[str, np.ndarray], variant: str, seed: int = 0,
                 **corruption: float) -> None:
        self.variant, self.corruption = variant, corruption
        g = torch.Generator().manual_seed(seed)
        self.clean = {k: _as_batch(p) for k, p in patches.items()}
        self.inputs, self.weights = {}, {}
        for key, clean in self.clean.items():
            self.inputs[key], self.weights[key] = self.corrupt(clean, g)

    def corrupt(self, clean: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(what the model is fed, weight of each pixel in the score or None for all)."""
        return corrupt(clean, self.variant, g, **self.corruption), None

    def restore(self, modules: dict[str, torch.nn.Module], fed: torch.Tensor) -> torch.Tensor:
        return modules["recon"](modules["net"].encoder(fed))

    def score(self, domain: str, out: torch.Tensor) -> dict[str, float]:
        return {f"recon_mse_{domain}": float(reconstruction_mse(out, self.clean[domain]))}

    def panels(self, domain: str, out: torch.Tensor) -> list[torch.Tensor]:
        fed, clean = self.inputs[domain], self.clean[domain]
        return [fed, out, clean] if self.variant != "autoencode" else [fed, out]

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        modes = {k: m.training for k, m in ctx.modules.items()}
        for module in ctx.modules.values():
            module.eval()
        metrics, images = {}, {}
        try:
            for domain in self.clean:
                out = self.restore(ctx.modules, self.inputs[domain].to(ctx.device)).float().cpu()
                metrics.update(self.score(domain, out))
                if ctx.want_images:
                    images[f"{self.image_tag}_{domain}"] = _grid(self.panels(domain, out))
        finally:
            for key, module in ctx.modules.items():
                module.train(modes[key])
        return MonitorResult(metrics, images)


def _as_batch(patch: np.ndarray) -> torch.Tensor:
    """A (H, W) patch or (N, H, W) stack as a float32 (N, 1, H, W) batch."""
    tensor = torch.from_numpy(np.asarray(patch, np.float32))
    return tensor.reshape(-1, 1, *tensor.shape[-2:])


def _grid(panels: list[torch.Tensor]) -> torch.Tensor:
    """The first image of each panel side by side, as a (3, H, k*W) image in [0, 1]."""
    row = torch.cat([p[0, 0].clamp(0, 1) for p in panels], dim=1)
    return row[None].repeat(3, 1, 1)
