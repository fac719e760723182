"""Finished run folders -> result rows -> results.csv, summary.md, figures and montages."""

from __future__ import annotations

import json
from pathlib import Path

from domadapt.benchmark.grid import (
    BenchmarkConfig,
    RunSpec,
    grid,
    run_config,
)
from domadapt.config import configs_dir
from domadapt.pipeline import METRICS_FILE, run_dir_for

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
        regret = regrets(json.loads(selection.read_text()))
        row.update({f"regret/{name}": info.get("regret") for name, info in regret.items()})
    return row


def regrets(report: dict) -> dict[str, dict]:
    """Every registered criterion's regret on a scored selection report, computed again from
    its records, so a criterion registered after the report was written (e.g. a combined
    one) has its row too; a report without target scores keeps what it stored."""
    from domadapt.criteria import with_combined
    from domadapt.selection import regret_table

    if not report.get("target_scores"):
        return report.get("regret", {})
    target_iou = {int(step): s["target_iou"] for step, s in report["target_scores"].items()}
    return regret_table(with_combined(report["records"]), target_iou)


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


