"""Strategies are found by the strategy: key of a method YAML: a variant is one YAML file."""

from __future__ import annotations

import shutil

import pytest
import yaml

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
    with pytest.raises(ConfigError, match="no module domadapt/strategies/nothing_here.py on the Python path"):
        get_strategy("mystery")
    (configs / "methods" / "evil.yaml").write_text("strategy: ../os\n")
    with pytest.raises(ConfigError, match="not a module name"):
        get_strategy("evil")
    (configs / "methods" / "notone.yaml").write_text("strategy: base\n")
    with pytest.raises(ConfigError, match="defines no Strategy named 'base'"):
        get_strategy("notone")
    with pytest.raises(ConfigError, match="Unknown method 'nope'; valid methods: .*baseline"):
        get_strategy("nope")


def _readme_example() -> str:
    """The example strategy of the README's "A new strategy" paragraph, as written there."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("**A new strategy is one module and one YAML**"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


def test_the_readme_example_strategy_runs_through_run_and_benchmark(configs, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from domadapt.cli import cli

    lab = tmp_path / "lab" / "my_lab"
    lab.mkdir(parents=True)
    (lab / "__init__.py").write_text("")
    (lab / "my_method.py").write_text(_readme_example())
    monkeypatch.syspath_prepend(str(tmp_path / "lab"))
    (configs / "methods" / "my_method.yaml").write_text("strategy: my_lab.my_method\n"
                                                        "my_method:\n  batch_factor: 3\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--method", "my_method", "--profile", "smoke", "--threads",
                                 "1", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "synth-hippocampus-to-synth-cortex" / "my_method" / "seed0"
    metrics = json.loads((folder / "metrics.json").read_text())
    recorded = yaml.safe_load((folder / "config.yaml").read_text())
    assert metrics["method"] == "my_method" and recorded["strategy"] == "my_lab.my_method"
    assert recorded["my_method"] == {"batch_factor": 3}
    for bad, message in (("my_method.batch_factor=0", "must be >= 1"),
                         ("my_method.batch_fator=2", "my_method.batch_fator")):
        result = runner.invoke(cli, ["run", "--method", "my_method", "--profile", "smoke",
                                     "--set", bad, "--out", str(tmp_path / "bad"), "--quiet"])
        assert result.exit_code != 0 and message in result.output + str(result.exception)
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: [synth-hippocampus, synth-cortex]\nmethods: [my_method]\nseeds: [0]\n"
                    "profile: smoke\noracle: false\nsource_only: false\n"
                    f"out: {tmp_path / 'bench'}\noverrides: ['train.threads=1']\n")
    result = runner.invoke(cli, ["benchmark", "--config", str(grid), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "bench" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all("my_method" in r for r in rows[1:])
