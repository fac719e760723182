"""Render one slice of every synthetic domain side by side into docs/synthetic_domains.png.

Why: the synthetic domains stand in for real EM, so their look must be checked
by eye; every panel covers the same physical field of view, so the panels also
show how mitochondria sizes in pixels differ between voxel sizes. The cultured-cell
domains (a wider default field) also get a figure of their whole field, nucleus and
all, in docs/synthetic_cells.png.

Usage: python tools/make_synthetic_montage.py [--out docs/synthetic_domains.png]
       [--cells-out docs/synthetic_cells.png] [--seed 0]
Needs matplotlib (a tool-only dependency).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from domadapt.data.synthetic import (  # noqa: E402
    DEFAULT_FIELD_NM,
    HARDER_DOMAINS,
    default_shape,
    domain_names,
    get_domain,
    make_volume,
)

#: Physical field of view (nm) shown for every domain.
FIELD_NM = 1500.0


def slice_of(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Middle slice of a volume covering FIELD_NM in y and x at the domain's voxel size."""
    vox = get_domain(name).geometry.voxel_size_nm
    n = int(round(FIELD_NM / vox[2]))
    vol = make_volume(name, "train", shape=(16, n, n), seed=seed)
    return vol.image[8], vol.mask[8], vox


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey image with the mitochondria mask tinted red (outlined by the caller)."""
    rgb = np.repeat(image[..., None] / 255.0, 3, axis=-1)
    m = mask == 1
    rgb[m] = 0.7 * rgb[m] + 0.3 * np.array([1.0, 0.1, 0.1])
    return rgb


def whole_field(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Middle slice of a default-field volume (few sections: only one is shown)."""
    domain = get_domain(name)
    _, ny, nx = default_shape(domain)
    vol = make_volume(name, "train", shape=(4, ny, nx), seed=seed)
    return vol.image[2], vol.mask[2], domain.geometry.voxel_size_nm


def figure(names: list[str], take, title: str, out: Path, seed: int) -> None:
    """Image over mask overlay, one column per domain, saved small."""
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 7.0), squeeze=False)
    for col, name in enumerate(names):
        image, mask, vox = take(name, seed)
        axes[0, col].imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
        axes[0, col].set_title(f"{name}\n{vox[0]:g}x{vox[1]:g}x{vox[2]:g} nm, "
                               f"{image.shape[0]} px", fontsize=9)
        axes[1, col].imshow(overlay(image, mask), interpolation="lanczos")
        axes[1, col].contour(mask == 1, levels=[0.5], colors="red", linewidths=0.8)
        axes[1, col].set_title(f"mitochondria {100 * (mask == 1).mean():.1f}%", fontsize=9)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    # A 96-colour palette keeps the noisy panels legible and the PNG small (< 400 KB).
    Image.open(buffer).convert("RGB").quantize(96).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_domains.png"))
    parser.add_argument("--cells-out", type=Path, default=Path("docs/synthetic_cells.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cells = [n for n in domain_names() if get_domain(n).field_nm != DEFAULT_FIELD_NM]
    harder = {d.name for d in HARDER_DOMAINS}  # drawn by tools/harder_target.py --montage
    tissue = [n for n in domain_names() if n not in cells and n not in harder]
    figure(tissue, slice_of, f"Synthetic EM domains, {FIELD_NM / 1000:g} um field of view",
           args.out, args.seed)
    figure(cells, whole_field, "Cultured-cell domains, whole default field of view",
           args.cells_out, args.seed)


if __name__ == "__main__":
    main()
