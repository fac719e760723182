"""``domadapt benchmark``: every ordered pair x method x seed, resumable, then the tables.

The benchmark only schedules and aggregates: each run is an ordinary run folder
under ``<out>/runs/`` written by :func:`domadapt.pipeline.run`, whose
``metrics.json`` (written last, atomically) marks it finished. Rerunning the
same command skips finished runs and resumes unfinished ones from their last
checkpoint, so a Ctrl-C or a killed job never leaves anything that looks done.

Two reference rows per pair are never used by any method: ``source-only`` (the
baseline run of the pair) and ``oracle`` (a baseline trained on the target's
own training labels, i.e. the run ``<target>-to-<target>``: an upper bound).

Runs execute in two phases: reference and non-dependent methods first, then
the methods that (by default) start from the pair's source-only segmenter
instead of training another one: each strategy names the config key that takes
the finished run (``reuse_key``: ``style.segmenter_from``,
``self_training.segmenter_from``).
"""

from __future__ import annotations

from pathlib import Path

from domadapt.benchmark.collect import collect_rows, published_path, write_montages, write_outputs
from domadapt.benchmark.executors import execute, execute_distributed, run_grid
from domadapt.benchmark.grid import (
    ROLES,
    BenchmarkConfig,
    RunSpec,
    grid,
    is_finished,
    load_benchmark_config,
    run_config,
)

__all__ = ["ROLES", "BenchmarkConfig", "RunSpec", "benchmark", "collect_rows", "execute",
           "execute_distributed", "grid", "is_finished", "load_benchmark_config", "published_path",
           "run_config", "run_grid", "write_montages", "write_outputs"]


def benchmark(bc: BenchmarkConfig, progress: bool = True) -> dict[str, Path]:
    """Run the grid (skipping finished runs), then aggregate everything into ``<out>``."""
    out = Path(bc.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.yaml").write_text(_yaml(bc))
    outcomes = run_grid(bc, progress)
    return write_outputs(bc, collect_rows(bc, outcomes))


def _yaml(bc: BenchmarkConfig) -> str:
    import dataclasses

    import yaml

    return yaml.safe_dump(dataclasses.asdict(bc), sort_keys=False)
