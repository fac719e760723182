"""Random patch sampling from in-memory volumes, labeled or not.

All randomness comes from a caller-owned ``torch.Generator``: saving its state
in a checkpoint is enough to resume a run on exactly the same batches.
Mitochondria cover only ~5-10 % of an EM volume, so a share of labeled patches
is centred on a random foreground pixel (``foreground_prob``); without that,
most batches would teach the network little besides "background".
"""

from __future__ import annotations

import numpy as np
import torch

from domadapt.data.volume import IGNORE_LABEL

#: Foreground coordinates kept per volume for foreground-centred sampling.
MAX_FOREGROUND_COORDS = 200_000


def _pad_to(array: np.ndarray, size: int, value: float | None) -> np.ndarray:
    """Pad y/x up to ``size`` (reflect for images, a constant for masks)."""
    pad_y, pad_x = max(0, size - array.shape[1]), max(0, size - array.shape[2])
    if not pad_y and not pad_x:
        return array
    width = ((0, 0), (0, pad_y), (0, pad_x))
    if value is None:
        return np.pad(array, width, mode="reflect" if min(array.shape[1:]) > 1 else "edge")
    return np.pad(array, width, mode="constant", constant_values=value)


class PatchSampler:
    """Draws batches of square patches from one or more (Z, Y, X) volumes.

    ``images`` are float32, already normalised and resampled; ``masks`` (same
    shapes, uint8 {0, 1, IGNORE}) are optional: without them the sampler
    yields unlabeled batches. Volumes are chosen with equal probability, so
    several sources are balanced regardless of their sizes. With
    ``neighbours`` each batch also holds ``neighbour``: the same y/x window one
    section above or below (the same section in a one-section volume), for
    losses that ask neighbouring sections to agree.
    """

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray] | None,
                 patch_size: int, batch_size: int, foreground_prob: float = 0.5,
                 seed: int = 0, neighbours: bool = False) -> None:
        self.patch_size, self.batch_size, self.neighbours = patch_size, batch_size, neighbours
        self.foreground_prob = foreground_prob if masks is not None else 0.0
        self.images = [torch.from_numpy(_pad_to(np.asarray(im, np.float32), patch_size, None))
                       for im in images]
        self.masks = None
        self.fg_coords: list[torch.Tensor] = []
        if masks is not None:
            self.masks = [torch.from_numpy(_pad_to(m, patch_size, IGNORE_LABEL)) for m in masks]
            rng = np.random.default_rng(seed)
            for mask in self.masks:
                coords = np.argwhere(mask.numpy() == 1)
                if len(coords) > MAX_FOREGROUND_COORDS:
                    coords = coords[rng.choice(len(coords), MAX_FOREGROUND_COORDS, replace=False)]
                self.fg_coords.append(torch.from_numpy(coords))

    def _corner(self, vol: int, centred: bool, g: torch.Generator) -> tuple[int, int, int]:
        depth, height, width = self.images[vol].shape
        p = self.patch_size
        coords = self.fg_coords[vol] if self.fg_coords else None
        if centred and coords is not None and len(coords):
            z, y, x = coords[int(torch.randint(len(coords), (1,), generator=g))].tolist()
            y = min(max(y - p // 2, 0), height - p)
            x = min(max(x - p // 2, 0), width - p)
            return z, y, x
        z = int(torch.randint(depth, (1,), generator=g))
        y = int(torch.randint(height - p + 1, (1,), generator=g))
        x = int(torch.randint(width - p + 1, (1,), generator=g))
        return z, y, x

    def sample(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One batch: ``image`` (B, 1, P, P) float32 and, when labeled, ``mask`` uint8."""
        p = self.patch_size
        vols = torch.randint(len(self.images), (self.batch_size,), generator=generator).tolist()
        centred = (torch.rand(self.batch_size, generator=generator) < self.foreground_prob).tolist()
        images, masks, near = [], [], []
        for vol, fg in zip(vols, centred):
            z, y, x = self._corner(vol, fg, generator)
            images.append(self.images[vol][z, y:y + p, x:x + p])
            if self.masks is not None:
                masks.append(self.masks[vol][z, y:y + p, x:x + p])
            if self.neighbours:
                near.append(self.images[vol][self._neighbour(vol, z, generator), y:y + p, x:x + p])
        batch = {"image": torch.stack(images)[:, None]}
        if self.masks is not None:
            batch["mask"] = torch.stack(masks)[:, None]
        if self.neighbours:
            batch["neighbour"] = torch.stack(near)[:, None]
        return batch

    def _neighbour(self, vol: int, z: int, g: torch.Generator) -> int:
        """z - 1 or z + 1 with equal chance, kept inside the volume."""
        depth = self.images[vol].shape[0]
        if depth == 1:
            return z
        step = 1 if torch.rand(1, generator=g).item() < 0.5 else -1
        return z + step if 0 <= z + step < depth else z - step
