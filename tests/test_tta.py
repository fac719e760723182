"""Test-time augmentation: views undo exactly, outputs are averaged, d4 makes prediction
equivariant to flips and turns, and the setting reaches the final prediction and predict."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from domadapt.errors import ConfigError
from domadapt.inference import predict_slice
from domadapt.tta import TTA_MODES, from_view, to_view, tta_views, with_tta
from tests.conftest import run_cli


def _asymmetric_batch() -> np.ndarray:
    return np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_every_view_is_undone_exactly_and_views_differ(mode):
    batch = _asymmetric_batch()
    seen = [to_view(batch, view) for view in tta_views(mode)]
    assert len(seen) == {"none": 1, "flips": 4, "d4": 8}[mode]
    for view, image in zip(tta_views(mode), seen):
        np.testing.assert_array_equal(from_view(image, view), batch)
    for i in range(len(seen)):
        for j in range(i):
            assert not np.array_equal(seen[i], seen[j])


def test_flips_are_the_four_mirror_images():
    batch = _asymmetric_batch()
    mirrors = [batch, batch[..., ::-1], batch[..., ::-1, :], batch[..., ::-1, ::-1]]
    for view in tta_views("flips"):
        assert sum(np.array_equal(to_view(batch, view), m) for m in mirrors) == 1


def test_outputs_are_averaged_on_the_input_grid():
    """A 'model' that ignores its input and answers a left-to-right ramp: its left-right
    mirror view, undone, is the reversed ramp, so the flips' mean is 0.5 everywhere; without
    views the ramp comes back unchanged."""
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, 16, dtype=np.float32), (3, 16, 16))

    def fn(batch):
        return ramp.copy()

    batch = _asymmetric_batch()
    np.testing.assert_array_equal(with_tta(fn, "none")(batch), ramp)
    np.testing.assert_allclose(with_tta(fn, "flips")(batch), 0.5, atol=1e-6)
    np.testing.assert_allclose(with_tta(fn, "d4")(batch), 0.5, atol=1e-6)


def _skewed_conv() -> nn.Module:
    """A fixed conv net whose kernels have no symmetry: its output on a turned image is not
    the turned output."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.Tanh(),
                         nn.Conv2d(4, 1, 5, padding=2)).eval()


def test_d4_prediction_is_equivariant_to_turns_and_flips():
    model = _skewed_conv()
    image = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    turned, flipped = np.rot90(image).copy(), image[:, ::-1].copy()

    plain = predict_slice(model, image, tile=64, overlap=0)
    assert np.abs(predict_slice(model, turned, tile=64, overlap=0) - np.rot90(plain)).max() > 1e-3

    d4 = predict_slice(model, image, tile=64, overlap=0, tta="d4")
    np.testing.assert_allclose(predict_slice(model, turned, tile=64, overlap=0, tta="d4"),
                               np.rot90(d4), atol=1e-5)
    np.testing.assert_allclose(predict_slice(model, flipped, tile=64, overlap=0, tta="d4"),
                               d4[:, ::-1], atol=1e-5)
    flips = predict_slice(model, image, tile=64, overlap=0, tta="flips")
    np.testing.assert_allclose(predict_slice(model, flipped, tile=64, overlap=0, tta="flips"),
                               flips[:, ::-1], atol=1e-5)


def test_config_and_cli_offer_exactly_the_modes_of_tta():
    """The config's Literal and the CLI's choices are spelled out (the CLI must start without
    numpy); they must name the modes domadapt.tta implements."""
    import typing

    from domadapt.cli_outputs import predict
    from domadapt.config import InferenceConfig

    hints = typing.get_type_hints(InferenceConfig)
    assert typing.get_args(hints["tta"]) == TTA_MODES
    option = next(p for p in predict.params if p.name == "tta")
    assert tuple(option.type.choices) == TTA_MODES


def test_unknown_mode_is_one_clear_error():
    with pytest.raises(ConfigError, match="inference.tta must be one of none, flips, d4"):
        tta_views("rot90")
    from domadapt.config import build_config

    with pytest.raises(ConfigError, match="inference.tta"):
        build_config(profile="smoke", overrides=["inference.tta=rot90"])


def test_run_predicts_its_target_with_the_configured_views(monkeypatch, tmp_path):
    """The final prediction honours inference.tta; the evaluations during training do not,
    so the chosen checkpoint is the same with and without views."""
    import domadapt.pipeline as pipeline
    from domadapt.config import build_config

    seen = []
    original = pipeline.predict_to_tif

    def spy(*args, **kwargs):
        seen.append(kwargs["tta"])
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "predict_to_tif", spy)
    chosen = []
    for mode in ("none", "flips"):
        cfg = build_config(profile="smoke", overrides=["train.threads=1", f"inference.tta={mode}"],
                           flags={"out": str(tmp_path / mode)})
        metrics = pipeline.run(cfg, progress=False)
        chosen.append(metrics["selected_step"])
    assert seen == ["none", "flips"]
    assert chosen[0] == chosen[1]


def test_predict_cli_tta_flag(monkeypatch, capsys, tmp_path):
    from domadapt.config import build_config
    from domadapt.pipeline import run, run_dir_for

    cfg = build_config(profile="smoke", overrides=["train.threads=1"],
                       flags={"out": str(tmp_path / "runs")})
    run(cfg, progress=False)
    ckpt = run_dir_for(cfg) / "checkpoints/segmentation/best-source_val_iou.pt"
    volume = (np.random.default_rng(0).random((2, 48, 40)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    outs = {}
    for mode in ("none", "d4"):
        out = tmp_path / f"{mode}.tif"
        code, _, err = run_cli(monkeypatch, capsys, "predict", "--checkpoint", str(ckpt),
                               "--input", str(tmp_path / "in.tif"), "--output", str(out),
                               "--voxel-size", "5,5,5", "--quiet", "--tta", mode)
        assert code == 0, err
        outs[mode] = tifffile.imread(out)
        assert outs[mode].shape == volume.shape
    assert not np.array_equal(outs["none"], outs["d4"])
    code, _, err = run_cli(monkeypatch, capsys, "predict", "--checkpoint", str(ckpt),
                           "--input", str(tmp_path / "in.tif"), "--output", str(tmp_path / "x.tif"),
                           "--tta", "sideways")
    assert code == 2 and "sideways" in err
