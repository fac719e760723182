"""The benchmark grid: composition, aggregation, resume after a kill, and executor agreement."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domadapt.benchmark import (
    BenchmarkConfig,
    RunSpec,
    benchmark,
    grid,
    is_finished,
    load_benchmark_config,
)
from domadapt.errors import ConfigError
from domadapt.reporting import read_results_csv

DATASETS = ["synth-hippocampus", "synth-cortex"]
# Tiny and single-threaded: every executor must then give bit-identical metrics.
OVERRIDES = ["train.threads=1", "data.synthetic_shape=[4,96,96]", "train.steps=10",
             "train.eval_every=5", "style.kind=histogram"]
COMPARED = ("pair", "method", "role", "seed", "status", "target_iou", "target_iou_slice_mean",
            "source_val_iou", "selected_step")


def _config(out: Path, **changes) -> BenchmarkConfig:
    bc = BenchmarkConfig(datasets=DATASETS, methods=["baseline", "style_transfer"], seeds=[0],
                         profile="smoke", out=str(out), overrides=list(OVERRIDES))
    return dataclasses.replace(bc, **changes)


def _table(path: Path) -> list[tuple]:
    rows = read_results_csv(path)
    return sorted(tuple(r.get(k) for k in COMPARED) for r in rows)


def test_pairs_key_limits_the_grid_to_the_named_pairs():
    three = ["synth-hippocampus", "synth-cortex", "synth-vnc"]
    every = {(r.source, r.target) for phase in grid(_config(Path("x"), datasets=three)) for r in phase
             if r.role != "oracle"}
    assert len(every) == 6
    chosen = _config(Path("x"), datasets=three,
                     pairs=["synth-hippocampus->synth-cortex", "synth-vnc -> synth-hippocampus"])
    runs = [r for phase in grid(chosen) for r in phase]
    assert {(r.source, r.target) for r in runs if r.role != "oracle"} == {
        ("synth-hippocampus", "synth-cortex"), ("synth-vnc", "synth-hippocampus")}
    assert {r.source for r in runs if r.role == "oracle"} == {"synth-cortex", "synth-hippocampus"}
    for bad in (["synth-hippocampus"], ["synth-cortex->synth-cortex"], ["synth-cortex->lucchi"]):
        with pytest.raises(ConfigError, match="'pairs'"):
            load_benchmark_config(datasets=three, pairs=bad)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    written = benchmark(_config(out), progress=False)
    return out, written


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="two different datasets"):
        load_benchmark_config(datasets=["lucchi"])
    with pytest.raises(ConfigError, match="Unknown method"):
        load_benchmark_config(methods=["nope"])
    with pytest.raises(ConfigError, match="Unknown dataset"):
        load_benchmark_config(datasets=["lucchi", "lucchy"])
    bad = tmp_path / "bench.yaml"
    bad.write_text("datasets: [a, b]\nworkerz: 2\n")
    with pytest.raises(ConfigError, match="workerz"):
        load_benchmark_config(bad)
    shipped = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
    for path in shipped.glob("*.yaml"):
        if path.name != "published.yaml":
            load_benchmark_config(path)


def test_run_config_is_layered_into_every_run_and_cross_domain_keys_skip_the_oracle(tmp_path):
    from domadapt.benchmark.grid import run_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train: {lr: 0.0005}\ncross_domain:\n  train: {steps: 13}\n")
    bc = load_benchmark_config(datasets=DATASETS, profile="smoke", out=str(tmp_path / "b"),
                               run_config=str(recipe))
    assert Path(bc.run_config).is_absolute()
    cross = run_config(bc, RunSpec("synth-hippocampus", "synth-cortex", "baseline", 0, "source-only"))
    oracle = run_config(bc, RunSpec("synth-cortex", "synth-cortex", "baseline", 0, "oracle"))
    assert (cross.train.lr, cross.train.steps) == (0.0005, 13)
    assert oracle.train.lr == 0.0005 and oracle.train.steps == 20  # the smoke profile's
    with pytest.raises(ConfigError, match="'run_config'"):
        load_benchmark_config(datasets=DATASETS, run_config=str(tmp_path / "missing.yaml"))


def test_grid_has_reference_rows_and_style_transfer_reuses_the_baseline(tmp_path):
    phases = grid(_config(tmp_path))
    first, second = phases
    roles = sorted((s.source, s.target, s.role) for s in first)
    assert roles == sorted([("synth-hippocampus", "synth-cortex", "source-only"),
                            ("synth-cortex", "synth-hippocampus", "source-only"),
                            ("synth-hippocampus", "synth-hippocampus", "oracle"),
                            ("synth-cortex", "synth-cortex", "oracle")])
    assert {s.method for s in second} == {"style_transfer"}
    variants = grid(_config(tmp_path, methods=["style_transfer-fda", "ssl-masked"], oracle=False))
    assert {s.method for s in variants[1]} == {"style_transfer-fda"}  # reuses the baseline too
    assert {s.method for s in variants[0]} == {"baseline", "ssl-masked"}
    for spec in second:
        (dep,) = spec.overrides
        assert dep.startswith("style.segmenter_from=")
        assert f"{spec.source}-to-{spec.target}/baseline/seed0" in dep


def test_sequential_grid_aggregates_everything(sequential):
    out, written = sequential
    rows = read_results_csv(out / "results.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert {r["method"] for r in rows} == {"source-only", "oracle", "style_transfer"}
    assert all(r["target_iou_slice_mean"] is not None and r["wall_time_s"] > 0 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "synth-hippocampus->synth-cortex" in summary and "oracle" in summary
    for name in ("heatmap.png", "montage_synth-hippocampus-to-synth-cortex.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "runs" / "synth-cortex-to-synth-cortex" / "baseline" / "seed0" / "tb").is_dir()


def test_rerun_skips_finished_runs(sequential):
    out, _ = sequential
    before = _table(out / "results.csv")
    start = time.perf_counter()
    benchmark(_config(out), progress=False)
    assert time.perf_counter() - start < 30  # nothing retrained
    assert _table(out / "results.csv") == before


def test_rerun_with_regret_adds_the_regret_table_without_retraining(sequential, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sequential[0], out)
    before = _table(out / "results.csv")
    benchmark(_config(out, regret=True), progress=False)
    rows = read_results_csv(out / "results.csv")
    assert _table(out / "results.csv") == before
    assert all(r.get("regret/morph_paper") is not None for r in rows)
    assert "No run has a selection regret" not in (out / "summary.md").read_text()


def test_killed_benchmark_resumes_to_the_same_results(sequential, tmp_path):
    reference, _ = sequential
    out = tmp_path / "killed"
    bc = _config(out)
    command = [sys.executable, "-m", "domadapt.cli", "benchmark", "--datasets", ",".join(DATASETS),
               "--methods", "baseline,style_transfer", "--profile", "smoke", "--out", str(out),
               "--quiet", *[a for o in OVERRIDES for a in ("--set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    specs = [s for phase in grid(bc) for s in phase]
    deadline = time.time() + 240
    while time.time() < deadline and not any(is_finished(bc, s) for s in specs):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-grid: the next run is in progress
    proc.wait()
    finished = [s for s in specs if is_finished(bc, s)]
    assert 1 <= len(finished) < len(specs)
    assert not (out / "results.csv").exists()  # nothing aggregated looks finished
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _table(out / "results.csv") == _table(reference / "results.csv")


def test_pool_executor_matches_the_sequential_numbers(sequential, tmp_path):
    reference, _ = sequential
    out = tmp_path / "pool"
    benchmark(_config(out, executor="pool", workers=2), progress=False)
    assert _table(out / "results.csv") == _table(reference / "results.csv")


def test_slurm_executor_through_submitit_local(sequential, tmp_path):
    pytest.importorskip("submitit")
    reference, _ = sequential
    out = tmp_path / "slurm"
    bc = _config(out, executor="slurm", methods=["baseline"], oracle=False,
                 slurm={"cluster": "local", "timeout_min": 10})
    benchmark(bc, progress=False)
    expected = [r for r in _table(reference / "results.csv") if r[2] == "source-only"]
    assert _table(out / "results.csv") == expected
    assert (out / "slurm").is_dir()


def test_slurm_jobs_with_two_tasks_train_each_run_data_parallel(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "slurm2"
    bc = _config(out, executor="slurm", methods=["baseline", "self_training"], oracle=False,
                 slurm={"cluster": "local", "timeout_min": 10, "tasks_per_node": 2})
    benchmark(bc, progress=False)
    runs = sorted(out.glob("runs/*/*/seed0/metrics.json"))
    assert len(runs) == 4  # two pairs x (source-only, self_training reusing it)
    assert all(json.loads(p.read_text())["world_size"] == 2 for p in runs)


def test_spec_labels_are_readable():
    assert RunSpec("a", "b", "ssl", 1).label == "a->b ssl seed1"
    assert RunSpec("b", "b", "baseline", 0, "oracle").label == "b->b oracle seed0"


def test_regrets_are_computed_again_so_a_newer_combined_criterion_has_its_column():
    from domadapt.benchmark.collect import regrets

    records = [{"step": 100, "morph_ours": 1.0, "target_consistency": 0.5},
               {"step": 200, "morph_ours": 2.0, "target_consistency": 0.9},
               {"step": 300, "morph_ours": 1.5, "target_consistency": 0.95}]
    report = {"records": records, "regret": {"morph_ours": {"regret": 0.3}},  # written before
              "target_scores": {"100": {"target_iou": 0.4}, "200": {"target_iou": 0.6},
                                "300": {"target_iou": 0.7}}}
    table = regrets(report)
    # ranks: morph_ours 1, 3, 2; target_consistency 3, 2, 1: sums 4, 5, 3 -> step 300, the best
    assert table["rank_morph_consistency"]["chosen_step"] == 300
    assert table["rank_morph_consistency"]["regret"] == pytest.approx(0.0)
    assert table["morph_ours"]["regret"] == pytest.approx(0.3)
    assert regrets({"regret": {"morph_ours": {"regret": 0.1}}}) == {"morph_ours": {"regret": 0.1}}
