"""summary.md: results, paired differences with source-only, selection regret, wall time, runs."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from domadapt.markdown import table
from domadapt.reporting.common import (
    DASH,
    DEFAULT_METRIC,
    REFERENCE_HEADERS,
    REGRET_PREFIX,
    Stats,
    _aggregate,
    _columns,
    _Grid,
    column_of,
)
from domadapt.reporting.published import (
    _published_for,
)


def summary_markdown(rows: list[dict], published: dict | None = None, metric: str = DEFAULT_METRIC,
                     title: str = "Domain adaptation benchmark") -> str:
    """The benchmark's summary.md: results, selection regret, wall time and the runs that are missing."""
    sections = [f"# {title}", _results_section(rows, published, metric), _paired_section(rows, metric),
                _regret_section(rows), _wall_time_section(rows), _runs_section(rows)]
    return "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _results_section(rows: list[dict], published: dict | None, metric: str) -> str:
    grid = _Grid(rows, metric)
    sources = [s for s in _published_for(published, metric)  # only those with a figure here
               if any(pair in s["results"] for pair in grid.pairs)]
    header = ["pair", *grid.methods, *(REFERENCE_HEADERS[c] for c in grid.references),
              *(f"{s['name']} [^{i}]" for i, s in enumerate(sources, 1))]
    from domadapt.paired import paired_differences  # it reads rows through this module

    paired = paired_differences(rows, metric)
    body = []
    for pair in grid.pairs:
        cells = [_stats_cell(grid.cell(pair, m), bold=paired.get((pair, m), {}).get("verdict") == "win")
                 for m in grid.methods]
        cells += [_stats_cell(grid.cell(pair, c)) for c in grid.references]
        cells += [_published_cell(s["results"].get(pair)) for s in sources]
        body.append([pair, *cells])
    lines = [f"## Target `{metric}`", "", _table(header, body), "",
             f"Metric: `{metric}` on the target test volume; cells are mean ± population std over seeds "
             f"(n finished seeds), a single seed shows its value alone; a method is in **bold** only "
             f"when it beats source-only on the same seeds (its paired 95 % interval, next "
             f"section, excludes 0); missing runs are {DASH}.", "",
             "Reference rows (source-only: the baseline trained on the source alone; oracle: trained "
             "on the target's own labels, an upper bound) are shown for comparison only and are never "
             "used by any method.", "", *_selection_line(rows)]
    lines += _published_notes(published, sources, metric)
    return "\n".join(lines)


def _paired_section(rows: list[dict], metric: str) -> str:
    """Every method minus source-only on the same pair and seed, with its 95 % t-interval."""
    from domadapt.paired import interval_cell, paired_differences

    grid, paired = _Grid(rows, metric), paired_differences(rows, metric)
    if not paired:
        return ""
    body = [[pair, *(interval_cell(paired.get((pair, m))) for m in grid.methods)] for pair in grid.pairs]
    return "\n".join([
        "## Paired with source-only", "", _table(["pair", *grid.methods], body), "",
        f"Cells: mean of (method - source-only) `{metric}` over the seeds both finished, the 95 % "
        "Student t-interval over those seeds' paired differences, and n; **bold** = the interval "
        "excludes 0 (a win or a loss). With 3 seeds the interval is wide (t = 4.30): an "
        "unbolded difference is not evidence either way. `paired_diff_vs_source_only` in "
        "results.csv holds each run's own difference."])


def _selection_line(rows: list[dict]) -> list[str]:
    """Which criteria chose the checkpoints, apart for in-domain runs, whose criterion may read
    held-out labeled slices of the very dataset they are scored on (not label-free)."""
    chosen = [r for r in rows if r.get("status") == "finished" and r.get("selection_criterion")]
    crossing = _names(r for r in chosen if r.get("source") != r.get("target"))
    in_domain = _names(r for r in chosen if r.get("source") == r.get("target"))
    lines = []
    if crossing:
        lines.append(f"Checkpoints were chosen label-free by: {crossing}.")
    if in_domain:
        lines.append(f"In-domain runs (source = target) were chosen by: {in_domain} "
                     "(`source_val_*` reads held-out labeled slices of that dataset).")
    return [" ".join(lines), ""] if lines else []


def _names(rows) -> str:
    return ", ".join(f"`{c}`" for c in sorted({str(r["selection_criterion"]) for r in rows}))


def _published_notes(published: dict | None, sources: list[dict], metric: str) -> list[str]:
    if published and not sources and published.get("sources"):
        if published.get("metric") == metric:  # e.g. the synthetic pairs: nothing was published
            return ["No published figure exists for these pairs."]
        return [f"Published figures are on `{published.get('metric')}`, not `{metric}`, "
                    "so they are not shown."]
    if not sources:
        return []
    notes = ["Published columns are quoted from the citations below, not recomputed "
                 f"({DASH}: no published figure for that pair).", ""]
    for i, source in enumerate(sources, 1):
        note = f" {source['note']}" if source.get("note") else ""
        notes.append(f"[^{i}]: {source['name']}: {source['citation']}{note}")
    return notes


def _regret_section(rows: list[dict]) -> str:
    criteria = sorted({k[len(REGRET_PREFIX):] for r in rows for k in r if k.startswith(REGRET_PREFIX)})
    head = "## Label-free selection regret"
    stats = {c: _aggregate(rows, REGRET_PREFIX + c, column_of) for c in criteria}
    columns = [c for c in _columns(rows) if any(c in s for s in stats.values())]
    if not columns:
        return f"{head}\n\nNo run has a selection regret measurement (run the benchmark with `regret: true`)."
    header = ["criterion", *(REFERENCE_HEADERS.get(c, c) for c in columns)]
    body = [[c, *(_mean_cell(stats[c].get(col)) for col in columns)] for c in criteria]
    return "\n".join([head, "", _table(header, body), "",
                      "Regret = target IoU of the best evaluated checkpoint minus that of the checkpoint "
                      "the criterion picks (0 is perfect), mean over the finished runs measured (n); target "
                      "labels are used for this measurement only, never by the criteria."])


def _wall_time_section(rows: list[dict]) -> str:
    grid = _Grid(rows, "wall_time_s")
    header = ["pair", *grid.methods, *(REFERENCE_HEADERS[c] for c in grid.references)]
    body = [[pair, *(_minutes_cell(grid.cell(pair, c)) for c in grid.columns)] for pair in grid.pairs]
    return "\n".join(["## Wall time", "", _table(header, body), "",
                      "Minutes per run, mean over finished seeds; the oracle is one run per target. "
                      "The total counts every run that reports a wall time, once.",
                      "", _total_line(rows)])


def _total_line(rows: list[dict]) -> str:
    timed = [r for r in rows if _number(r.get("wall_time_s")) is not None]
    hours, minutes = divmod(round(sum(float(r["wall_time_s"]) for r in timed) / 60), 60)
    devices = sorted({str(r["device"]) for r in timed if r.get("device")}) or ["an unrecorded device"]
    return (f"Total wall time: {hours} h {minutes} min over {len(timed)} runs on "
            f"{', '.join(devices)}.")


def _runs_section(rows: list[dict]) -> str:
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("finished", "unfinished", "failed")}
    line = ", ".join(f"{n} {status}" for status, n in counts.items())
    line = f"Runs: {line}."
    missing = [r for r in rows if r.get("status") != "finished"]
    if not missing:
        return f"## Runs\n\n{line}"
    listed = [f"- {r.get('status')}: {r.get('pair')} {column_of(r)} seed {r.get('seed')}: "
              f"`{r.get('run_dir')}`" for r in missing]
    return "\n".join(["## Runs", "", f"{line} Left out of every table above (a cell with no finished "
                      f"run shows {DASH}):", "", *listed])


def _stats_cell(stats: Stats | None, bold: bool = False) -> str:
    if stats is None:
        return DASH
    text = f"{stats['mean']:.3f}" if stats["n"] == 1 else \
        f"{stats['mean']:.3f} ± {stats['std']:.3f} ({stats['n']})"
    return f"**{text}**" if bold else text


def _published_cell(figure: dict | None) -> str:
    if figure is None:
        return DASH
    std = figure.get("std")
    return f"{figure['mean']:.3f}" if std is None else f"{figure['mean']:.3f} ± {std:.3f}"


def _mean_cell(stats: Stats | None) -> str:
    return DASH if stats is None else f"{stats['mean']:.3f} ({stats['n']})"


def _minutes_cell(stats: Stats | None) -> str:
    return DASH if stats is None else f"{stats['mean'] / 60:.1f}"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        return None
    return float(value)


def _table(header: list[str], body: list[list[str]]) -> str:
    return table(header, body, "l" + "r" * (len(header) - 1))


