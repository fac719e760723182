"""Adaptation strategies, looked up by the method name of a run."""

from __future__ import annotations

from domadapt.errors import ConfigError


def strategy_classes() -> dict:
    """Method name -> Strategy class (imported lazily: strategies pull in torch models).

    A class may serve several method YAMLs (``aliases``), e.g. one strategy with
    two stage schedules.
    """
    from domadapt.strategies.baseline import Baseline
    from domadapt.strategies.multitask import Multitask
    from domadapt.strategies.self_training import SelfTraining
    from domadapt.strategies.ssl import Ssl
    from domadapt.strategies.style_transfer import StyleTransfer

    return {name: cls for cls in (Baseline, Multitask, SelfTraining, Ssl, StyleTransfer)
            for name in (cls.name, *getattr(cls, "aliases", ()))}


def get_strategy(name: str):
    classes = strategy_classes()
    if name not in classes:
        raise ConfigError(f"Unknown method '{name}'; valid methods: {', '.join(classes)}.")
    return classes[name]()
