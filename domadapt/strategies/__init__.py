"""Adaptation strategies, found by the ``strategy:`` key of a method's YAML.

A method is a YAML preset (configs/methods/<name>.yaml); its ``strategy:`` key names
the module ``domadapt/strategies/<strategy>.py`` whose Strategy subclass of that name
runs it. A variant of a strategy is therefore one YAML file, and a new strategy one
module plus one YAML; nothing here lists them. A dotted key (``my_lab.my_method``)
names a module outside the package, importable from the Python path, whose Strategy
is named after its last part: a lab's strategy needs no edit of domadapt at all.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

from domadapt.errors import ConfigError


def strategy_key(method: str) -> str:
    """The strategy a method preset names (its ``strategy:`` key; the method's own name if absent)."""
    from domadapt.config import load_preset, preset_names

    if method not in preset_names("methods"):
        raise ConfigError(f"Unknown method '{method}'; valid methods: "
                          f"{', '.join(preset_names('methods'))}.")
    return str(load_preset("methods", method).get("strategy", method))


def strategy_class(key: str) -> type:
    """The Strategy subclass named ``key`` in domadapt.strategies.<key> (or, for a dotted key,
    the one named after its last part in the module it names)."""
    from domadapt.strategies.base import Strategy

    if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", key):
        raise ConfigError(f"Strategy '{key}' is not a module name (lower-case letters, digits, _).")
    module_name = key if "." in key else f"domadapt.strategies.{key}"
    where = module_name.replace(".", "/") + ".py"
    name = key.rpartition(".")[2]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not module_name.startswith(str(exc.name)):
            raise
        raise ConfigError(f"Strategy '{key}' has no module {where} on the Python path.") from None
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Strategy) and obj.name == name:
            return obj
    raise ConfigError(f"Module {where} defines no Strategy named '{name}'.")


def get_strategy(method: str, strategy: str | None = None):
    """A new Strategy for a method preset (or for the ``strategy`` a run config resolved)."""
    return strategy_class(strategy or strategy_key(method))()


def strategy_of(plain: dict) -> type:
    """The Strategy class a config in plain form runs: its ``strategy`` key, else its method's."""
    return strategy_class(str(plain.get("strategy") or strategy_key(str(plain.get("method", "baseline")))))


@functools.cache
def option_sections() -> frozenset[str]:
    """The YAML sections of the package's own strategies: a profile may tune any of them, and
    only the running strategy reads its own."""
    sections = set()
    for info in pkgutil.iter_modules(__path__):
        try:
            cls = strategy_class(info.name)
        except ConfigError:  # helper modules (base, pretrain) hold no strategy of their name
            continue
        if cls.Options is not None:
            sections.add(cls.Options.section)
    return frozenset(sections)
