"""`domadapt run` end to end on tiny synthetic domains."""

from __future__ import annotations

import json

import pytest
import tifffile
import yaml

from domadapt.data.volume import UnlabeledVolume
from domadapt.errors import RunFolderError
from domadapt.pipeline import run, run_dir_for
from domadapt.strategies import baseline
from domadapt.strategies.base import Domains

REQUIRED_KEYS = {"target_iou", "target_dice", "target_iou_slice_mean", "source_val_iou",
                 "selected_epoch", "selection_criterion", "wall_time_s", "device", "method",
                 "source", "target", "seed"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from domadapt.config import build_config

    out = tmp_path_factory.mktemp("runs")
    cfg = build_config(profile="smoke", overrides=["train.threads=1"], flags={"out": str(out)})
    return cfg, run(cfg, progress=False)


def test_run_folder_layout_and_metrics(finished_run):
    cfg, metrics = finished_run
    folder = run_dir_for(cfg)
    assert REQUIRED_KEYS <= set(metrics)
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert 0.0 <= metrics["target_iou"] <= 1.0 and metrics["method"] == "baseline"
    resolved = yaml.safe_load((folder / "config.yaml").read_text())
    assert resolved["train"]["steps"] == cfg.train.steps and resolved["profile"] == "smoke"
    assert not {"ssl", "multitask", "style", "self_training"} & set(resolved)  # only its own method
    assert list((folder / "tb" / "segmentation").glob("events.out.tfevents.*"))
    assert (folder / "checkpoints/segmentation/last.pt").is_file()
    assert (folder / "checkpoints/segmentation/best-source_val_iou.pt").is_file()
    assert "IoU" in (folder / "report.md").read_text()
    prob = tifffile.imread(folder / "predictions/target_test_prob.tif")
    assert prob.dtype == "uint8" and prob.ndim == 3
    assert not list(folder.rglob("*.partial"))


def test_existing_run_folder_is_refused(finished_run):
    cfg, _ = finished_run
    with pytest.raises(RunFolderError, match="--resume"):
        run(cfg, progress=False)


def test_resume_of_finished_run_reproduces_metrics(finished_run):
    cfg, metrics = finished_run
    again = run(cfg, resume=True, progress=False)
    for key in ("target_iou", "target_dice", "selected_step", "source_val_iou"):
        assert again[key] == metrics[key]


def test_same_command_twice_gives_same_metrics(finished_run, tiny_config):
    _, metrics = finished_run
    again = run(tiny_config(), progress=False)
    assert again["target_iou"] == metrics["target_iou"]
    assert again["source_val_iou"] == metrics["source_val_iou"]


def test_cpu_training_settings_repeat_exactly(tiny_config, tmp_path):
    """bfloat16 autocast (where the CPU has it) and channels-last keep runs repeatable."""
    fast = ("train.cpu_bf16=true", "train.channels_last=true", "train.steps=6", "train.eval_every=3")
    first = run(tiny_config(*fast, out=str(tmp_path / "a")), progress=False)
    second = run(tiny_config(*fast, out=str(tmp_path / "b")), progress=False)
    for key in ("target_iou", "source_val_iou", "selected_step"):
        assert first[key] == second[key]


def test_eval_bf16_reaches_the_evaluations_only(tiny_config, monkeypatch):
    """inference.eval_cpu_bf16 asks for bfloat16 in the monitors' predictions during training;
    the final prediction of the target test volume keeps inference.cpu_bf16 (float32)."""
    from domadapt import inference
    from domadapt.training import monitors

    asked = {"evaluations": [], "final": []}

    def spy(where, original):
        def copy(model, device, cpu_bf16=False):
            asked[where].append(cpu_bf16)
            return original(model, device, cpu_bf16)
        return copy

    monkeypatch.setattr(monitors, "inference_copy", spy("evaluations", monitors.inference_copy))
    monkeypatch.setattr(inference, "inference_copy", spy("final", inference.inference_copy))
    run(tiny_config("train.steps=4", "train.eval_every=2", "inference.eval_cpu_bf16=true"),
        progress=False)
    assert asked["evaluations"] and set(asked["evaluations"]) == {True}
    assert asked["final"] and set(asked["final"]) == {False}


def test_strategies_never_see_target_labels(tiny_config, monkeypatch):
    seen = {}
    original = baseline.Baseline.fit

    def spy(self, domains: Domains, ctx):
        seen["domains"] = domains
        return original(self, domains, ctx)

    monkeypatch.setattr(baseline.Baseline, "fit", spy)
    run(tiny_config("train.steps=2", "train.eval_every=2"), progress=False)
    domains = seen["domains"]
    for split in (domains.target_train, domains.target_test):
        assert isinstance(split, UnlabeledVolume)
        assert not hasattr(split, "mask")
    assert domains.source_train.mask is not None


def test_unlabeled_user_target_reports_no_iou(tiny_config, tmp_path):
    from domadapt.data.synthetic import make_volume

    vol = make_volume("synth-vnc", "test", shape=(3, 96, 96))
    path = tmp_path / "my_target.tif"
    tifffile.imwrite(path, vol.image, photometric="minisblack")
    cfg = tiny_config("train.steps=2", "train.eval_every=2", target=str(path),
                      data={"target_voxel_size": [45.0, 4.6, 4.6]})
    metrics = run(cfg, progress=False)
    assert metrics["target_iou"] is None and metrics["target_labels"] is False
    assert (run_dir_for(cfg) / "predictions/target_test_prob.tif").is_file()
    assert run_dir_for(cfg).parent.parent.name == "synth-hippocampus-to-my_target"


def test_pretraining_stage_starts_every_net_from_its_weights(tiny_config):
    import torch

    from domadapt.config import config_from_plain
    from domadapt.errors import ConfigError
    from domadapt.strategies.base import new_segmentation_net
    from domadapt.training.checkpoint import load_checkpoint

    cfg = tiny_config("pretrain.dataset=synth-vnc", "pretrain.steps=10")
    run(cfg, progress=False)
    folder = run_dir_for(cfg)
    resolved = config_from_plain(load_checkpoint(folder / "checkpoints/segmentation/last.pt")["config"])
    weights = load_checkpoint(resolved.pretrain.weights)
    assert weights["stage"] == "pretrain" and "checkpoints/pretrain/" in resolved.pretrain.weights
    net = new_segmentation_net(resolved)
    for key, value in net.state_dict().items():
        assert torch.equal(value, weights["modules"]["net"][key])
    assert not torch.equal(new_segmentation_net(cfg).state_dict()["decoder.head.weight"],
                           net.state_dict()["decoder.head.weight"])
    with pytest.raises(ConfigError, match="names the target"):
        tiny_config("pretrain.dataset=synth-cortex")
    wrong = tiny_config(f"pretrain.weights={resolved.pretrain.weights}", "model.width=4")
    with pytest.raises(ConfigError, match="holds no segmentation network of this run"):
        new_segmentation_net(wrong)


def test_pretraining_on_a_mix_samples_every_member(tiny_config, monkeypatch, capsys, tmp_path):
    from domadapt.data.patches import PatchSampler
    from tests.conftest import run_cli

    seen = []
    original = PatchSampler.__init__

    def spy(self, images, *args, **kwargs):
        seen.append(len(images))
        original(self, images, *args, **kwargs)

    monkeypatch.setattr(PatchSampler, "__init__", spy)
    cfg = tiny_config("pretrain.dataset=synth-vnc, synth-hippocampus", "pretrain.steps=4",
                      "train.steps=2", "train.eval_every=2")
    run(cfg, progress=False)
    assert seen[0] == 2  # the pretraining sampler draws from both members, equally
    code, _, err = run_cli(monkeypatch, capsys, "run", "--profile", "smoke", "--target", "synth-cortex",
                           "--pretrain", "synth-vnc,synth-cortex", "--out", str(tmp_path / "cli"))
    assert code == 2 and "names the target" in err and not (tmp_path / "cli").exists()


def test_several_sources_train_jointly_with_balanced_sampling(tiny_config):
    from domadapt.data.prepare import prepare_data
    from domadapt.data.volume import IGNORE_LABEL
    from domadapt.errors import ConfigError
    from domadapt.strategies.base import source_sampler

    cfg = tiny_config(source="synth-hippocampus,synth-vnc")
    data = prepare_data(cfg)
    parts = data.source_train.parts
    assert [p.name.split(":")[0] for p in parts] == ["synth-hippocampus", "synth-vnc"]
    assert data.source_train.shape[0] == sum(p.shape[0] for p in parts)
    small = min(parts, key=lambda p: p.shape[1])  # padded region of the smaller source: ignored
    z = data.source_train.shape[0] - 1 if small is parts[-1] else 0
    assert (data.source_train.mask[z, small.shape[1]:] == IGNORE_LABEL).all()
    domains = Domains(data.source_train, data.source_val, data.target_train, data.target_test)
    assert len(source_sampler(cfg, domains).images) == 2  # each source drawn with probability 1/2
    metrics = run(cfg, progress=False)
    assert run_dir_for(cfg).parts[-3] == "synth-hippocampus+synth-vnc-to-synth-cortex"
    assert metrics["target_iou"] is not None
    with pytest.raises(ConfigError, match="also one of the sources"):
        tiny_config(source="synth-hippocampus,synth-cortex")
