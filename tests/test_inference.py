"""Tiled inference: seamless blending, stitching positions, resampling, atomic tif output."""

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from domadapt.data.transforms import intensity_stats, normalize
from domadapt.errors import ConfigError
from domadapt.inference import (
    blend_window,
    predict_slice,
    predict_to_array,
    predict_to_tif,
    predict_volume,
    tile_starts,
)


class _Shared(dict):
    """Counters that the prediction-only copy of a model shares with the original."""

    def __deepcopy__(self, memo):
        return self


class ConstantLogit(nn.Module):
    """Outputs the same logit everywhere; counts the tiles it sees and can fail on demand."""

    def __init__(self, logit: float = 0.3, fail_on_call: int | None = None):
        super().__init__()
        self.logit, self.fail_on_call, self.counts = logit, fail_on_call, _Shared(calls=0, tiles=0)

    @property
    def calls(self) -> int:
        return self.counts["calls"]

    @property
    def tiles(self) -> int:
        return self.counts["tiles"]

    def forward(self, x):
        self.counts["calls"] += 1
        self.counts["tiles"] += x.shape[0]
        if self.calls == self.fail_on_call:
            raise self.error
        return torch.full_like(x, self.logit)


def conv_model(seed: int = 0) -> nn.Module:
    """A fixed translation-equivariant model: two zero-padded 3x3 convs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1))
    with torch.no_grad():
        model[2].weight.mul_(4.0)
    return model


def test_blend_window_and_tile_starts():
    window = blend_window(64, 16)
    assert window.shape == (64, 64) and window.min() > 0 and window[16:48, 16:48].min() == 1
    row = window[32]
    assert np.allclose(row[48:] + row[:16], 1.0)  # partition of unity over the overlap
    assert tile_starts(300, 256, 224) == [0, 44]
    assert tile_starts(256, 256, 224) == [0] and tile_starts(10, 256, 224) == [0]
    starts = tile_starts(1000, 64, 48)
    assert starts[-1] == 1000 - 64 and all(b - a <= 48 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ConfigError):
        blend_window(50, 8)


@pytest.mark.parametrize("shape", [(45, 77), (20, 13), (64, 64), (1, 40)])
def test_constant_model_gives_constant_map_without_seams(shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    prob = predict_slice(ConstantLogit(0.3), image, tile=32, overlap=8, batch_size=3)
    assert prob.shape == shape and prob.dtype == np.float32
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-0.3)), atol=1e-5)


def test_tiling_matches_whole_image_prediction():
    image = np.random.default_rng(1).random((100, 150), dtype=np.float32)
    model = conv_model().eval()
    with torch.no_grad():
        whole = torch.sigmoid(model(torch.from_numpy(image)[None, None]))[0, 0].numpy()
    tiled = predict_slice(model, image, tile=64, overlap=32, batch_size=4)
    # a one-pixel misplacement would change values by ~0.06 on average
    assert np.abs(np.diff(whole, axis=1)).mean() > 0.05
    # Only the 2-pixel inner tile borders differ, and they carry relative weight < 3e-3.
    np.testing.assert_allclose(tiled, whole, atol=2e-3)


def test_resampling_returns_input_grid():
    image = np.random.default_rng(2).integers(0, 255, (2, 100, 140), dtype=np.uint8)
    model = ConstantLogit(-1.0)
    prob = predict_to_array(model, image, voxel_size_nm=(20, 5, 5), model_pixel_nm=10.0,
                            tile=32, overlap=8)
    assert prob.shape == image.shape
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(1.0)), atol=1e-5)
    assert model.tiles == 2 * 6  # the model saw 50 x 70 slices: 2 x 3 tiles each


def test_volume_equals_slice_prediction_at_native_pixel_size():
    image = np.random.default_rng(3).integers(0, 255, (2, 40, 50), dtype=np.uint8)
    model = conv_model()
    model.train()
    stats = intensity_stats(image)
    probs = list(predict_volume(model, image, voxel_size_nm=(8, 8, 8), model_pixel_nm=8,
                                norm_stats=stats, tile=32, overlap=16))
    assert model.training  # mode restored
    expected = predict_slice(model.eval(), normalize(image[1], stats), tile=32, overlap=16)
    np.testing.assert_allclose(probs[1], expected, atol=1e-5)  # the copy runs channels-last


def test_predict_to_tif_writes_uint8_stack(tmp_path):
    image = np.random.default_rng(4).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    kwargs = dict(voxel_size_nm=(5, 5, 5), model_pixel_nm=5, tile=32, overlap=8)
    out = predict_to_tif(conv_model(), image, tmp_path / "sub" / "pred.tif", **kwargs)
    written = tifffile.imread(out)
    assert written.shape == image.shape and written.dtype == np.uint8
    expected = predict_to_array(conv_model(), image, **kwargs)
    np.testing.assert_array_equal(written, np.rint(expected * 255))
    binary = tifffile.imread(predict_to_tif(conv_model(), image, tmp_path / "b.tif",
                                            binary=True, **kwargs))
    np.testing.assert_array_equal(binary, np.where(expected >= 0.5, 255, 0))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.tif", "pred.tif"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_prediction_leaves_no_file(tmp_path, error):
    image = np.zeros((3, 32, 32), dtype=np.uint8)
    model = ConstantLogit(fail_on_call=2)  # one tile per slice: fails on the 2nd slice
    model.error = error
    with pytest.raises(type(error)):
        predict_to_tif(model, image, tmp_path / "pred.tif", voxel_size_nm=(1, 1, 1),
                       model_pixel_nm=1, tile=32, overlap=8)
    assert list(tmp_path.iterdir()) == []
    assert model.training  # mode restored despite the failure
