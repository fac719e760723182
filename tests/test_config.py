"""Configs: merge order, validation that names the offending key, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from domadapt.config import RunConfig, build_config, parse_set, save_config
from domadapt.errors import ConfigError


def test_merge_order_defaults_profile_method_file_set_flags(tmp_path):
    file = tmp_path / "extra.yaml"
    file.write_text("train:\n  steps: 7\n  lr: 0.01\n")
    cfg = build_config(profile="smoke", config_file=file, overrides=["train.lr=0.5"],
                       flags={"seed": 3})
    assert cfg.data.patch_size == 64  # profile beats the dataclass default
    assert cfg.train.steps == 7  # file beats profile
    assert cfg.train.lr == 0.5  # --set beats file
    assert cfg.seed == 3
    assert cfg.data.pixel_size_nm == 10.0  # untouched default


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="train.stpes"):
        build_config(profile="smoke", overrides=["train.stpes=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="train.steps.*int"):
        build_config(profile="smoke", overrides=["train.steps=many"])
    with pytest.raises(ConfigError, match="model.norm"):
        build_config(profile="smoke", overrides=["model.norm=layer"])
    with pytest.raises(ConfigError, match="train.amp"):
        build_config(profile="smoke", overrides=["train.amp=3"])


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert build_config(profile="smoke", overrides=["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.steps"):
        build_config(profile="smoke", overrides=["train.steps=2.5"])


@pytest.mark.parametrize("value", ["1.0", "-0.5"])
def test_a_weight_average_decay_outside_zero_to_one_names_its_key(value):
    assert build_config(profile="smoke", overrides=["train.weight_average=0.99"]).train.weight_average == 0.99
    with pytest.raises(ConfigError, match="train.weight_average"):
        build_config(profile="smoke", overrides=[f"train.weight_average={value}"])


def test_unknown_profile_and_method_list_valid_names():
    with pytest.raises(ConfigError, match="valid profiles: .*cpu-quick"):
        build_config(profile="nope")
    with pytest.raises(ConfigError, match="valid methods: .*baseline"):
        build_config(method="nope")


def test_value_checks():
    with pytest.raises(ConfigError, match="patch_size"):
        build_config(profile="smoke", overrides=["data.patch_size=60"])
    with pytest.raises(ConfigError, match="train.steps"):
        build_config(profile="smoke", overrides=["train.steps=0"])


def test_parse_set_types():
    assert parse_set(["a.b=1", "a.c=1e-3", "d=[1, 2]", "e=null", "f=text"]) == {
        "a": {"b": 1, "c": 1e-3}, "d": [1, 2], "e": None, "f": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["novalue"])


def test_resolved_config_round_trips(tmp_path):
    cfg = build_config(profile="smoke", overrides=["train.steps=5"])
    save_config(cfg, tmp_path / "c.yaml")
    again = build_config(profile="smoke", config_file=tmp_path / "c.yaml")
    assert again == cfg
    assert isinstance(yaml.safe_load((tmp_path / "c.yaml").read_text()), dict)
    assert RunConfig().method == "baseline"


def test_invalid_yaml_file_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(profile="smoke", config_file=bad)


def test_source_splits_stack_the_source_test_split_but_never_the_targets():
    from domadapt.data.prepare import load_source

    both = build_config(profile="smoke", overrides=["data.source_splits=[train,test]"])
    train_only = build_config(profile="smoke")
    stacked, train = load_source(both), load_source(train_only)
    assert stacked.shape[0] == 2 * train.shape[0]
    assert (stacked.image[: train.shape[0]] == train.image).all()
    with pytest.raises(ConfigError, match="source is the target"):
        build_config(profile="smoke", overrides=["data.source_splits=[train,test]"],
                     flags={"target": "synth-hippocampus"})
    with pytest.raises(ConfigError, match="source_splits"):
        build_config(profile="smoke", overrides=["data.source_splits=[train,train]"])


def test_an_in_domain_run_takes_the_in_domain_criterion_unless_a_criterion_is_named(tmp_path):
    chosen = ["selection.in_domain_criterion=source_val_iou"]
    same = {"source": "lucchi", "target": "lucchi"}
    assert build_config(overrides=chosen, flags=same).selection.criterion == "source_val_iou"
    crossing = build_config(overrides=chosen, flags={"source": "lucchi", "target": "vnc"})
    assert crossing.selection.criterion == RunConfig().selection.criterion
    named = build_config(overrides=[*chosen, "selection.criterion=target_bnm"], flags=same)
    assert named.selection.criterion == "target_bnm"
    assert build_config(flags=same).selection.criterion == "source_val_iou"  # the default
    empty = build_config(overrides=["selection.in_domain_criterion="], flags=same)
    assert empty.selection.criterion == RunConfig().selection.criterion
    save_config(build_config(overrides=chosen, flags=same), tmp_path / "c.yaml")
    recorded = yaml.safe_load((tmp_path / "c.yaml").read_text())["selection"]
    assert recorded["criterion"] == "source_val_iou"  # the run's config says what chose it


def test_an_unknown_in_domain_criterion_is_named():
    with pytest.raises(ConfigError, match="selection.in_domain_criterion.*valid: .*morph_ours"):
        build_config(overrides=["selection.in_domain_criterion=solidity"])


def _cross_domain_file(tmp_path, section):
    path = tmp_path / "shift.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 0.001}, "cross_domain": section}))
    return path


CROSSING = {"source": "lucchi", "target": "vnc"}
SAME = {"source": "lucchi", "target": "lucchi"}


def test_cross_domain_keys_apply_only_when_the_target_is_another_domain(tmp_path):
    shift = _cross_domain_file(tmp_path, {"train": {"steps": 1500}, "augment": {"contrast": 0.3}})
    crossing = build_config(profile="smoke", config_file=shift, flags=CROSSING)
    same = build_config(profile="smoke", config_file=shift, flags=SAME)
    assert (crossing.train.steps, crossing.augment.contrast) == (1500, 0.3)
    assert (same.train.steps, same.augment.contrast) == (20, RunConfig().augment.contrast)
    assert crossing.train.lr == same.train.lr == 0.001  # the file's own keys apply to both
    assert same == build_config(profile="smoke", overrides=["train.lr=0.001"], flags=SAME)
    save_config(crossing, tmp_path / "c.yaml")
    recorded = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert recorded["train"]["steps"] == 1500 and "cross_domain" not in recorded


def test_a_later_layer_wins_over_an_earlier_layers_cross_domain_keys(tmp_path):
    shift = _cross_domain_file(tmp_path, {"train": {"steps": 1500}})
    later = build_config(profile="smoke", config_file=shift, overrides=["train.steps=700"],
                         flags=CROSSING)
    assert later.train.steps == 700
    by_set = build_config(profile="smoke", overrides=["cross_domain.train.steps=900"],
                          flags=CROSSING)
    assert by_set.train.steps == 900


def test_a_wrong_cross_domain_key_is_named_even_in_an_in_domain_run(tmp_path):
    with pytest.raises(ConfigError, match="stepz"):
        build_config(profile="smoke", config_file=_cross_domain_file(tmp_path, {"train": {"stepz": 1}}),
                     flags=SAME)
    with pytest.raises(ConfigError, match="'cross_domain' must be a mapping"):
        build_config(profile="smoke", overrides=["cross_domain=5"], flags=SAME)


SHIFT_KEYS = ["train.steps=1500", "augment.contrast=0.3", "augment.brightness=0.15",
              "augment.gamma=0.4", "augment.blur=1.5", "augment.noise=0.08", "augment.rotate=45",
              "augment.scale=0.2", "augment.elastic=6", "augment.deform_p=0.5",
              "augment.curve=0.15", "augment.curve_p=0.5", "augment.gain_field=0.3",
              "augment.gain_field_p=0.5"]


def test_the_shipped_shift_recipe_is_the_measured_keys_on_cross_domain_runs_only():
    recipe = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "shift.yaml"
    crossing = build_config(config_file=recipe, flags=CROSSING)
    assert crossing == build_config(overrides=SHIFT_KEYS, flags=CROSSING)  # plan-shift.md's runs
    assert build_config(config_file=recipe, flags=SAME) == build_config(flags=SAME)
