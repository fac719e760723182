"""Each method against source-only on the same pair and seeds: paired differences, intervals.

Runs of one pair with the same seed share their source-only run's sampling and
initialisation, so the difference of a method's score and that run's score removes
much of the seed-to-seed spread (about ±0.1 IoU on some real pairs). The interval is
a 95 % Student t-interval over the seeds' paired differences: n seeds, n - 1 degrees
of freedom, no interval below two seeds. A method *wins* (or *loses*) on a pair only
when its interval excludes 0; anything else is "no difference shown".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from domadapt.reporting import column_of, finished_value

SOURCE_ONLY = "source-only"
PAIRED_COLUMN = "paired_diff_vs_source_only"


def t_interval(diffs: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval of paired differences (NaN bounds below two values).

    ``level`` above 0.95 is for a decision that is one of several looks at the same
    question (e.g. 1 - 0.05 / 3 after three), so repeated tests do not pass by chance.
    """
    d = np.asarray(diffs, float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    quantile = stats.t.ppf(1 - (1 - level) / 2, len(d) - 1)
    half = float(quantile * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "n < 2"
    return "win" if low > 0 else "loss" if high < 0 else "no difference shown"


def add_paired_column(rows: list[dict], metric: str) -> None:
    """Each finished method run gets ``paired_diff_vs_source_only``: its ``metric`` minus that
    of the source-only run of the same pair and seed (absent when that run is missing)."""
    reference = {(r.get("pair"), r.get("seed")): finished_value(r, metric) for r in rows
                 if column_of(r) == SOURCE_ONLY}
    for row in rows:
        if row.get("role") != "method":
            continue
        value, base = finished_value(row, metric), reference.get((row.get("pair"), row.get("seed")))
        row[PAIRED_COLUMN] = None if value is None or base is None else value - base


def paired_differences(rows: list[dict], metric: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(pair, method) -> {"mean", "low", "high", "n", "seeds", "verdict"} over matched seeds."""
    reference = {(r.get("pair"), r.get("seed")): finished_value(r, metric) for r in rows
                 if column_of(r) == SOURCE_ONLY}
    diffs: dict[tuple[str, str], list[tuple[Any, float]]] = {}
    for row in rows:
        if row.get("role") != "method":
            continue
        value, base = finished_value(row, metric), reference.get((row.get("pair"), row.get("seed")))
        if value is not None and base is not None:
            diffs.setdefault((row["pair"], column_of(row)), []).append((row.get("seed"), value - base))
    out = {}
    for key, items in diffs.items():
        mean, low, high = t_interval([d for _, d in items])
        out[key] = {"mean": mean, "low": low, "high": high, "n": len(items),
                    "seeds": sorted(s for s, _ in items), "verdict": verdict(low, high)}
    return out


def interval_cell(paired: dict | None) -> str:
    """``+0.110 [-0.017, +0.237] (2)`` for a summary table; a dash when nothing is paired."""
    if paired is None:
        return "—"
    if paired["n"] < 2:
        return f"{paired['mean']:+.3f} (1 seed, no interval)"
    text = f"{paired['mean']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}] ({paired['n']})"
    return f"**{text}**" if paired["verdict"] in ("win", "loss") else text
