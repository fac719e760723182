"""Strategies are found by the strategy: key of a method YAML: a variant is one YAML file."""

from __future__ import annotations

import shutil

import pytest

from domadapt.config import build_config, configs_dir
from domadapt.errors import ConfigError
from domadapt.strategies import get_strategy, strategy_key
from domadapt.strategies.baseline import Baseline
from domadapt.strategies.self_training import SelfTraining


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A copy of the shipped presets the test may add to."""
    copy = tmp_path / "configs"
    shutil.copytree(configs_dir(), copy)
    monkeypatch.setenv("DOMADAPT_CONFIGS", str(copy))
    return copy


def test_every_shipped_method_names_a_strategy_that_exists(configs):
    for path in sorted((configs / "methods").glob("*.yaml")):
        assert get_strategy(path.stem).name == strategy_key(path.stem)
    assert isinstance(get_strategy("self_training-histogram"), SelfTraining)


def test_a_new_variant_is_one_yaml_file(configs):
    (configs / "methods" / "baseline-long.yaml").write_text(
        "strategy: baseline\ntrain:\n  steps: 1234\n")
    cfg = build_config(profile="smoke", method="baseline-long")
    assert (cfg.method, cfg.strategy, cfg.train.steps) == ("baseline-long", "baseline", 1234)
    assert isinstance(get_strategy(cfg.method, cfg.strategy), Baseline)


def test_a_wrong_strategy_key_is_one_sentence(configs):
    (configs / "methods" / "mystery.yaml").write_text("strategy: nothing_here\n")
    with pytest.raises(ConfigError, match="no module domadapt/strategies/nothing_here.py"):
        get_strategy("mystery")
    (configs / "methods" / "evil.yaml").write_text("strategy: ../os\n")
    with pytest.raises(ConfigError, match="not a module name"):
        get_strategy("evil")
    (configs / "methods" / "notone.yaml").write_text("strategy: base\n")
    with pytest.raises(ConfigError, match="defines no Strategy named 'base'"):
        get_strategy("notone")
    with pytest.raises(ConfigError, match="Unknown method 'nope'; valid methods: .*baseline"):
        get_strategy("nope")
