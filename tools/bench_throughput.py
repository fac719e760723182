"""Training and inference throughput of the default U-Net, in one run on one machine.

Measures (1) training patches/s through the shared Trainer, with its patch
sampling and augmentation, (2) the same model, batch and loss in a bare PyTorch
loop over pre-made tensors, and prints their ratio (the trainer's overhead;
aim >= 0.9 on the CPU), then (3) tiled inference megavoxels/s and peak RAM on
a large on-disk volume (see bench_inference_memory.py).

Usage::

    python tools/bench_throughput.py                       # cpu-quick sizes
    python tools/bench_throughput.py --steps 60 --infer-shape 200 2048 2048
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference_memory import bench_tiled_inference  # noqa: E402

from domadapt.config import build_config  # noqa: E402
from domadapt.data.prepare import prepare_labeled  # noqa: E402
from domadapt.data.synthetic import make_volume  # noqa: E402
from domadapt.strategies.base import (  # noqa: E402
    Domains,
    new_segmentation_net,
    segmentation_stage,
    source_sampler,
)
from domadapt.training.losses import segmentation_loss  # noqa: E402
from domadapt.training.monitors import EvalContext, Monitor, MonitorResult  # noqa: E402
from domadapt.training.optim import make_optimizer  # noqa: E402
from domadapt.training.trainer import Trainer  # noqa: E402


def _domains(cfg) -> Domains:
    source, _ = prepare_labeled(make_volume("synth-hippocampus", "train"), cfg.data.pixel_size_nm)
    return Domains(source, None, None, None)  # type: ignore[arg-type]


class _NullMonitor(Monitor):
    """Declares the selection criterion so the stage is valid; evaluation costs nothing."""

    def __init__(self) -> None:
        self.name = "null"

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        return MonitorResult({})


def trainer_throughput(cfg, steps: int, tmp: Path) -> float:
    """Patches/s of the shared Trainer (sampling + augmentation + step), after warm-up."""
    domains = _domains(cfg)
    _NullMonitor.directions = {cfg.selection.criterion: "max"}
    timings = []
    for n in (5, 5 + steps):  # the difference removes start-up and checkpoint costs
        net = new_segmentation_net(cfg)
        stage = segmentation_stage("bench", net, cfg, domains, source_sampler(cfg, domains), n,
                                   monitors=[_NullMonitor()])
        stage.eval_every = n
        trainer = Trainer(tmp / f"t{n}", torch.device("cpu"), cfg.seed, progress=False,
                          keep_checkpoints=False)
        start = time.perf_counter()
        trainer.fit(stage)
        timings.append(time.perf_counter() - start)
    return steps * cfg.data.batch_size / (timings[1] - timings[0])


def bare_throughput(cfg, steps: int) -> float:
    """Patches/s of the same model, optimiser and loss over pre-made batches."""
    net = new_segmentation_net(cfg)
    optimizer = make_optimizer(net.parameters(), cfg.train)
    loss_fn = segmentation_loss(cfg.train.loss)
    p, b = cfg.data.patch_size, cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(b, 1, p, p, generator=g),
                (torch.rand(b, 1, p, p, generator=g) > 0.9).to(torch.uint8)) for _ in range(8)]

    def step(i):
        x, y = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        optimizer.step()

    for i in range(5):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * b / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu-quick")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--infer-shape", type=int, nargs=3, default=[16, 2048, 2048])
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(profile=args.profile)
    result = {"threads": torch.get_num_threads(), "batch": cfg.data.batch_size,
              "patch": cfg.data.patch_size}
    with tempfile.TemporaryDirectory() as tmp:
        bare = bare_throughput(cfg, args.steps)
        trainer = trainer_throughput(cfg, args.steps, Path(tmp))
        result.update(bare_patches_per_s=round(bare, 2), trainer_patches_per_s=round(trainer, 2),
                      trainer_over_bare=round(trainer / bare, 3))
        print(json.dumps(result), flush=True)
        if not args.skip_inference:
            m = cfg.model
            from domadapt.models.unet import build_unet

            net = build_unet(m.arch, m.width, m.depth, m.norm)
            inf = bench_tiled_inference(net, tuple(args.infer_shape), tmp,
                                        tile=cfg.inference.tile, overlap=cfg.inference.overlap,
                                        batch_size=cfg.inference.batch_size)
            result["inference"] = inf
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
