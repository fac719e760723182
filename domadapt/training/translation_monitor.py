"""Label-free monitoring of an unpaired image translator.

A translator is trained without labels and must also be *chosen* without them
(the target's labels are for the final score only). What it should achieve is
that translated images are distributed like real images of the destination
domain; the cheapest faithful check of that for grayscale EM is the intensity
distribution. ``translation_w1`` is the 1-D Wasserstein distance between the
intensities of translated held-out patches and real destination patches
(lower is better); the translator's checkpoint with the lowest value is used.
It cannot see whether structures were preserved, which is why the image grid
(input | translated | a real destination patch) is logged at every evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

from domadapt.training.monitors import EvalContext, Monitor, MonitorResult

#: Quantiles compared by :func:`wasserstein_1d`.
_QUANTILES = np.linspace(0.0, 1.0, 513)


def wasserstein_1d(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """1-D Wasserstein distance between two intensity samples (mean |quantile difference|)."""
    qa = np.quantile(np.asarray(a, np.float64).ravel(), _QUANTILES)
    qb = np.quantile(np.asarray(b, np.float64).ravel(), _QUANTILES)
    return float(np.abs(qa - qb).mean())


class TranslationMonitor(Monitor):
    """Distance of translated ``a`` patches to real ``b`` patches, and a side-by-side grid."""

    name = "translation"
    directions = {"translation_w1": "min"}

    def __init__(self, a_patches: np.ndarray, b_patches: np.ndarray, generator_key: str = "G") -> None:
        self.a = torch.from_numpy(np.asarray(a_patches, np.float32))[:, None]
        self.b = np.asarray(b_patches, np.float32)
        self.key = generator_key
        self.untranslated = wasserstein_1d(self.a.numpy(), self.b)

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        generator = ctx.modules[self.key]
        was_training = generator.training
        generator.eval()
        try:
            out = torch.cat([generator(chunk.to(ctx.device)).float().cpu()
                             for chunk in self.a.split(4)])
        finally:
            generator.train(was_training)
        metrics = {"translation_w1": wasserstein_1d(out.numpy(), self.b),
                   "translation_w1_untranslated": self.untranslated}
        images = {}
        if ctx.want_images:
            panels = [self.a[0, 0], out[0, 0], torch.from_numpy(self.b[0])]
            grey = torch.cat([p.clamp(0, 1) for p in panels], dim=1)
            images["translation"] = grey[None].expand(3, -1, -1).contiguous()
        return MonitorResult(metrics, images)
