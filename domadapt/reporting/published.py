"""Published figures quoted from a YAML file (never recomputed), validated key by key."""

from __future__ import annotations

import math
import re
from numbers import Real
from pathlib import Path
from typing import Any

from domadapt.errors import ConfigError
from domadapt.reporting.common import (
    DEFAULT_METRIC,
)


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


