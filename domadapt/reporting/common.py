"""What every report part shares: column names, per-cell statistics over seeds, the grid of
pairs x methods, and atomic file writing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.data.atomic import atomic_path

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
    """``write`` into the package's one atomic writer: a killed write never leaves a half file."""
    with atomic_path(path) as tmp:
        write(tmp)
    return path
