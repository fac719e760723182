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

import math
import os
import re
import textwrap
from collections.abc import Callable, Iterable
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.data.volume import IGNORE_LABEL
from domadapt.errors import ConfigError, DataError

#: results.csv columns, in this order; ``regret/<criterion>`` (sorted), then any other key (sorted).
RESULT_COLUMNS: list[str] = [
    "source", "target", "pair", "method", "role", "seed", "status",
    "target_iou", "target_dice", "target_iou_slice_mean", "source_val_iou",
    "selection_criterion", "selected_epoch", "selected_step", "wall_time_s",
    "device", "profile", "run_dir",
]
INT_COLUMNS = ("seed", "selected_epoch", "selected_step")
FLOAT_COLUMNS = ("target_iou", "target_dice", "target_iou_slice_mean", "source_val_iou", "wall_time_s")
REGRET_PREFIX = "regret/"
REFERENCES = ("source-only", "oracle")
REFERENCE_HEADERS = {"source-only": "source-only (ref.)", "oracle": "oracle (ref., target labels)"}
DEFAULT_METRIC = "target_iou_slice_mean"
DASH = "—"

Stats = dict[str, Any]  # {"mean", "std", "n", "values"}


# ---------------------------------------------------------------------- results.csv


def write_results_csv(rows: list[dict], path: str | Path) -> Path:
    """One line per run; written to ``<path>.partial`` and renamed, so a reader never sees half a file."""
    import csv
    import io

    columns = _csv_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return _write_text(buffer.getvalue(), path)


def read_results_csv(path: str | Path) -> list[dict]:
    """The rows of a results.csv, with numbers as numbers and empty cells as None."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _parse_cell(k, v) for k, v in line.items()} for line in csv.DictReader(f)]


def _csv_columns(rows: list[dict]) -> list[str]:
    keys = {k for row in rows for k in row} - set(RESULT_COLUMNS)
    regret = sorted(k for k in keys if k.startswith(REGRET_PREFIX))
    return [*RESULT_COLUMNS, *regret, *sorted(keys - set(regret))]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    return repr(float(value))  # shortest exact form: the round trip loses nothing


def _parse_cell(column: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    if column in INT_COLUMNS:
        return int(float(text))
    if column in FLOAT_COLUMNS or column.startswith(REGRET_PREFIX):
        return float(text)
    if column in RESULT_COLUMNS:
        return text
    return _guess(text)  # extra metrics.json keys (world_size, target_labels, ...)


def _guess(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


# ---------------------------------------------------------------------- published figures


def load_published(path: str | Path) -> dict:
    """Read and check the published-figures YAML; any problem is one ConfigError sentence.

    Returns ``{"metric", "sources": [{"name", "citation", "note", "results":
    {pair: {"mean", "std"}}}]}`` with ``note`` "" and ``std`` None when absent.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Published figures file '{path}' does not exist.")
    where = f"Published figures file '{path}'"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({_yaml_where(exc)}).") from None
    _require_mapping(data, {"metric", "sources"}, set(), where)
    if not isinstance(data["metric"], str):
        raise ConfigError(f"{where}: 'metric' must be a metric name such as '{DEFAULT_METRIC}'.")
    if not isinstance(data["sources"], list):
        raise ConfigError(f"{where}: 'sources' must be a list of {{name, citation, note, results}}.")
    sources = [_check_source(s, i, where) for i, s in enumerate(data["sources"], 1)]
    names = [s["name"] for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: source names must be unique (they are column headers).")
    return {"metric": data["metric"], "sources": sources}


def _check_source(source: Any, index: int, where: str) -> dict:
    here = f"{where}, source {index}"
    _require_mapping(source, {"name", "citation", "results"}, {"note"}, here)
    for key in ("name", "citation", "note"):
        if not isinstance(source.get(key, ""), str):
            raise ConfigError(f"{here}: '{key}' must be text.")
    if not isinstance(source["results"], dict):
        raise ConfigError(f"{here}: 'results' must map pairs like 'lucchi->vnc' to {{mean, std}}.")
    results = {}
    for pair, figure in source["results"].items():
        if not isinstance(pair, str) or not re.fullmatch(r"[^\s>]+->[^\s>]+", pair):
            raise ConfigError(f"{here}: result key {pair!r} is not a pair like 'lucchi->vnc'.")
        results[pair] = _check_figure(figure, f"{here}, result '{pair}'")
    return {"name": source["name"], "citation": " ".join(source["citation"].split()),
            "note": " ".join(source.get("note", "").split()), "results": results}


def _check_figure(figure: Any, here: str) -> dict:
    _require_mapping(figure, {"mean"}, {"std"}, here)
    for key in ("mean", "std"):
        value = figure.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{here}: '{key}' must be a non-negative number, got {value!r}.")
    std = figure.get("std")
    return {"mean": float(figure["mean"]), "std": None if std is None else float(std)}


def _require_mapping(data: Any, required: set[str], optional: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(sorted(required))}.")
    missing = sorted(required - set(data))
    unknown = sorted(set(data) - required - optional)
    if missing:
        raise ConfigError(f"{where} lacks the key(s) {', '.join(missing)}.")
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}; "
                          f"valid keys: {', '.join(sorted(required | optional))}.")


def _yaml_where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}" if mark is not None else "parse error"


def _published_for(published: dict | None, metric: str) -> list[dict]:
    """Published sources comparable with ``metric`` (another metric would mislead)."""
    if not published or published.get("metric") != metric:
        return []
    return list(published.get("sources", []))


# ---------------------------------------------------------------------- aggregation


def column_of(row: dict) -> str:
    """Table column of a row: its method, or its role for the reference rows."""
    role = row.get("role")
    return role if role in REFERENCES else str(row.get("method"))


def aggregate(rows: list[dict], metric: str = DEFAULT_METRIC) -> dict[tuple[str, str], Stats]:
    """Mean, population std, n and values (by seed) per (pair, column) over finished runs with a value.

    The column is the method, or ``source-only`` / ``oracle`` for reference rows.
    """
    return _aggregate(rows, metric, lambda r: (r.get("pair"), column_of(r)))


def _aggregate(rows: Iterable[dict], metric: str, key: Callable[[dict], Any]) -> dict[Any, Stats]:
    groups: dict[Any, list[tuple[Any, float]]] = {}
    for row in rows:
        value = finished_value(row, metric)
        if value is not None:
            groups.setdefault(key(row), []).append((row.get("seed"), value))
    return {k: _stats([v for _, v in sorted(g, key=lambda sv: _seed_order(sv[0]))])
            for k, g in groups.items()}


def finished_value(row: dict, metric: str) -> float | None:
    """The row's ``metric`` as a finite float, or None for an unfinished run or a missing value."""
    value = row.get(metric)
    if row.get("status") != "finished" or value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _seed_order(seed: Any) -> tuple[int, str]:
    return (0, f"{seed:012d}") if isinstance(seed, int) else (1, str(seed))


def _stats(values: list[float]) -> Stats:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(values), "values": values}


def _half_width(stats: Stats) -> float:
    """Half the 95 % t-interval of the mean over seeds (0 below two seeds); a published
    figure's quoted std otherwise."""
    from domadapt.paired import t_interval

    values = stats.get("values")
    if values is None:
        return float(stats.get("std") or 0.0)
    mean, low, _ = t_interval(values)
    return 0.0 if np.isnan(low) else mean - low


class _Grid:
    """Pairs x columns of one value (a metric, wall time): what every table and figure shows."""

    def __init__(self, rows: list[dict], value: str) -> None:
        self.pairs = _pairs(rows)
        self.columns = _columns(rows)
        self.methods = [c for c in self.columns if c not in REFERENCES]
        self.references = [c for c in self.columns if c in REFERENCES]
        self._cells = aggregate(rows, value)
        oracle = [r for r in rows if column_of(r) == "oracle" and r.get("source") == r.get("target")]
        self._oracle_by_target = _aggregate(oracle, value, lambda r: r.get("target"))

    def cell(self, pair: str, column: str) -> Stats | None:
        found = self._cells.get((pair, column))
        if found is None and column == "oracle":
            found = self._oracle_by_target.get(_target(pair))
        return found


def _columns(rows: list[dict]) -> list[str]:
    """Methods in order of first appearance, then the reference columns present."""
    methods = dict.fromkeys(column_of(r) for r in rows if column_of(r) not in REFERENCES)
    return [*methods, *(c for c in REFERENCES if any(column_of(r) == c for r in rows))]


def _pairs(rows: list[dict]) -> list[str]:
    """Sorted source->target pairs; a per-target oracle pair only when no pair shares its target."""
    pairs = {r.get("pair") for r in rows if r.get("source") != r.get("target") or column_of(r) != "oracle"}
    targets = {_target(p) for p in pairs}
    pairs |= {r.get("pair") for r in rows if column_of(r) == "oracle" and r.get("target") not in targets}
    return sorted(p for p in pairs if p)


def _target(pair: str) -> str:
    return pair.split("->", 1)[-1]


# ---------------------------------------------------------------------- summary.md


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
    criteria = sorted({str(r["selection_criterion"]) for r in rows
                       if r.get("status") == "finished" and r.get("selection_criterion")})
    if not criteria:
        return []
    return [f"Checkpoints were chosen label-free by: {', '.join(f'`{c}`' for c in criteria)}.", ""]


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
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|---|" + "---:|" * (len(header) - 1)
    return "\n".join([line(header), rule, *(line(r) for r in body)])


# ---------------------------------------------------------------------- figures


def heatmap(rows: list[dict], path: str | Path, metric: str = DEFAULT_METRIC) -> Path:
    """Pairs x (methods, references) of the mean metric on a fixed 0..1 scale; missing cells grey."""
    import matplotlib

    grid = _Grid(rows, metric)
    matrix = np.full((len(grid.pairs), len(grid.columns)), np.nan)
    for i, pair in enumerate(grid.pairs):
        for j, column in enumerate(grid.columns):
            if (stats := grid.cell(pair, column)) is not None:
                matrix[i, j] = stats["mean"]
    fig = _figure((1.6 + 1.3 * max(1, len(grid.columns)), 1.4 + 0.55 * max(1, len(grid.pairs))))
    ax = fig.add_subplot()
    if matrix.size == 0:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        stats = grid.cell(grid.pairs[i], grid.columns[j])
        half = _half_width(stats) if stats is not None else 0.0
        text = DASH if np.isnan(value) else f"{value:.3f}" + (f"\n±{half:.3f}" if half else "")
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="black" if np.isnan(value) or value > 0.6 else "white")
    ax.set_xticks(range(len(grid.columns)), [_tick_label(c) for c in grid.columns], fontsize=8)
    ax.set_yticks(range(len(grid.pairs)), grid.pairs, fontsize=8)
    if grid.methods and grid.references:
        ax.axvline(len(grid.methods) - 0.5, color="white", linewidth=3)
    ax.set_title(f"{metric} on the target test set, mean over seeds ± 95 % t-interval", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    return _save(fig, path)


def bar_charts(rows: list[dict], folder: str | Path, published: dict | None = None,
               metric: str = DEFAULT_METRIC) -> list[Path]:
    """One chart per pair: methods, reference rows and hatched published figures; error bars are
    the 95 % t-interval of the mean over seeds (published figures: their quoted std)."""
    grid = _Grid(rows, metric)
    sources = [s for s in _published_for(published, metric)  # only those with a figure here
               if any(pair in s["results"] for pair in grid.pairs)]
    return [_bar_chart(grid, pair, sources, metric, Path(folder) / f"bars_{_pair_slug(pair)}.png")
            for pair in grid.pairs]


def _bar_chart(grid: _Grid, pair: str, sources: list[dict], metric: str, path: Path) -> Path:
    bars = [(c, grid.cell(pair, c), "method" if c in grid.methods else "reference") for c in grid.columns]
    bars += [(s["name"], s["results"][pair], "published") for s in sources if pair in s["results"]]
    style = {"method": dict(color="tab:blue"), "reference": dict(color="0.6"),
             "published": dict(facecolor="white", edgecolor="0.3", hatch="//")}
    fig = _figure((1.2 + 0.9 * max(1, len(bars)), 3.6))
    ax = fig.add_subplot()
    labelled: set[str] = set()
    for x, (_, stats, kind) in enumerate(bars):
        if stats is None:
            ax.text(x, 0.02, "n/a", ha="center", fontsize=8)
            continue
        label = None if kind in labelled else {"method": "method", "reference": "reference (not used)",
                                               "published": "published"}[kind]
        labelled.add(kind)
        half = _half_width(stats)
        ax.bar(x, stats["mean"], yerr=half, capsize=3, label=label, **style[kind])
        ax.text(x, stats["mean"] + half + 0.02, f"{stats['mean']:.3f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(bars)), [_bar_label(name, stats, kind) for name, stats, kind in bars],
                  fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title(pair, fontsize=9)
    if labelled:
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _bar_label(name: str, stats: dict | None, kind: str) -> str:
    label = "\n".join(textwrap.wrap(name, 22))
    return f"{label}\n(n={stats['n']})" if kind != "published" and stats else label


def _tick_label(column: str) -> str:
    return {"source-only": "source-only\n(ref.)", "oracle": "oracle\n(ref.)"}.get(column, column)


def _pair_slug(pair: str) -> str:
    source, _, target = pair.partition("->")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{source}-to-{target}")


def overlay_montage(image: np.ndarray, labels: np.ndarray | None, predictions: dict[str, np.ndarray],
                    path: str | Path, title: str = "") -> Path:
    """One target slice: the image, then each method's prediction (magenta) with the truth outline (green).

    Predictions are probabilities in [0, 1] or uint8 0..255 (as the predicted tifs
    store them), thresholded at 0.5; label pixels equal to 255 are ignored.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"The montage needs one 2-D slice, got an image of shape {image.shape}.")
    for name, array in [("labels", labels), *predictions.items()]:
        if array is not None and np.shape(array) != image.shape:
            raise DataError(f"The montage's {name} has shape {np.shape(array)}, the image {image.shape}.")
    truth = None if labels is None else (np.asarray(labels) > 0) & (np.asarray(labels) != IGNORE_LABEL)
    panels = [("image" if truth is None else "image + ground truth", None),
              *((name, _foreground(pred)) for name, pred in predictions.items())]
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    aspect = image.shape[0] / max(1, image.shape[1])
    fig = _figure((3.0 * ncols, 3.0 * aspect * nrows + 0.6))
    low, high = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    for k, (name, mask) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        _overlay_panel(ax, image, (low, max(high, low + 1e-6)), truth, mask)
        ax.set_title(name, fontsize=9)
    legend = "green: ground truth outline, magenta: prediction (p >= 0.5)"
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=9)
    return _save(fig, path)


def _foreground(prediction: np.ndarray) -> np.ndarray:
    prediction = np.asarray(prediction)
    if prediction.dtype == bool:
        return prediction
    if np.issubdtype(prediction.dtype, np.integer):
        return prediction >= 128  # round(p * 255) >= 128  <=>  p >= 0.5
    return prediction >= 0.5


def _overlay_panel(ax, image: np.ndarray, limits: tuple[float, float], truth: np.ndarray | None,
                   mask: np.ndarray | None) -> None:
    ax.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1], interpolation="nearest")
    if mask is not None:
        rgba = np.zeros((*mask.shape, 4))
        rgba[mask] = (1.0, 0.0, 1.0, 0.45)
        ax.imshow(rgba, interpolation="nearest")
    if truth is not None and truth.any() and not truth.all():
        ax.contour(truth.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    ax.set_axis_off()


# ---------------------------------------------------------------------- the report


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


# ---------------------------------------------------------------------- files


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    return _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def _write_text(text: str, path: str | Path) -> Path:
    return _atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write to ``<path>.partial`` then rename: a killed write never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
