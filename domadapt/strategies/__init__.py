"""Adaptation strategies, looked up by the method name of a run."""

from __future__ import annotations

from domadapt.errors import ConfigError


def strategy_classes() -> dict:
    """Method name -> Strategy class (imported lazily: strategies pull in torch models)."""
    from domadapt.strategies.baseline import Baseline

    return {cls.name: cls for cls in (Baseline,)}


def get_strategy(name: str):
    classes = strategy_classes()
    if name not in classes:
        raise ConfigError(f"Unknown method '{name}'; valid methods: {', '.join(classes)}.")
    return classes[name]()
