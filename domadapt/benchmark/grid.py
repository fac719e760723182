"""The grid of a benchmark: its config, the runs (pairs x methods x seeds, references) in two
phases, each run's config and whether it is finished."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from domadapt.config import build_config, from_dict, load_yaml, preset_names
from domadapt.errors import ConfigError
from domadapt.pipeline import METRICS_FILE, run_dir_for

ROLES = ("method", "source-only", "oracle")


@dataclass
class BenchmarkConfig:
    """A grid of runs; ``configs/benchmarks/*.yaml`` hold the same keys."""

    datasets: list[str] = field(default_factory=lambda: ["lucchi", "vnc"])
    # "source->target" items: only these pairs (of the datasets above); empty: every ordered
    # pair. Lets a grid over many domains fit one session.
    pairs: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["baseline"])
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str = "cpu-quick"
    executor: Literal["local", "pool", "slurm"] = "local"
    workers: int = 1  # pool: parallel runs (one GPU each when several exist, else CPU threads split)
    out: str = "benchmark"
    overrides: list[str] = field(default_factory=list)  # --set items applied to every run
    # a run YAML layered into every run, like `domadapt run --config` (e.g. a recipe of
    # configs/recipes/); give the grid its own `out`, its runs differ from the default's
    run_config: str | None = None
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
    if bc.run_config is not None:
        if not Path(bc.run_config).expanduser().is_file():
            raise ConfigError(f"Config key 'run_config': no file {bc.run_config}.")
        bc = replace(bc, run_config=str(Path(bc.run_config).expanduser().resolve()))
    from domadapt.data.registry import dataset_names

    chosen_pairs(bc)  # a malformed or unknown pair fails before anything runs
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
    pairs = chosen_pairs(bc)
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
        if bc.oracle:  # one upper bound per target of the grid
            targets = dict.fromkeys(t for _, t in pairs)
            first.extend(RunSpec(t, t, "baseline", seed, "oracle") for t in targets)
    return [phase for phase in (first, second) if phase]


def chosen_pairs(bc: BenchmarkConfig) -> list[tuple[str, str]]:
    """The (source, target) pairs of the grid: ``pairs`` if given, else every ordered pair."""
    if not bc.pairs:
        return [(s, t) for s in bc.datasets for t in bc.datasets if s != t]
    pairs = []
    for item in bc.pairs:
        source, _, target = (part.strip() for part in item.partition("->"))
        if not source or not target or source == target or {source, target} - set(bc.datasets):
            raise ConfigError(f"Config key 'pairs' has {item!r}; each item must be 'source->target' "
                              f"with two different datasets of 'datasets' ({', '.join(bc.datasets)}).")
        pairs.append((source, target))
    return list(dict.fromkeys(pairs))


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
    return build_config(profile=bc.profile, method=spec.method, config_file=bc.run_config,
                        overrides=overrides,
                        flags={"source": spec.source, "target": spec.target, "seed": spec.seed,
                               "out": str(Path(bc.out).expanduser().resolve() / "runs")})


def is_finished(bc: BenchmarkConfig, spec: RunSpec) -> bool:
    """Trained and scored, and (with ``regret``) its selection report written where it can be."""
    from domadapt.selection import target_has_labels

    folder = run_dir_for(run_config(bc, spec))
    if not (folder / METRICS_FILE).is_file():
        return False
    return not bc.regret or (folder / "selection.json").is_file() or not target_has_labels(folder)


