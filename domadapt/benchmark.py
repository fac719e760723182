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

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from domadapt.config import build_config, configs_dir, from_dict, load_yaml, preset_names
from domadapt.errors import ConfigError, DomadaptError
from domadapt.pipeline import METRICS_FILE, run, run_dir_for

ROLES = ("method", "source-only", "oracle")


@dataclass
class BenchmarkConfig:
    """A grid of runs; ``configs/benchmarks/*.yaml`` hold the same keys."""

    datasets: list[str] = field(default_factory=lambda: ["lucchi", "vnc"])
    methods: list[str] = field(default_factory=lambda: ["baseline"])
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str = "cpu-quick"
    executor: Literal["local", "pool", "slurm"] = "local"
    workers: int = 1  # pool: parallel runs (one GPU each when several exist, else CPU threads split)
    out: str = "benchmark"
    overrides: list[str] = field(default_factory=list)  # --set items applied to every run
    oracle: bool = True
    source_only: bool = True
    reuse_baseline: bool = True  # methods with a reuse_key start from the pair's baseline run
    published: str | None = "published.yaml"  # in configs/benchmarks/ unless a path
    montage_slice: float = 0.5  # relative z of the target test slice shown in the montages
    regret: bool = False  # also score every checkpoint on target labels (selection regret table)
    # submitit parameters, e.g. {slurm_partition: gpu, timeout_min: 120, gpus_per_node: 1};
    # tasks_per_node > 1 trains each run data-parallel over the job's tasks (DDP);
    # cluster: local runs the jobs on this machine (how the tests exercise it).
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid."""

    source: str
    target: str
    method: str
    seed: int
    role: str = "method"
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        name = {"method": self.method, "source-only": "source-only", "oracle": "oracle"}[self.role]
        return f"{self.source}->{self.target} {name} seed{self.seed}"


def load_benchmark_config(path: str | Path | None = None, **flags) -> BenchmarkConfig:
    """YAML (optional) <- explicit flags, validated like run configs (unknown key: error)."""
    data = load_yaml(path) if path else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    bc = from_dict(BenchmarkConfig, data)
    if len(set(bc.datasets)) < 2:
        raise ConfigError("Config key 'datasets' needs at least two different datasets.")
    if not bc.methods or not bc.seeds:
        raise ConfigError("Config keys 'methods' and 'seeds' must not be empty.")
    if bc.workers < 1:
        raise ConfigError(f"Config key 'workers' must be positive, got {bc.workers}.")
    from domadapt.data.registry import dataset_names

    missing = [d for d in bc.datasets if d not in dataset_names() and not Path(d).exists()]
    if missing:
        raise ConfigError(f"Unknown dataset(s) {', '.join(missing)}; valid names: "
                          f"{', '.join(dataset_names())} (or a dataset YAML / volume path).")

    unknown = [m for m in bc.methods if m not in preset_names("methods")]
    if unknown:
        raise ConfigError(f"Unknown method(s) {', '.join(unknown)}; valid methods: "
                          f"{', '.join(preset_names('methods'))}.")
    return bc


# ---------------------------------------------------------------------- the grid


def grid(bc: BenchmarkConfig) -> list[list[RunSpec]]:
    """The runs, in dependency phases: [reference + independent methods, methods reusing those]."""
    first: list[RunSpec] = []
    second: list[RunSpec] = []
    pairs = [(s, t) for s in bc.datasets for t in bc.datasets if s != t]
    for seed in bc.seeds:
        for source, target in pairs:
            if bc.source_only or "baseline" in bc.methods:
                first.append(RunSpec(source, target, "baseline", seed, "source-only"))
            for method in bc.methods:
                if method == "baseline":
                    continue  # the source-only reference run
                (second if _reuses_baseline(method) else first).append(
                    RunSpec(source, target, method, seed, "method", _dependency(bc, source, target, seed,
                                                                               method)))
        if bc.oracle:
            first.extend(RunSpec(t, t, "baseline", seed, "oracle") for t in bc.datasets)
    return [phase for phase in (first, second) if phase]


def _reuses_baseline(method: str) -> bool:
    """Whether the method's strategy can start from a finished source-only run."""
    from domadapt.strategies import get_strategy

    return get_strategy(method).reuse_key is not None


def _dependency(bc: BenchmarkConfig, source: str, target: str, seed: int, method: str) -> tuple[str, ...]:
    from domadapt.strategies import get_strategy

    if not _reuses_baseline(method) or not bc.reuse_baseline:
        return ()
    strategy = get_strategy(method)
    probe = run_config(bc, RunSpec(source, target, method, seed))
    if not strategy.can_reuse(probe):
        return ()
    baseline = run_dir_for(run_config(bc, RunSpec(source, target, "baseline", seed, "source-only")))
    return (f"{strategy.reuse_key}={baseline}",)


def run_config(bc: BenchmarkConfig, spec: RunSpec, threads: int | None = None):
    """The RunConfig of one grid run (its folder lies under ``<out>/runs``)."""
    overrides = [*bc.overrides, *spec.overrides]
    if threads and not any(o.startswith("train.threads=") for o in overrides):
        overrides.append(f"train.threads={threads}")
    return build_config(profile=bc.profile, method=spec.method, overrides=overrides,
                        flags={"source": spec.source, "target": spec.target, "seed": spec.seed,
                               "out": str(Path(bc.out).expanduser().resolve() / "runs")})


def is_finished(bc: BenchmarkConfig, spec: RunSpec) -> bool:
    """Trained and scored, and (with ``regret``) its selection report written where it can be."""
    from domadapt.selection import target_has_labels

    folder = run_dir_for(run_config(bc, spec))
    if not (folder / METRICS_FILE).is_file():
        return False
    return not bc.regret or (folder / "selection.json").is_file() or not target_has_labels(folder)


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


# ---------------------------------------------------------------------- aggregation


def collect_rows(bc: BenchmarkConfig, outcomes: dict[RunSpec, dict] | None = None) -> list[dict]:
    """One row per grid run: every metric of its metrics.json, or its status."""
    rows = []
    for phase in grid(bc):
        for spec in phase:
            folder = run_dir_for(run_config(bc, spec))
            rows.append(_row(spec, folder, (outcomes or {}).get(spec, {})))
    return rows


def _row(spec: RunSpec, folder: Path, outcome: dict) -> dict:
    method = {"method": spec.method, "source-only": "source-only", "oracle": "oracle"}[spec.role]
    row = {"source": spec.source, "target": spec.target, "pair": f"{spec.source}->{spec.target}",
           "method": method, "role": spec.role, "seed": spec.seed, "run_dir": str(folder)}
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file():
        row["status"] = "failed" if outcome.get("status") == "failed" else "unfinished"
        return row
    metrics = json.loads(metrics_path.read_text())
    row["status"] = "finished"
    row.update({k: v for k, v in metrics.items()
                if isinstance(v, (int, float, str)) or v is None})
    row["method"], row["role"] = method, spec.role  # metrics.json says "baseline"
    selection = folder / "selection.json"
    if selection.is_file():
        regret = json.loads(selection.read_text()).get("regret", {})
        row.update({f"regret/{name}": info.get("regret") for name, info in regret.items()})
    return row


def published_path(bc: BenchmarkConfig) -> Path | None:
    if not bc.published:
        return None
    path = Path(bc.published)
    return path if path.is_file() else configs_dir() / "benchmarks" / bc.published


def write_outputs(bc: BenchmarkConfig, rows: list[dict]) -> dict[str, Path]:
    """results.csv, summary.md, heatmap, bar charts and overlay montages in ``<out>``."""
    from domadapt import reporting

    out = Path(bc.out).expanduser().resolve()
    path = published_path(bc)
    published = reporting.load_published(path) if path else None
    written = reporting.write_report(rows, out, published)
    written.update(write_montages(bc, rows, out))
    return written


def write_montages(bc: BenchmarkConfig, rows: list[dict], out: Path) -> dict[str, Path]:
    """For each pair: one fixed target test slice, ground truth and every method's prediction."""
    import tifffile

    from domadapt import reporting
    from domadapt.data.prepare import load_target
    from domadapt.data.volume import Volume

    written = {}
    for pair in dict.fromkeys(r["pair"] for r in rows if r["role"] != "oracle"):
        pair_rows = [r for r in rows if r["pair"] == pair and r["status"] == "finished"]
        if not pair_rows:
            continue
        first = pair_rows[0]
        test = load_target(run_config(bc, RunSpec(first["source"], first["target"], "baseline",
                                                  first["seed"])), "test")
        z = min(test.shape[0] - 1, int(bc.montage_slice * test.shape[0]))
        predictions = {}
        for row in pair_rows:
            if row["seed"] != first["seed"]:
                continue
            prob = Path(row["run_dir"]) / "predictions" / "target_test_prob.tif"
            if prob.is_file():
                predictions[row["method"]] = tifffile.imread(prob, key=z)
        labels = test.mask[z] if isinstance(test, Volume) else None
        name = f"montage_{first['source']}-to-{first['target']}"
        written[name] = reporting.overlay_montage(
            test.image[z], labels, predictions, out / f"{name}.png",
            title=f"{pair}, target test slice {z} (seed {first['seed']})")
    return written


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
