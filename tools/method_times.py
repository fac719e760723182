"""Wall time of every method on one pair, each on top of one reused source-only run.

    python tools/method_times.py --source lucchi --target vnc --threads 2 --out /tmp/times \
        [--methods style_transfer ssl ...] [--set KEY=VALUE ...]

Runs the pair's source-only baseline first, then each method one after the other (never
two at a time, so each is measured alone). A method whose strategy can start from a
finished source-only run (``reuse_key``, as the benchmark does) gets the baseline's
folder; its cost is its own wall time. A method that cannot reuse it trains its own
segmenter; its cost on top of source-only is its wall time minus the baseline's.
Prints a Markdown table for docs/results/performance.md. Finished runs are read, not rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from domadapt.config import build_config
from domadapt.pipeline import METRICS_FILE, run_dir_for
from domadapt.strategies import get_strategy

METHODS = ["style_transfer", "style_transfer-fda", "style_transfer-cut", "style_transfer-cyclegan",
           "ssl", "multitask", "self_training", "self_training-histogram"]


def run_method(args: argparse.Namespace, method: str, reuse: list[str]) -> tuple[Path, dict]:
    """Run (or read, when finished) one method's run; return its folder and metrics."""
    overrides = [*args.set, *reuse]
    cfg = build_config(method=method, overrides=overrides,
                       flags={"source": args.source, "target": args.target, "seed": args.seed,
                              "out": args.out})
    folder = run_dir_for(cfg)
    if not (folder / METRICS_FILE).exists():
        command = [sys.executable, "-m", "domadapt.cli", "run", "--quiet", "--source", args.source,
                   "--target", args.target, "--method", method, "--seed", str(args.seed),
                   "--threads", str(args.threads), "--out", args.out]
        for item in overrides:
            command += ["--set", item]
        subprocess.run(command, check=True)
    return folder, json.loads((folder / METRICS_FILE).read_text())


def reuse_of(method: str, baseline_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``--set`` that hands ``method`` the baseline's segmenter, if its strategy takes one."""
    strategy = get_strategy(method)
    probe = build_config(method=method, overrides=list(args.set))
    return [f"{strategy.reuse_key}={baseline_dir}"] if strategy.can_reuse(probe) else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="lucchi")
    parser.add_argument("--target", default="vnc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="method-times")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    base_dir, base = run_method(args, "baseline", [])
    rows = ["| method | reuses source-only | wall | cost on top of source-only | target IoU (slice mean) |",
            "|---|---|---:|---:|---:|",
            f"| baseline (source-only) | - | {base['wall_time_s']:.0f} s | - | "
            f"{base['target_iou_slice_mean']:.3f} |"]
    for method in args.methods:
        reuse = reuse_of(method, base_dir, args)
        _, metrics = run_method(args, method, reuse)
        wall = float(metrics["wall_time_s"])
        extra = wall if reuse else wall - float(base["wall_time_s"])
        rows.append(f"| {method} | {'yes' if reuse else 'no'} | {wall:.0f} s | {extra:.0f} s | "
                    f"{metrics['target_iou_slice_mean']:.3f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
