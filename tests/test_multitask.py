"""The multi-task (Y-Net) strategy: heads, reconstruction, label isolation, schedules, resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
import torch

from domadapt.config import RunConfig, build_config
from domadapt.criteria import REGISTRY
from domadapt.data import prepare
from domadapt.data.prepare import prepare_data
from domadapt.data.volume import Volume
from domadapt.errors import ConfigError
from domadapt.models.unet import UNet
from domadapt.models.ynet import build_ynet
from domadapt.pipeline import run, run_dir_for
from domadapt.predict import model_from_checkpoint, predict_file
from domadapt.strategies import get_strategy
from domadapt.strategies.base import Domains
from domadapt.strategies.multitask import (
    Multitask,
    build_stage,
    new_ynet_modules,
    plan_stages,
)
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.monitors import EvalContext
from domadapt.training.reconstruction import corrupt
from domadapt.training.trainer import Trainer

CPU = torch.device("cpu")
# A morphology criterion needs >= 5 source objects: a slightly larger smoke volume. The
# smoke profile itself selects on source_val_iou, so the package default is set back here.
MORPH_SHAPE = "data.synthetic_shape=[6,256,256]"
DEFAULT_CRITERION = f"selection.criterion={RunConfig().selection.criterion}"


def _small_domains(cfg) -> Domains:
    data = prepare_data(cfg)
    return Domains(data.source_train, data.source_val, data.target_train, data.target_test)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- the network


def test_both_heads_have_the_input_shape():
    torch.manual_seed(0)
    ynet = build_ynet("attention_unet", width=4, depth=2, norm="group")
    seg, recon = ynet(torch.rand(2, 1, 32, 32))
    assert seg.shape == recon.shape == (2, 1, 32, 32)
    assert isinstance(ynet.net, UNet)  # the segmentation half is a plain, predictable UNet


def test_default_recon_decoder_has_no_skips_and_needs_the_bottleneck(tiny_config):
    modules = new_ynet_modules(tiny_config(method="multitask"))
    recon, encoder = modules["recon"], modules["net"].encoder
    assert recon.use_skips is False
    assert recon.blocks[0][0].in_channels == encoder.channels[-2]  # no concatenated skip
    recon.eval(), encoder.eval()
    with torch.no_grad():
        outs = []
        for seed in (1, 2):
            feats = encoder(torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(seed)))
            feats[-1] = torch.zeros_like(feats[-1])
            outs.append(recon(feats))
    assert torch.equal(outs[0], outs[1])  # without the bottleneck, the input is invisible


def _train_without_bottleneck(skips: bool, steps: int = 60) -> float:
    """Reconstruction MSE / input variance after training with the bottleneck zeroed."""
    torch.manual_seed(0)
    ynet = build_ynet(width=4, depth=2, norm="batch", recon_skips=skips)
    opt = torch.optim.Adam(ynet.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 36, 36, generator=g), 5, 1)
        x = (x - x.mean()) / x.std() * 0.2 + 0.5  # smooth "images" around mid-grey
        feats = ynet.net.encoder(x)
        feats[-1] = torch.zeros_like(feats[-1])
        loss = torch.nn.functional.mse_loss(ynet.recon(feats), x)
        opt.zero_grad(), loss.backward(), opt.step()
    return float(loss.detach()) / float(x.var())


def test_with_skips_the_recon_decoder_copies_the_input_past_the_bottleneck():
    assert _train_without_bottleneck(skips=True) < 0.5  # copied through the skips
    assert _train_without_bottleneck(skips=False) > 0.9  # no better than the mean image


@pytest.mark.parametrize("variant", ["denoise", "masked"])
def test_corruptions_change_the_input_reproducibly(variant):
    x = torch.rand(2, 1, 32, 32)
    a = corrupt(x, variant, torch.Generator().manual_seed(0), mask_patch=8)
    b = corrupt(x, variant, torch.Generator().manual_seed(0), mask_patch=8)
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape
    assert torch.equal(corrupt(x, "autoencode", torch.Generator()), x)


# ---------------------------------------------------------------------- config and batches


def test_balanced_batches_by_default_and_source_only_without_reconstruction(tiny_config):
    plans = plan_stages(tiny_config(method="multitask-paper", data={"batch_size": 8}))
    assert [(p.n_labeled, p.n_unlabeled) for p in plans] == [(4, 4), (4, 4), (8, 0)]
    assert "seg_decoder" in plans[1].frozen and "recon_decoder" in plans[2].frozen
    plan = plan_stages(tiny_config("multitask.unlabeled_fraction=0.25", method="multitask",
                                   data={"batch_size": 8}))[0]
    assert (plan.n_labeled, plan.n_unlabeled) == (6, 2)


@pytest.mark.parametrize(("override", "key"), [
    ("multitask.unlabeled_fraction=1.5", "multitask.unlabeled_fraction"),
    ("multitask.stages=[{name: a, frozen: [everything]}]", "multitask.stages[0].frozen[0]"),
    ("multitask.stages=[{name: a, seg_weight: 0, recon_weight: 0}]", "multitask.stages[0].seg_weight"),
    ("multitask.stages=[{name: a}, {name: a}]", "multitask.stages[1].name"),
    ("multitask.recon=blur", "multitask.recon"),
])
def test_bad_multitask_config_names_the_key(tiny_config, override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        tiny_config(override, method="multitask")


def test_all_unlabeled_batches_refused_when_a_stage_segments(tiny_config):
    with pytest.raises(ConfigError, match="multitask.unlabeled_fraction"):
        plan_stages(tiny_config("multitask.unlabeled_fraction=1.0", method="multitask"))


def test_a_stage_that_freezes_everything_it_trains_is_refused(tiny_config):
    cfg = tiny_config("multitask.stages=[{name: a, seg_weight: 0, frozen: [encoder, recon_decoder]}]",
                      method="multitask")
    domains = _small_domains(cfg)
    with pytest.raises(ConfigError, match=r"multitask.stages\[0\].frozen"):
        build_stage(plan_stages(cfg)[0], new_ynet_modules(cfg), cfg, domains,
                    domains.target_train.image)


def test_both_method_names_map_to_the_strategy():
    assert isinstance(get_strategy("multitask"), Multitask)
    for alias in ("multitask-paper", "multitask-denoise", "multitask-masked"):
        assert isinstance(get_strategy(alias), Multitask)


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("variant", ["autoencode", "denoise", "masked"])
def test_reconstruction_loss_on_target_patches_falls(tiny_config, tmp_path, variant):
    cfg = tiny_config(f"multitask.recon={variant}", "selection.monitors=[source_val]",
                      "selection.criterion=source_val_iou", "train.steps=30", "train.eval_every=30",
                      "train.lr=0.02", "data.patch_size=32", "model.width=4", "model.depth=2",
                      "multitask.mask_patch=4", method="multitask")
    domains = _small_domains(cfg)
    plan = plan_stages(cfg)[0]
    stage = build_stage(plan, new_ynet_modules(cfg), cfg, domains, domains.target_train.image)
    monitor = stage.monitors[-1]

    def target_mse() -> float:
        with torch.no_grad():
            return monitor.evaluate(EvalContext(stage.modules, None, CPU, False, 0))\
                .metrics["recon_mse_target"]

    before = target_mse()
    Trainer(tmp_path, CPU, cfg.seed, progress=False).fit(stage)
    after = target_mse()
    assert after < 0.25 * before


def _poisoned_resolver(original):
    def resolve(ref, split, *args, **kwargs):
        volume = original(ref, split, *args, **kwargs)
        if ref == "synth-cortex":  # the target: invert its masks
            return Volume(volume.image, (1 - volume.mask).astype(np.uint8), volume.voxel_size_nm,
                          volume.name)
        return volume
    return resolve


def test_target_masks_never_train_the_segmentation_head(tiny_config, tmp_path, monkeypatch):
    overrides = ("train.steps=6", "train.eval_every=3", "selection.criterion=morph_paper")
    cfg_clean = tiny_config(*overrides, method="multitask", out=str(tmp_path / "clean"))
    clean = run(cfg_clean, progress=False)
    monkeypatch.setattr(prepare, "resolve_dataset", _poisoned_resolver(prepare.resolve_dataset))
    cfg_poisoned = tiny_config(*overrides, method="multitask", out=str(tmp_path / "poisoned"))
    poisoned = run(cfg_poisoned, progress=False)
    assert poisoned["target_iou"] != clean["target_iou"]  # the poison reached the scoring ...
    for name in ("last.pt", "best-morph_paper.pt"):  # ... and nothing else
        a, b = (load_checkpoint(run_dir_for(c) / "checkpoints/joint" / name)
                for c in (cfg_clean, cfg_poisoned))
        for module in ("net", "recon"):
            assert _states_equal(a["modules"][module], b["modules"][module])
    assert clean["selected_step"] == poisoned["selected_step"]


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = build_config(profile="smoke", method="multitask",
                       overrides=["train.threads=1", MORPH_SHAPE, DEFAULT_CRITERION],
                       flags={"out": str(out)})
    return cfg, run(cfg, progress=False)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = build_config(profile="smoke", method="multitask-paper", overrides=["train.threads=1"],
                       flags={"out": str(out)})
    return cfg, run(cfg, progress=False)


def test_default_run_end_to_end(default_run):
    cfg, metrics = default_run
    folder = run_dir_for(cfg)
    criterion = RunConfig().selection.criterion
    parts = REGISTRY[criterion].parts or (criterion,)
    assert any(p.startswith("morph_") for p in parts)  # the morphology monitor takes part by default
    assert build_config(method="multitask").selection.criterion == criterion
    assert metrics["method"] == "multitask" and metrics["selection_criterion"] == criterion
    assert 0.0 <= metrics["target_iou"] <= 1.0 and list(metrics["stages"]) == ["joint"]
    assert (folder / f"checkpoints/joint/best-{criterion}.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tb/joint"))
    events.Reload()
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    assert {"train/seg_loss", "train/recon_loss_source", "train/recon_loss_target",
            "eval/recon_mse_source", "eval/recon_mse_target"} <= set(scalars)
    assert {"images/recon_source", "images/recon_target"} <= set(images)


def test_predict_uses_only_the_segmentation_branch(default_run, tmp_path):
    _, metrics = default_run
    net, payload = model_from_checkpoint(metrics["selected_checkpoint"])
    assert isinstance(net, UNet) and set(payload["modules"]) == {"net", "recon"}
    image = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = predict_file(metrics["selected_checkpoint"], tmp_path / "in.tif", tmp_path / "out.tif",
                       progress=False)
    assert tifffile.imread(out).shape == image.shape


def test_paper_schedule_runs_three_stages_with_frozen_parts(paper_run):
    cfg, metrics = paper_run
    folder = run_dir_for(cfg) / "checkpoints"
    assert list(metrics["stages"]) == ["joint", "reconstruction", "finetune"]
    assert metrics["selection_criterion"] == "morph_paper"
    assert metrics["selected_checkpoint"].endswith("finetune/best-morph_paper.pt")
    joint, recon = (load_checkpoint(folder / s / "last.pt")["modules"] for s in ("joint", "reconstruction"))
    final = load_checkpoint(metrics["selected_checkpoint"])["modules"]
    seg_dec = {k: v for k, v in joint["net"].items() if k.startswith("decoder.")}
    assert _states_equal(seg_dec, {k: recon["net"][k] for k in seg_dec})  # stage 2: seg frozen
    shallow = [k for k in recon["net"] if k.startswith("encoder.blocks.")
               and not k.startswith(f"encoder.blocks.{cfg.model.depth}.")]
    assert all(torch.equal(recon["net"][k], final["net"][k]) for k in shallow)  # stage 3: frozen
    assert _states_equal(recon["recon"], final["recon"])


def test_resume_across_stage_boundaries(paper_run):
    cfg, metrics = paper_run
    folder = run_dir_for(cfg)
    stamps = {s: (folder / f"checkpoints/{s}/last.pt").stat().st_mtime_ns
              for s in ("joint", "reconstruction")}
    shutil.rmtree(folder / "checkpoints/finetune")  # killed before the last stage wrote anything
    shutil.rmtree(folder / "tb/finetune")
    again = run(cfg, resume=True, progress=False)
    for key in ("target_iou", "selected_step", "source_val_iou"):
        assert again[key] == metrics[key]
    for stage, stamp in stamps.items():  # finished stages were not retrained
        assert (folder / f"checkpoints/{stage}/last.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("variant", ["denoise", "masked"])
def test_variant_method_names_set_their_reconstruction_task(variant):
    from domadapt.config import build_config

    assert build_config(profile="smoke", method=f"multitask-{variant}").options.recon == variant
