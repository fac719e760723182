"""The training augmentations: labels follow the image, off means untouched, options checked."""

import pytest
import torch

from domadapt.config import AugmentConfig, RunConfig, build_config, validate
from domadapt.data.augment import augment_batch
from domadapt.errors import ConfigError

NOTHING = dict(flip=False, rot90=False, brightness=0.0, contrast=0.0)


def blocks(n: int = 6, size: int = 64) -> dict[str, torch.Tensor]:
    """Piecewise-constant images whose mask is exactly image > 0.5."""
    g = torch.Generator().manual_seed(0)
    coarse = (torch.rand(n, 1, 8, 8, generator=g) > 0.5).float()
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")
    return {"image": 0.2 + 0.6 * image, "mask": image.clone()}


def run(cfg: AugmentConfig, batch: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    return augment_batch(batch, cfg, torch.Generator().manual_seed(seed))


def test_deformation_moves_mask_and_image_together():
    batch = blocks()
    out = run(AugmentConfig(**NOTHING, rotate=40, scale=0.2, elastic=6), batch)
    assert not torch.equal(out["mask"], batch["mask"])  # the patches did move
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}  # labels stay labels (nearest)
    agree = ((out["image"] > 0.5).float() == out["mask"]).float().mean()
    assert agree > 0.97  # only bilinear edge pixels may disagree


def test_probability_zero_leaves_every_sample_untouched():
    batch = blocks()
    off = AugmentConfig(**NOTHING, rotate=40, scale=0.2, elastic=6, deform_p=0.0, gamma=0.5,
                        gamma_p=0.0, curve=0.3, curve_p=0.0, gain_field=0.5, gain_field_p=0.0)
    out = run(off, batch)
    assert torch.allclose(out["image"], batch["image"], atol=1e-5)
    assert torch.equal(out["mask"], batch["mask"])


def test_probability_half_changes_some_samples_and_not_others():
    batch = blocks(n=32)
    out = run(AugmentConfig(**NOTHING, gain_field=0.5, gain_field_p=0.5), batch)
    changed = (out["image"] - batch["image"]).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 4 < int(changed.sum()) < 28


def test_intensity_curve_is_monotone_and_reshapes_the_histogram():
    ramp = torch.linspace(0, 1, 64 * 64).view(1, 1, 64, 64).repeat(8, 1, 1, 1)
    out = run(AugmentConfig(**NOTHING, curve=0.2), {"image": ramp})["image"].flatten(1)
    assert (out.diff(dim=1) >= -1e-6).all()  # order of intensities kept
    linear_fit = torch.stack([torch.linspace(row[0], row[-1], row.numel()) for row in out])
    assert (out - linear_fit).abs().amax() > 0.02  # not a global gain and offset


def test_gain_field_varies_across_the_patch():
    flat = torch.full((4, 1, 64, 64), 0.5)
    out = run(AugmentConfig(**NOTHING, gain_field=0.4), {"image": flat})["image"]
    spread = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    assert (spread > 0.01).all()


def test_same_generator_seed_gives_the_same_batch():
    cfg = AugmentConfig(rotate=30, scale=0.1, elastic=4, curve=0.1, gain_field=0.2, noise=0.05,
                        deform_p=0.5)
    a, b = run(cfg, blocks(), seed=5), run(cfg, blocks(), seed=5)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


@pytest.mark.parametrize("key,value,message", [
    ("curve", -0.1, "augment.curve' must be >= 0"),
    ("deform_p", 1.5, "augment.deform_p' must be in [0, 1]"),
    ("scale", 1.0, "augment.scale' must be below 1"),
])
def test_bad_augment_options_name_the_key(key, value, message):
    cfg = RunConfig()
    setattr(cfg.augment, key, value)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(cfg)


def test_strong_view_options_are_checked_under_their_own_key():
    cfg = build_config(profile="smoke", method="self_training")
    cfg.options.strong.noise_p = -1
    with pytest.raises(ConfigError, match="self_training.strong.noise_p"):
        validate(cfg)
