"""Does torch.compile pay for training on this CPU? One training step, eager against compiled.

    python tools/bench_compile.py [--threads 1] [--steps 15]

Times the median training step (default U-Net, 8 x 128² patches, AdamW, BCE on logits)
eager and compiled (inductor), each in float32 and with the CPU training settings
(bfloat16 autocast and channels-last), and the compilation time (the first two steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from domadapt.models.unet import build_unet


def make_step(compiled: bool, fast: bool):
    """A closure running one training step of a fresh U-Net."""
    torch.manual_seed(0)
    net = build_unet().train()
    if fast:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    forward = torch.compile(net) if compiled else net
    x = torch.randn(8, 1, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.8).float()
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            out = forward(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| setting | median step | first two steps |")
    print("|---|---:|---:|")
    for compiled in (False, True):
        for fast in (False, True):
            step = make_step(compiled, fast)
            start = time.perf_counter()
            step()
            step()
            first = time.perf_counter() - start
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            name = f"{'compiled' if compiled else 'eager'}, {'bf16 + channels-last' if fast else 'float32'}"
            print(f"| {name} | {sorted(times)[len(times) // 2]:.3f} s | {first:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
