"""Where one run's wall time goes: data preparation, training, each monitor, prediction.

Runs ``domadapt run`` with the arguments given (or reads a finished run folder)
and prints the phases recorded in its ``metrics.json`` (``timings_s``) with
their share of the wall time, as a Markdown table for docs/results/performance.md.

Usage::

    python tools/profile_run.py -- --source synth-hippocampus --target synth-cortex --out /tmp/p
    python tools/profile_run.py --run-dir runs/synth-hippocampus-to-synth-cortex/baseline/seed0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run_and_find_folder(run_args: list[str]) -> Path:
    """Run ``domadapt run`` with ``run_args``; return the run folder it reports."""
    proc = subprocess.run([sys.executable, "-m", "domadapt.cli", "run", "--quiet", *run_args],
                          capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    for line in proc.stdout.splitlines():
        if line.startswith("run folder: "):
            return Path(line.removeprefix("run folder: ").strip())
    raise SystemExit("domadapt run did not report its run folder")


def phase_table(metrics: dict) -> str:
    """Markdown rows: phase, seconds, share of the run's wall time; evaluation summed at the end."""
    wall = float(metrics["wall_time_s"])
    timings: dict[str, float] = metrics.get("timings_s", {})
    rows = ["| phase | seconds | share of wall |", "|---|---:|---:|"]
    for name, seconds in timings.items():
        rows.append(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.1f} % |")
    evaluation = sum(s for n, s in timings.items() if "/eval/" in n)
    other = wall - sum(timings.values())
    rows.append(f"| (everything else: start-up, set-up, reports) | {other:.1f} | "
                f"{100 * other / wall:.1f} % |")
    rows.append(f"| **all evaluation** | **{evaluation:.1f}** | **{100 * evaluation / wall:.1f} %** |")
    rows.append(f"| **wall time** | **{wall:.1f}** | 100 % |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="A finished run folder to report on.")
    parser.add_argument("run_args", nargs="*", help="Arguments of `domadapt run` (after --).")
    args = parser.parse_args()
    folder = args.run_dir or run_and_find_folder(args.run_args)
    metrics = json.loads((folder / "metrics.json").read_text())
    print(f"{metrics['method']}: {metrics['source']} -> {metrics['target']}, profile "
          f"{metrics['profile']}, {metrics['device']}, target IoU (slice mean) "
          f"{metrics.get('target_iou_slice_mean')}\n")
    print(phase_table(metrics))


if __name__ == "__main__":
    main()
