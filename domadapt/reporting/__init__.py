"""Benchmark rows -> the tables and figures a paper shows (results.csv, summary.md, PNGs).

A *row* is one run of the benchmark grid (see :mod:`domadapt.benchmark`): a
plain dict with the run's pair, method, role, seed, status and scores. Only
finished runs with a value count; a missing, unfinished or failed run shows
as "—" and is listed under "Runs", so a hole in the grid is never hidden
behind a mean over fewer seeds without saying so.

Reference rows (role ``source-only`` and ``oracle``) get their own, labelled
columns: they bound what adaptation can do and no method ever reads them.
Oracle runs are per target (pair ``t->t``); their figures are shown on every
pair with that target. Published figures are quoted from a YAML file, never
recomputed, and only shown when they are on the same metric.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot
state, no display needed) and, like every file here, written atomically.
"""

from __future__ import annotations

from pathlib import Path

from domadapt.reporting.common import (
    DASH,
    DEFAULT_METRIC,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    REFERENCE_HEADERS,
    REFERENCES,
    REGRET_PREFIX,
    RESULT_COLUMNS,
    Stats,
    _half_width,
    _stats,
    _write_text,
    aggregate,
    column_of,
    finished_value,
)
from domadapt.reporting.figures import bar_charts, heatmap, overlay_montage
from domadapt.reporting.published import load_published
from domadapt.reporting.results_csv import read_results_csv, write_results_csv
from domadapt.reporting.summary import summary_markdown

__all__ = ["DASH", "DEFAULT_METRIC", "FLOAT_COLUMNS", "INT_COLUMNS", "REFERENCES", "REFERENCE_HEADERS",
           "REGRET_PREFIX", "RESULT_COLUMNS", "Stats", "_half_width", "_stats", "aggregate", "bar_charts",
           "column_of", "finished_value", "heatmap", "load_published", "overlay_montage",
           "read_results_csv", "summary_markdown", "write_report", "write_results_csv"]


def write_report(rows: list[dict], out_dir: str | Path, published: dict | str | Path | None = None,
                 metric: str = DEFAULT_METRIC) -> dict[str, Path]:
    """results.csv, summary.md, heatmap.png and bars_*.png in ``out_dir``, keyed by file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if published is not None and not isinstance(published, dict):
        published = load_published(published)
    from domadapt.paired import add_paired_column

    rows = [dict(r) for r in rows]
    add_paired_column(rows, metric)
    written = {"results.csv": write_results_csv(rows, out / "results.csv"),
               "summary.md": _write_text(summary_markdown(rows, published, metric), out / "summary.md"),
               "heatmap.png": heatmap(rows, out / "heatmap.png", metric)}
    written.update({p.name: p for p in bar_charts(rows, out, published, metric)})
    return written


