"""OME-Zarr in, OME-Zarr out on a large volume: peak memory, throughput, kill and resume.

Writes a textured uint8 OME-Zarr input of ``--shape`` (default 200 x 2048 x 2048, the
issue's size), then runs ``domadapt predict`` on it into an OME-Zarr output as a user
would, in a child process under ``/usr/bin/time -v`` (its maximum resident set is the
peak RAM), kills it with SIGKILL once half the slices are recorded as finished, and runs
the same command again: the second run must predict only the missing slices. Finally a
few slices of the output are compared with the same slices predicted in this process by
the generator that also feeds tif output.

Usage::

    python tools/bench_ome_zarr.py --checkpoint RUN_DIR [--shape 200 2048 2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def make_input(path: Path, shape: tuple[int, int, int]) -> None:
    """Smooth blobs plus noise, written slice by slice (bounded memory)."""
    from scipy import ndimage

    from domadapt.data.writers import open_writer

    writer = open_writer(path, shape, np.uint8, (50.0, 10.0, 10.0), {"bench": list(shape)})
    rng = np.random.default_rng(0)
    for z in writer.pending():
        blobs = ndimage.gaussian_filter(rng.standard_normal((-(-shape[1] // 8), -(-shape[2] // 8))), 2)
        plane = np.kron(blobs, np.ones((8, 8)))[: shape[1], : shape[2]]
        plane = 128 + 60 * plane / plane.std() + rng.normal(0, 12, shape[1:])
        writer.write(z, np.clip(plane, 0, 255).astype(np.uint8))
    writer.finish()


def predict(checkpoint: str, src: Path, out: Path, threads: int, kill_at: int | None) -> dict:
    """One ``domadapt predict`` child; SIGKILL once ``kill_at`` slices are recorded."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = ["/usr/bin/time", "-v", "domadapt", "predict", "--checkpoint", checkpoint, "--input",
           str(src), "--output", str(out), "--quiet"]
    progress = out.with_name(out.name + ".progress.json")
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    while kill_at is not None and child.poll() is None:
        if progress.is_file() and len(_done(progress)) >= kill_at:
            os.killpg(child.pid, signal.SIGKILL)
            break
        time.sleep(0.5)
    _, err = child.communicate()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return {"wall_s": round(time.perf_counter() - start, 1), "returncode": child.returncode,
            "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
            "done_after": len(_done(progress)) if progress.is_file() else None}


def _done(progress: Path) -> list[int]:
    try:
        return json.loads(progress.read_text())["done"]
    except (OSError, ValueError, KeyError):
        return []


def compare(checkpoint: str, src: Path, out: Path, slices: list[int]) -> int:
    """Largest |difference| (grey levels) between the output and the tif path's generator."""
    import domadapt
    from domadapt.data.io import lazy_image, stored_voxel_size
    from domadapt.inference import _to_uint8, predict_volume

    model = domadapt.load_model(checkpoint)
    probs = predict_volume(model.net, lazy_image(src), voxel_size_nm=stored_voxel_size(src),
                           model_pixel_nm=model.pixel_size_nm, slices=slices, **model.settings)
    written = lazy_image(out)
    return max(int(np.abs(_to_uint8(p, False, 0.5).astype(int) - np.asarray(written[z], int)).max())
               for z, p in zip(slices, probs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run folder or checkpoint")
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 2048, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src, out = Path(tmp) / "in.ome.zarr", Path(tmp) / "out.ome.zarr"
        t0 = time.perf_counter()
        make_input(src, shape)
        made = round(time.perf_counter() - t0, 1)
        first = predict(args.checkpoint, src, out, args.threads, kill_at=shape[0] // 2)
        second = predict(args.checkpoint, src, out, args.threads, kill_at=None)
        voxels = np.prod(shape) * (shape[0] - first["done_after"]) / shape[0]
        report = {"shape": shape, "threads": args.threads, "input_written_s": made,
                  "killed_run": first, "resumed_run": second,
                  "resumed_slices_predicted": shape[0] - first["done_after"],
                  "resumed_mvoxel_per_s": round(voxels / 1e6 / second["wall_s"], 3),
                  "max_abs_diff_vs_tif_path": compare(args.checkpoint, src, out,
                                                      [0, shape[0] // 2, shape[0] - 1]),
                  "output_exists": out.is_dir()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
