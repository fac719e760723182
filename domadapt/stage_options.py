"""One vocabulary for a training stage, shared by every strategy's ``stages`` list.

``train`` describes the supervised segmentation stage that most methods have;
a method's own stages (ssl's pretext, style transfer's translator, the
self-training stage, multitask's schedule) are entries of ``<section>.stages``
with these keys. Any entry can be addressed by its name, in YAML
(``ssl: {stages: {pretext: {steps: 200}}}``) or on the command line
(``--set ssl.stages.pretext.steps=200``); a full list replaces the schedule.
A key a stage does not use is an error, so config.yaml never records a
setting that had no effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from domadapt.errors import ConfigError


@dataclass
class StageOptions:
    """How long one stage trains, how it optimises, and how its checkpoint is chosen."""

    name: str = "stage"  # checkpoints/<name>/ and tb/<name>/
    steps: int | None = None  # training steps; null: share * train.steps
    share: float = 1.0  # fraction of train.steps used when steps is null
    optimizer: Literal["adamw", "adam", "sgd"] | None = None  # null: the stage's own (see its method)
    lr: float | None = None  # null: the stage's own default (train.lr for most)
    eval_every: int | None = None  # null: train.eval_every
    criterion: str | None = None  # checkpoint choice / early stopping; null: selection.criterion
    patience: int | None = None  # evaluations without improvement; null: train.patience
    handoff: Literal["selected", "last"] = "selected"  # weights the next stage starts from
    frozen: list[str] = field(default_factory=list)  # parts kept fixed (and in eval mode)


#: Every stage key a stage may use (a multitask stage uses them all).
ALL_STAGE_KEYS = {f.name for f in fields(StageOptions)} - {"name"}
#: The stage keys of a stage that only trains (no hand-off, own criterion or frozen parts).
SIMPLE_STAGE_KEYS = {"steps", "share", "lr", "optimizer", "eval_every"}


def stage_steps(stage: StageOptions, train_steps: int) -> int:
    """The stage's length: its ``steps``, else its ``share`` of ``train.steps`` (at least 1)."""
    return stage.steps or max(1, round(stage.share * train_steps))


def stage_named(stages: Sequence[StageOptions], name: str) -> StageOptions:
    """The entry called ``name`` (validation has made sure it exists)."""
    return next(s for s in stages if s.name == name)


def validate_stages(stages: Sequence[StageOptions], section: str, keys: set[str],
                    names: tuple[str, ...] | None = None) -> None:
    """Names, ranges, and that every key set away from its default is one the method uses.

    ``keys``: the StageOptions keys the method reads besides ``name``; ``names``:
    the stage names it expects, exactly (None: any number, any names).
    """
    if not stages:
        raise ConfigError(f"Config key '{section}.stages' must list at least one stage.")
    seen = [s.name for s in stages]
    if names is not None and sorted(seen) != sorted(names):
        raise ConfigError(f"Config key '{section}.stages' must hold the stage(s) "
                          f"{', '.join(names)}, got {', '.join(seen)}.")
    defaults = StageOptions()
    for i, stage in enumerate(stages):
        key = f"{section}.stages[{i}]"
        _check_name(stage.name, seen[:i], key)
        _check_ranges(stage, key)
        for f in fields(StageOptions):
            unused = f.name != "name" and f.name not in keys
            if unused and getattr(stage, f.name) != getattr(defaults, f.name):
                raise ConfigError(f"Config key '{key}.{f.name}' has no effect on stage '{stage.name}' "
                                  f"(it takes {', '.join(sorted(keys))}).")


def _check_name(name: str, earlier: list[str], key: str) -> None:
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ConfigError(f"Config key '{key}.name' must be letters, digits, - or _, got {name!r}.")
    if name in earlier:
        raise ConfigError(f"Config key '{key}.name' repeats '{name}'.")


def _check_ranges(stage: StageOptions, key: str) -> None:
    for name in ("steps", "share", "lr", "eval_every"):
        value = getattr(stage, name)
        if value is not None and value <= 0:
            raise ConfigError(f"Config key '{key}.{name}' must be positive, got {value}.")
    if stage.patience is not None and stage.patience < 0:
        raise ConfigError(f"Config key '{key}.patience' must be >= 0, got {stage.patience}.")


# Keys of earlier versions, now stage entries: old dotted key -> (section, stage, key).
RENAMED = {
    "ssl.pretext_steps": ("ssl", "pretext", "steps"),
    "ssl.pretext_share": ("ssl", "pretext", "share"),
    "ssl.pretext_lr": ("ssl", "pretext", "lr"),
    "style.translator_steps": ("style", "translator", "steps"),
    "style.translator_share": ("style", "translator", "share"),
    "style.translator_lr": ("style", "translator", "lr"),
    "style.translator_eval_every": ("style", "translator", "eval_every"),
    "self_training.steps": ("self_training", "self_training", "steps"),
    "self_training.share": ("self_training", "self_training", "share"),
    "self_training.lr": ("self_training", "self_training", "lr"),
}


def renamed_to(dotted: str) -> str:
    """Today's name of a key of an earlier version (``ssl.stages.pretext.steps``)."""
    section, stage, key = RENAMED[dotted]
    return f"{section}.stages.{stage}.{key}"


def upgrade_renamed(plain: dict) -> dict:
    """A config mapping of an earlier version (a run folder's config.yaml) in today's keys."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in plain.items()}
    for old, (section, stage, key) in RENAMED.items():
        body = out.get(section)
        name = old.split(".", 1)[1]
        if isinstance(body, dict) and name in body:
            value = body.pop(name)
            stages = body.setdefault("stages", {})
            if isinstance(stages, dict):
                stages.setdefault(stage, {})[key] = value
    return out
