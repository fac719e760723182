"""How much a model's prediction depends on the tiling: each tile/overlap against one whole tile.

    python tools/tiling_effect.py RUN --images '../shared/data/lucchi/Lucchi++/Test_In/*' \
        --labels '../shared/data/lucchi/Lucchi++/Test_Out/*' --pixel-nm 5 --slices 4 \
        [--tilings 256/32 256/64]

Predicts the first ``--slices`` images (``--pixel-nm``: their pixel size; they are
resampled to the model's as ``domadapt predict`` does) once with a single tile covering
the whole resampled slice (no seams) and once per tiling, and prints
for each tiling the largest probability difference (in 1/255), the share of voxels off
by more than 1/255, the share of binary flips and, with labels, the IoU of both. It
answers whether the tile size and overlap can change without changing the output.
"""

from __future__ import annotations

import argparse
import glob

import imageio.v3 as iio
import numpy as np
import torch

from domadapt.api import load_model
from domadapt.data.io import natural_key
from domadapt.inference import TILE_MULTIPLE, predict_volume
from domadapt.metrics import segmentation_scores


def read_stack(pattern: str, count: int) -> np.ndarray:
    """The first ``count`` images matching ``pattern`` in natural order (2 before 10), as
    (Z, Y, X) (first channel of RGB)."""
    images = [iio.imread(path) for path in sorted(glob.glob(pattern), key=natural_key)[:count]]
    return np.stack([im[..., 0] if im.ndim == 3 else im for im in images])


def predict(model, image: np.ndarray, tile: int, overlap: int, pixel_nm: float) -> np.ndarray:
    voxel = (pixel_nm, pixel_nm, pixel_nm)
    return np.stack(list(predict_volume(model.net, image, voxel_size_nm=voxel, tile=tile,
                                        model_pixel_nm=model.pixel_size_nm, overlap=overlap)))


def iou(prob: np.ndarray, mask: np.ndarray) -> float:
    return segmentation_scores(prob, mask)["iou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--images", required=True)
    parser.add_argument("--labels")
    parser.add_argument("--pixel-nm", type=float, required=True)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--tilings", nargs="+", default=["256/32", "256/64", "512/64"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.run)
    image = read_stack(args.images, args.slices)
    mask = read_stack(args.labels, args.slices) > 0 if args.labels else None
    side = max(image.shape[1:]) * args.pixel_nm / model.pixel_size_nm + 1
    whole = int(-(-side // TILE_MULTIPLE) * TILE_MULTIPLE)
    reference = predict(model, image, whole, 0, args.pixel_nm)
    print("| tile / overlap | max difference | voxels off > 1/255 | binary flips | IoU (one tile) |")
    print("|---|---:|---:|---:|---:|")
    for tiling in args.tilings:
        tile, overlap = (int(v) for v in tiling.split("/"))
        prob = predict(model, image, tile, overlap, args.pixel_nm)
        diff = np.abs(prob - reference)
        scores = f"{iou(prob, mask):.4f} ({iou(reference, mask):.4f})" if mask is not None else "-"
        print(f"| {tile} / {overlap} | {255 * diff.max():.0f}/255 | {100 * (diff > 1 / 255).mean():.2f} % "
              f"| {100 * ((prob > 0.5) != (reference > 0.5)).mean():.3f} % | {scores} |")


if __name__ == "__main__":
    main()
