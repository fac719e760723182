"""YAML mappings into validated dataclasses: reading, merging, ``--set`` parsing, and type
checks that name the key.

Generic: nothing here knows what a run is; :mod:`domadapt.config` (runs) and the
benchmark's config use it, so an unknown key or a wrong type is the same one-sentence
error everywhere.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from domadapt.errors import ConfigError


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning IO and syntax errors into one-sentence errors."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist.") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"Config file '{path}' is not valid YAML{line}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of keys to values.")
    return data


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Recursive dict merge; values of ``update`` win, nested mappings merge.

    A section set to a scalar stays an error instead of being replaced by a later
    mapping, so ``--set train=5`` can never silently reset ``train`` to its defaults.
    """
    out = dict(base)
    for key, value in update.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = merge(current, value, f"{prefix}{key}.")
        elif isinstance(value, dict) and isinstance(current, list):
            out[key] = merge_named(current, value, f"{prefix}{key}")
        elif isinstance(value, dict) and current is not None and not value:
            continue
        elif isinstance(value, dict) and current is not None:
            raise ConfigError(f"Config key '{prefix}{key}' must be a mapping, got {current!r}.")
        else:
            out[key] = value
    return out


def merge_named(items: list, update: dict[str, Any], key: str) -> list:
    """Update entries of a list of named mappings by name: ``{"pretext": {"steps": 200}}``
    changes the entry whose ``name`` is ``pretext`` and keeps the others and their order."""
    out = [dict(item) if isinstance(item, dict) else item for item in items]
    names = [item.get("name") if isinstance(item, dict) else None for item in out]
    for name, value in update.items():
        if name not in names:
            raise ConfigError(f"Config key '{key}.{name}' names no entry of '{key}'; entries: "
                              f"{', '.join(str(n) for n in names)}.")
        if not isinstance(value, dict):
            raise ConfigError(f"Config key '{key}.{name}' must be a mapping, got {value!r}.")
        i = names.index(name)
        out[i] = merge(out[i], value, f"{key}.{name}.")
    return out


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["train.steps=200", "model.norm=group"]`` into a nested mapping.

    Values are parsed as YAML scalars/lists, so ``200`` is an int, ``1e-3`` a
    float, ``[1, 2]`` a list and ``null`` None.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'.")
        value = _parse_value(raw)
        node = out
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"Config key '{section}' must be a mapping, got {node!r}.")
        node[parts[-1]] = value
    return out


def _parse_value(raw: str) -> Any:
    """A YAML scalar or list; also accepts ``1e-3`` (a string in YAML 1.1)."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value) if any(c.isdigit() for c in value) else value
        except ValueError:
            return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"Config key '{prefix.rstrip('.') or 'root'}' must be a mapping.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"Unknown config key '{prefix}{key}'; valid keys here: {', '.join(names)}."
            )
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    values = {key: _coerce(hints[key], _by_name(defaults[key], value, prefix + key), prefix + key)
              for key, value in data.items()}
    return cls(**values)


def _by_name(f: dataclasses.Field, value: Any, key: str) -> Any:
    """A mapping given for a list field updates the field's default entries by name."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not isinstance(default, list):
        return value
    plain = [dataclasses.asdict(d) if dataclasses.is_dataclass(d) else d for d in default]
    return merge_named(plain, value, key)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting only lossless cases (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"Config key '{key}' must be one of {', '.join(map(str, args))}, got {value!r}."
            )
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"Config key '{key}' must be a mapping, got {value!r}.")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{key}' must be a list, got {value!r}.")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is Any:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"Config key '{key}' must be of type {name}, got {value!r}.")



def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``old`` whose values differ in ``new``.

    Keys only ``new`` has are settings added by a later version of the package,
    whose defaults keep the earlier behaviour, so a run written before them compares equal.
    """
    out: list[str] = []
    for key in sorted(old, key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out
