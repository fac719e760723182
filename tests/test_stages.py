"""One stage vocabulary: every method's stages take the same keys, addressed by name."""

from __future__ import annotations

import re

import pytest
import yaml

from domadapt.config import build_config, record, saved_record
from domadapt.errors import ConfigError
from domadapt.stage_options import StageOptions, stage_steps
from domadapt.strategies import get_strategy
from domadapt.strategies.style_transfer import translator_stage
from domadapt.training.optim import make_optimizer

METHODS_WITH_STAGES = ["ssl", "style_transfer-cut", "self_training", "multitask", "multitask-paper"]


@pytest.mark.parametrize("method", METHODS_WITH_STAGES)
def test_every_method_lists_its_stages_with_the_shared_keys(method):
    cfg = build_config(profile="smoke", method=method)
    section = get_strategy(cfg.method, cfg.strategy).options
    assert section == type(cfg.options).section
    stages = cfg.options.stages
    assert stages and all(isinstance(st, StageOptions) for st in stages)
    recorded = record(cfg, section)[section]["stages"]
    assert all(isinstance(entry, dict) and "steps" in entry for entry in recorded)


def test_a_stage_is_changed_by_name_and_the_others_keep_their_place(tmp_path):
    cfg = build_config(profile="smoke", method="multitask-paper",
                       overrides=["multitask.stages.reconstruction.lr=0.05"])
    assert [s.name for s in cfg.options.stages] == ["joint", "reconstruction", "finetune"]
    assert [s.lr for s in cfg.options.stages] == [0.001, 0.05, 0.0002]
    file = tmp_path / "mine.yaml"
    file.write_text(yaml.safe_dump({"ssl": {"stages": {"pretext": {"steps": 7, "optimizer": "sgd"}}}}))
    pretext = build_config(profile="smoke", method="ssl", config_file=file).options.stages[0]
    assert (pretext.name, pretext.steps, pretext.share, pretext.optimizer) == ("pretext", 7, 0.5, "sgd")


@pytest.mark.parametrize(("method", "overrides", "message"), [
    ("ssl", ["ssl.stages.bogus.steps=3"],
     "ssl.stages.bogus' names no entry of 'ssl.stages'; entries: pretext"),
    ("ssl", ["ssl.stages.pretext.handoff=last"],
     "ssl.stages[0].handoff' has no effect on stage 'pretext'"),
    ("style_transfer-cut", ["style.stages.translator.optimizer=sgd"], "style.stages[0].optimizer"),
    ("self_training", ["self_training.stages=[{name: extra}]"], "must hold the stage(s) self_training"),
    ("style_transfer", ["style.translator_share=0.2"], "'style.translator_share' is now "
                                                        "'style.stages.translator.share'"),
    ("self_training", ["self_training.steps=5"], "now 'self_training.stages.self_training.steps'"),
])
def test_stage_mistakes_name_the_key(method, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(profile="smoke", method=method, overrides=overrides)


def test_length_is_steps_else_a_share_of_train_steps():
    assert stage_steps(StageOptions(steps=7, share=0.1), 1000) == 7
    assert stage_steps(StageOptions(share=0.3), 1000) == 300
    assert stage_steps(StageOptions(share=0.0001), 1000) == 1


def test_the_translator_stage_trains_with_its_own_lr_and_evaluation_interval():
    import numpy as np

    cfg = build_config(profile="smoke", method="style_transfer-cut",
                       overrides=["style.stages.translator.lr=0.01",
                                  "style.stages.translator.eval_every=3",
                                  "style.stages.translator.steps=9", "style.translator_patch=32",
                                  "style.generator_width=4", "style.generator_blocks=2",
                                  "style.discriminator_width=4"])
    volume = np.random.default_rng(0).random((2, 48, 48)).astype(np.float32)
    stage = translator_stage(cfg, volume, volume)
    assert (stage.steps, stage.eval_every) == (9, 3)
    assert {g["lr"] for opt in stage.optimizers.values() for g in opt.param_groups} == {0.01}


@pytest.mark.parametrize(("kind", "cls"), [(None, "AdamW"), ("adamw", "AdamW"), ("adam", "Adam"),
                                           ("sgd", "SGD")])
def test_one_optimizer_factory_serves_every_stage(kind, cls):
    import torch

    cfg = build_config(profile="smoke")
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg.train, 0.3, kind)
    assert type(opt).__name__ == cls and opt.param_groups[0]["lr"] == 0.3


def test_a_run_folder_of_the_earlier_keys_resumes_with_the_same_settings():
    """Renamed keys are read under their new names; a removed no-op key is dropped."""
    new = build_config(profile="smoke", method="ssl")
    old = record(new, "ssl")
    old["ssl"] = {k: v for k, v in old["ssl"].items() if k != "stages"}
    old["ssl"].update(pretext_steps=None, pretext_share=0.5, pretext_lr=None)
    old["inference"] = {**old["inference"], "save_probabilities": True}  # had no effect; removed
    assert saved_record(old, "ssl") == record(new, "ssl")
    old["ssl"]["pretext_share"] = 0.3
    assert saved_record(old, "ssl")["ssl"]["stages"][0]["share"] == 0.3


def test_a_checkpoint_config_of_an_earlier_version_is_read_in_todays_keys():
    """predict, select and export read configs stored by earlier versions: flat stage keys,
    every strategy's section, and a key that had no effect."""
    from domadapt.config import config_from_plain
    from domadapt.strategies.ssl import SslConfig

    plain = build_config(profile="smoke", method="ssl").to_dict()
    plain["ssl"] = {k: v for k, v in plain["ssl"].items() if k != "stages"}
    plain["ssl"].update(pretext_steps=9, pretext_share=0.5, pretext_lr=None)
    plain["style"] = {"kind": "fda", "translator_share": 0.3}
    plain["multitask"] = {"recon": "denoise"}
    plain["inference"] = {**plain["inference"], "save_probabilities": True}
    cfg = config_from_plain(plain, stored=True)
    assert isinstance(cfg.options, SslConfig) and cfg.options.stages[0].steps == 9
    assert "style" not in cfg.to_dict() and "multitask" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="was removed"):
        build_config(profile="smoke", overrides=["inference.save_probabilities=false"])


def test_a_stored_config_of_a_strategy_missing_here_is_still_read():
    """select or export of a lab's run on a machine without the lab's module."""
    from domadapt.config import config_from_plain

    plain = build_config(profile="smoke").to_dict()
    plain.update(strategy="absent_lab.my_method", method="my_method", my_method={"batch_factor": 3})
    cfg = config_from_plain(plain, stored=True)
    assert cfg.options is None and cfg.data.patch_size == 64
    with pytest.raises(ConfigError, match="absent_lab"):
        config_from_plain(plain)
