"""results.csv: one line per run, written atomically and read back with its types."""

from __future__ import annotations

import re
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from domadapt.reporting.common import (
    FLOAT_COLUMNS,
    INT_COLUMNS,
    REGRET_PREFIX,
    RESULT_COLUMNS,
    _write_text,
)


def write_results_csv(rows: list[dict], path: str | Path) -> Path:
    """One line per run; written to a partial file beside it and renamed, so a reader never
    sees half a file."""
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


