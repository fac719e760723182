"""AdaBN: target batch-norm statistics for a source-trained segmenter, chosen label-free."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from domadapt.data.patches import PatchSampler
from domadapt.errors import ConfigError
from domadapt.pipeline import run, run_dir_for
from domadapt.predict import model_from_checkpoint, predict_file
from domadapt.strategies.adabn import batch_norms, target_statistics
from domadapt.training.checkpoint import load_checkpoint
from tests.conftest import shift_config, write_appearance_shift


def test_target_statistics_are_the_target_patches_and_the_weights_stay():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU())
    weights = {k: v.clone() for k, v in net.named_parameters()}
    target = np.random.default_rng(0).random((2, 40, 40)).astype(np.float32) * 0.2 + 0.7
    target_statistics(net, PatchSampler([target], None, 16, 4, seed=3), 5, 3, torch.device("cpu"))
    sampler, generator = PatchSampler([target], None, 16, 4, seed=3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        features = torch.cat([net[0](sampler.sample(generator)["image"]) for _ in range(5)])
    torch.testing.assert_close(net[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert not net.training
    assert all(torch.equal(v, dict(net.named_parameters())[k]) for k, v in weights.items())


def test_a_network_without_batch_norm_is_refused():
    with pytest.raises(ConfigError, match="model.norm"):
        batch_norms(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2)))


@pytest.fixture(scope="module")
def darker_target(tmp_path_factory):
    """One synthetic domain as source; the target is another volume of it, darker (gamma 3)."""
    return write_appearance_shift(tmp_path_factory.mktemp("adabn"))


def _config(folder, method="baseline", *overrides, out="runs"):
    return shift_config(folder, method, *overrides, out=out, monitor="target",
                        criterion="target_entropy")


def test_adabn_adapts_every_checkpoint_and_predict_uses_the_adapted_statistics(darker_target):
    baseline_cfg = _config(darker_target)
    baseline = run(baseline_cfg, progress=False)
    reuse = f"adabn.segmenter_from={run_dir_for(baseline_cfg)}"
    cfg = _config(darker_target, "adabn", reuse, out="adabn")
    metrics = run(cfg, progress=False)
    assert metrics["method"] == "adabn" and baseline["target_iou"] is not None
    folder = run_dir_for(cfg)
    history = json.loads((folder / "checkpoints" / "segmentation" / "history.json").read_text())
    assert [r["step"] for r in history] == [50, 100, 150]  # every saved checkpoint, adapted
    step = metrics["selected_step"]
    ours = load_checkpoint(folder / "checkpoints" / "segmentation" / f"step-{step:07d}.pt")["modules"]["net"]
    theirs = load_checkpoint(run_dir_for(baseline_cfg) / "checkpoints" / "segmentation"
                             / f"step-{step:07d}.pt")["modules"]["net"]
    stats = [k for k in ours if k.endswith("running_mean")]
    assert stats and all(not torch.allclose(ours[k], theirs[k]) for k in stats)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k.endswith(".weight"))
    out = predict_file(metrics["selected_checkpoint"], darker_target / "tgt.tif", folder / "again.tif",
                       voxel_size=[5, 5, 5], device="cpu", progress=False)
    np.testing.assert_array_equal(tifffile.imread(out),
                                  tifffile.imread(folder / "predictions" / "target_test_prob.tif"))
    assert not hasattr(model_from_checkpoint(metrics["selected_checkpoint"])[0], "harmonizer")
    again = run(_config(darker_target, "adabn", reuse, out="adabn-again"), progress=False)
    assert again["target_iou"] == metrics["target_iou"]  # seeded patches: the same run twice


def test_without_a_reused_run_adabn_trains_its_source_segmenter_first(tiny_config):
    cfg = tiny_config("selection.criterion=source_val_iou", method="adabn")
    metrics = run(cfg, progress=False)
    stages = run_dir_for(cfg) / "checkpoints"
    trained = json.loads((stages / "source" / "history.json").read_text())
    adapted = json.loads((stages / "segmentation" / "history.json").read_text())
    assert [r["step"] for r in adapted] == [r["step"] for r in trained]
    assert metrics["method"] == "adabn" and metrics["selected_step"] in [r["step"] for r in trained]
