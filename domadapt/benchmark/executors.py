"""Running the grid: one run in any process, and the local, pool and slurm executors."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from domadapt.benchmark.grid import (
    BenchmarkConfig,
    RunSpec,
    grid,
    is_finished,
    run_config,
)
from domadapt.errors import ConfigError, DomadaptError
from domadapt.pipeline import METRICS_FILE, run, run_dir_for

# ---------------------------------------------------------------------- one run (any process)


def execute(bc: BenchmarkConfig, spec: RunSpec, threads: int | None = None) -> dict:
    """Run (or resume, or skip) one grid run; never raises for a run that fails."""
    try:
        cfg = run_config(bc, spec, threads)
        folder = run_dir_for(cfg)
        skipped = (folder / METRICS_FILE).is_file()
        if not skipped:
            run(cfg, resume=folder.exists(), progress=False)
        if bc.regret:  # also for runs finished earlier: rerun with --regret to add the table
            _regret_report(folder)
        return {"status": "finished", "skipped": skipped}
    except DomadaptError as exc:
        return {"status": "failed", "error": str(exc)}


def execute_distributed(bc: BenchmarkConfig, spec: RunSpec) -> dict:
    """One task of a multi-task SLURM job: join the job's torch.distributed group, then run."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return execute(bc, spec)


def _regret_report(folder: Path) -> None:
    from domadapt.selection import selection_report, target_has_labels, write_report

    if target_has_labels(folder) and not (folder / "selection.json").is_file():
        write_report(selection_report(folder, progress=False), folder)


def _pool_worker_init(gpu_queue) -> None:
    """Give each pool worker its own GPU (when several exist)."""
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


# ---------------------------------------------------------------------- executors


Progress = Callable[[RunSpec, dict], None]


def run_grid(bc: BenchmarkConfig, progress: bool = True) -> dict[RunSpec, dict]:
    """Execute every phase of the grid with the configured executor."""
    phases = grid(bc)
    outcomes: dict[RunSpec, dict] = {}
    total = sum(len(p) for p in phases)
    with _ProgressBar(total, progress) as bar:
        for phase in phases:
            todo = [s for s in phase if not is_finished(bc, s)]
            for spec in phase:
                if spec not in todo:
                    outcomes[spec] = {"status": "finished", "skipped": True}
                    bar.done(spec, outcomes[spec])
            runner = {"local": _run_local, "pool": _run_pool, "slurm": _run_slurm}[bc.executor]
            outcomes.update(runner(bc, todo, bar))
    return outcomes


def _run_local(bc: BenchmarkConfig, specs: Sequence[RunSpec], bar: _ProgressBar) -> dict:
    outcomes = {}
    for spec in specs:
        bar.start(spec)
        outcomes[spec] = execute(bc, spec)
        bar.done(spec, outcomes[spec])
    return outcomes


def _run_pool(bc: BenchmarkConfig, specs: Sequence[RunSpec], bar: _ProgressBar) -> dict:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if not specs:
        return {}
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited torch thread pools
    gpus = _gpu_count()
    workers = min(bc.workers, len(specs), gpus) if gpus > 1 else min(bc.workers, len(specs))
    queue = None
    if gpus > 1:
        queue = ctx.Queue()
        for gpu in range(workers):
            queue.put(gpu)
    threads = None if gpus else max(1, (os.cpu_count() or 1) // workers)
    outcomes = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_worker_init,
                             initargs=(queue,)) as pool:
        futures = {pool.submit(execute, bc, spec, threads): spec for spec in specs}
        for spec in specs[:workers]:
            bar.start(spec)
        for future in as_completed(futures):
            spec = futures[future]
            outcomes[spec] = future.result()
            bar.done(spec, outcomes[spec])
    return outcomes


def _run_slurm(bc: BenchmarkConfig, specs: Sequence[RunSpec], bar: _ProgressBar) -> dict:
    """One SLURM job per run through submitit (``slurm: {cluster: local}`` runs them locally)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("The slurm executor needs submitit: pip install 'domadapt[slurm]'.") from None
    if not specs:
        return {}
    params = dict(bc.slurm)
    cluster = params.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=Path(bc.out).expanduser().resolve() / "slurm",
                                     cluster=cluster)
    if params:
        executor.update_parameters(**params)
    # Several tasks per job (tasks_per_node, nodes): one run trained data-parallel (torchrun-like).
    tasks = int(params.get("tasks_per_node", 1)) * int(params.get("nodes", 1))
    fn = execute_distributed if tasks > 1 else execute
    jobs = [(spec, executor.submit(fn, bc, spec)) for spec in specs]
    outcomes = {}
    for spec, job in jobs:
        bar.start(spec)
        try:
            outcomes[spec] = job.results()[0]  # rank 0's outcome
        except Exception as exc:  # noqa: BLE001 - a crashed job is one failed run, not the grid
            outcomes[spec] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        bar.done(spec, outcomes[spec])
    return outcomes


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class _ProgressBar:
    """Runs done / total, the current run, elapsed and estimated remaining time (tqdm)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="benchmark", unit="run", disable=not enabled,
                        dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def start(self, spec: RunSpec) -> None:
        self.bar.set_postfix_str(spec.label)

    def done(self, spec: RunSpec, outcome: dict) -> None:
        if outcome.get("status") == "failed":
            self.bar.write(f"failed: {spec.label}: {outcome.get('error')}")
        self.bar.update(1)


