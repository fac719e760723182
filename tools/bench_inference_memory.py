"""Throughput and peak memory of tiled inference on a large on-disk volume.

Creates a uint8 (Z, Y, X) volume as a tifffile memmap in a temporary folder,
runs :func:`domadapt.inference.predict_to_tif` on it and reports megavoxels/s
and peak memory. The point is to show that memory stays bounded by one slice
whatever the depth (the target: a 200 x 2048 x 2048 volume in about 2 GB).

Memory is reported three ways, all sampled during inference only:
``peak_rss_mb`` (resident set, including the memmapped input pages the kernel
keeps resident while they are read; those are page cache and reclaimable),
``peak_anon_mb`` (anonymous memory: what the process actually allocated) and
``baseline_rss_mb`` (before inference: Python, torch, the model).

Usage::

    python tools/bench_inference_memory.py --shape 8 2048 2048 [--cpu-bf16]
    python tools/bench_inference_memory.py --shape 200 2048 2048 --model pointwise

``bench_tiled_inference`` can also be imported (e.g. by tools/bench_throughput.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np
import tifffile
import torch

from domadapt.config import ModelConfig
from domadapt.inference import predict_to_tif
from domadapt.models.unet import build_unet


class _MemorySampler(threading.Thread):
    """Polls /proc/self/status (VmRSS, RssAnon) every ``interval`` s and keeps the maxima."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_rss_kb, self.peak_anon_kb = interval, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        fields = _proc_status()
        self.peak_rss_kb = max(self.peak_rss_kb, fields.get("VmRSS", 0))
        self.peak_anon_kb = max(self.peak_anon_kb, fields.get("RssAnon", 0))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def _proc_status() -> dict[str, int]:
    """Memory fields of /proc/self/status in kB (empty off Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0])
    return fields


def make_volume(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """Write a textured uint8 volume of ``shape`` to ``path`` slice by slice via a memmap."""
    rng = np.random.default_rng(seed)
    volume = tifffile.memmap(path, shape=shape, dtype=np.uint8, photometric="minisblack")
    ramp = np.linspace(60, 180, shape[2], dtype=np.float32)
    for z in range(shape[0]):
        noise = rng.normal(0, 25, size=shape[1:]).astype(np.float32)
        volume[z] = np.clip(ramp + noise, 0, 255).astype(np.uint8)
    volume.flush()
    del volume


def bench_tiled_inference(model: torch.nn.Module | None = None,
                          shape: tuple[int, int, int] = (200, 2048, 2048),
                          tmpdir: str | Path | None = None, **predict_kwargs) -> dict:
    """Megavoxels/s and peak memory (MB) of ``predict_to_tif`` on a memmapped uint8 volume.

    ``model`` defaults to the package U-Net (width 16, depth 4) in eval mode.
    ``predict_kwargs`` go to :func:`predict_to_tif` (tile, overlap, batch_size,
    device, amp, ...); voxel and model pixel size default to 5 nm (no zoom).
    """
    model = model if model is not None else build_unet(width=16, depth=4)
    kwargs = {"voxel_size_nm": (5.0, 5.0, 5.0), "model_pixel_nm": 5.0, **predict_kwargs}
    with tempfile.TemporaryDirectory(dir=tmpdir) as folder:
        src, dst = Path(folder) / "volume.tif", Path(folder) / "pred.tif"
        make_volume(src, shape)
        image = tifffile.memmap(src, mode="r")
        baseline_kb = _proc_status().get("VmRSS", 0)
        sampler = _MemorySampler()
        sampler.start()
        start = time.perf_counter()
        try:
            predict_to_tif(model, image, dst, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            sampler.stop()
        written = tifffile.TiffFile(dst)
        assert written.series[0].shape == tuple(shape), written.series[0].shape
        written.close()
        del image
    return {
        "shape": list(shape),
        "seconds": round(seconds, 2),
        "megavoxels_per_s": round(float(np.prod(shape)) / 1e6 / seconds, 3),
        "peak_rss_mb": round(sampler.peak_rss_kb / 1024, 1),
        "peak_anon_mb": round(sampler.peak_anon_kb / 1024, 1),
        "baseline_rss_mb": round(baseline_kb / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 2048, 2048])
    parser.add_argument("--model", choices=["unet", "pointwise"], default="unet",
                        help="pointwise: a 1x1 conv, to measure the pipeline without the network")
    parser.add_argument("--width", type=int, default=16, help="U-Net width (channels)")
    parser.add_argument("--depth", type=int, default=4, help="U-Net depth (poolings)")
    parser.add_argument("--norm", choices=get_args(get_type_hints(ModelConfig)["norm"]), default="batch",
                        help="U-Net normalisation (only batch norm folds into the convolutions)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="bfloat16 on a CPU with AMX/AVX512-BF16 (the package default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = (build_unet(width=args.width, depth=args.depth, norm=args.norm) if args.model == "unet"
             else torch.nn.Conv2d(1, 1, 1))
    result = bench_tiled_inference(model, tuple(args.shape), args.tmpdir, tile=args.tile,
                                   overlap=args.overlap, batch_size=args.batch_size,
                                   device=args.device, amp=args.amp, cpu_bf16=args.cpu_bf16)
    result.update(model=args.model, width=args.width, depth=args.depth, norm=args.norm,
                  tile=args.tile, overlap=args.overlap, device=args.device,
                  torch_threads=torch.get_num_threads(), cpu_bf16=args.cpu_bf16)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
