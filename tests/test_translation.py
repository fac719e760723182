"""Translation networks (CUT, CycleGAN) and their trainer objectives, on tiny CPU problems."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domadapt.errors import ConfigError
from domadapt.models.translation import (
    DEFAULT_NCE_LAYERS,
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    init_weights,
    lsgan_loss,
    patch_nce_loss,
)
from domadapt.training.translation_objectives import (
    TranslationLossWeights,
    cut_objectives,
    cyclegan_objectives,
    translator_modules,
    translator_param_groups,
)

SIZE, WIDTH, BLOCKS = 32, 8, 2


def _generator(seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    net = ResnetGenerator(WIDTH, BLOCKS)
    init_weights(net)
    return net


def _blobs(n: int, g: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """Sparse bright smooth blobs (~0.85) on a dark background (~0.15), with a little noise."""
    noise = torch.randn(n, 1, size, size, generator=g)
    k = torch.exp(-torch.arange(-6, 7.0) ** 2 / (2 * 2.5**2))
    k = k / k.sum()
    field = F.conv2d(F.pad(noise, (6, 6, 0, 0), mode="circular"), k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, 6, 6), mode="circular"), k.view(1, 1, -1, 1))
    field = (field - field.mean((2, 3), keepdim=True)) / field.std((2, 3), keepdim=True)
    blob = torch.sigmoid((field - 0.6) * 6)
    return (0.15 + 0.7 * blob + 0.03 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)


def _to_b(x: torch.Tensor) -> torch.Tensor:
    """Domain b: a strong gamma (darker background, dimmer blobs)."""
    return x**3


def _w1(x: torch.Tensor, y: torch.Tensor) -> float:
    """1D Wasserstein distance of the intensity histograms (equal pixel counts)."""
    return (x.flatten().sort().values - y.flatten().sort().values).abs().mean().item()


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.flatten() - x.mean(), y.flatten() - y.mean()
    return (x @ y / (x.norm() * y.norm())).item()


def _step(objectives, modules, optimizers, batch, g, step) -> tuple[dict, dict]:
    """One step exactly as Trainer._step runs it (no AMP, no clipping)."""
    scratch: dict = {"generator": g, "step": step}
    logged: dict = {}
    for objective in objectives:
        optimizer = optimizers[objective.optimizer]
        optimizer.zero_grad(set_to_none=True)
        loss, parts = objective.loss(modules, batch, scratch)
        loss.backward()
        optimizer.step()
        logged.update(parts)
    return logged, scratch


def _setup(kind: str, seed: int, lr: float = 2e-3):
    modules = translator_modules(kind, WIDTH, BLOCKS, 8, seed, nce_dim=32, num_patches=64)
    optimizers = {k: torch.optim.Adam(v, lr=lr, betas=(0.5, 0.999))
                  for k, v in translator_param_groups(kind, modules).items()}
    return modules, optimizers


def _train(kind: str, weights: TranslationLossWeights, seed: int, steps: int = 30) -> dict:
    modules, optimizers = _setup(kind, seed)
    objectives = cut_objectives(weights) if kind == "cut" else cyclegan_objectives(weights)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        batch = {"a": _blobs(4, g), "b": _to_b(_blobs(4, g))}
        _step(objectives, modules, optimizers, batch, g, step)
    return modules


def _eval_pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(999)
    return _blobs(16, g), _to_b(_blobs(16, g))


# ---------------------------------------------------------------------- generator


def test_generator_keeps_shape_and_output_in_unit_range():
    net = _generator()
    x = torch.rand(2, 1, SIZE, 48) * 2.0 - 0.5  # the whole clipped range [-0.5, 1.5]
    with torch.no_grad():
        out = net(x)
        for p in net.decoder[-2].parameters():  # saturate the tanh: still within [0, 1]
            p.mul_(1e3)
        saturated = net(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert saturated.min() >= 0 and saturated.max() <= 1 and saturated.std() > 0.1


def test_generator_rejects_sizes_that_are_not_multiples_of_the_downsampling():
    net = _generator()
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="multiples of 4"):
        net.features(torch.rand(1, 1, 32, 34))
    with pytest.raises(ValueError, match="encoder indices"):
        net.features(torch.rand(1, 1, 32, 32), [0, 99])
    ResnetGenerator(WIDTH, BLOCKS, n_down=1)(torch.rand(1, 1, 30, 30))  # 2**1 divides 30


def test_generator_features_match_declared_channels_and_the_translation_pass():
    net = _generator()
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        feats = net.features(x)
        out, shared = net.forward_with_features(x)
        plain = net(x)
    assert [f.shape[1] for f in feats] == net.feature_channels(DEFAULT_NCE_LAYERS) == [8, 16, 32, 32]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 8]
    assert torch.allclose(out, plain)
    assert all(torch.allclose(a, b) for a, b in zip(feats, shared))


# ---------------------------------------------------------------------- discriminator, NCE head


def test_discriminator_returns_a_patch_map_of_logits():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8, n_layers=3)
    small, large = disc(torch.rand(2, 1, 32, 32)), disc(torch.rand(2, 1, 64, 64))
    assert small.shape == (2, 1, 2, 2)
    assert large.shape == (2, 1, 6, 6)  # one logit per overlapping patch, more for larger images


def test_patch_sampler_reuses_positions_and_returns_unit_vectors():
    torch.manual_seed(0)
    head = PatchSampleMLP([4, 6], out_dim=16, num_patches=10)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 3, 3)]
    out, ids = head(feats, generator=torch.Generator().manual_seed(1))
    again, ids_again = head(feats, generator=torch.Generator().manual_seed(1))
    assert [o.shape for o in out] == [(20, 16), (18, 16)]  # B*min(num_patches, H*W)
    assert all(torch.equal(a, b) for a, b in zip(ids, ids_again))
    assert all(torch.allclose(o.norm(dim=1), torch.ones(len(o))) for o in out)

    same, _ = head(feats, patch_ids=ids)
    assert all(torch.allclose(a, b) for a, b in zip(out, same))
    other, _ = head(feats, patch_ids=[torch.flip(i, [0]) for i in ids])
    assert not torch.allclose(out[0], other[0])

    # Only the sampled positions matter: changing any other position leaves the output unchanged.
    unsampled = [p for p in range(64) if p not in set(ids[0].tolist())][0]
    edited = feats[0].clone().flatten(2)
    edited[:, :, unsampled] += 5.0
    out_edit, _ = head([edited.view_as(feats[0]), feats[1]], patch_ids=ids)
    assert torch.allclose(out_edit[0], out[0])
    edited[:, :, ids[0][0]] += 5.0
    out_edit, _ = head([edited.view_as(feats[0]), feats[1]], patch_ids=ids)
    assert not torch.allclose(out_edit[0][0], out[0][0])


def test_patch_nce_prefers_matching_patches_and_uses_negatives_of_the_same_image_only():
    g = torch.Generator().manual_seed(0)
    key = F.normalize(torch.randn(2 * 16, 8, generator=g), dim=1)
    noise = F.normalize(torch.randn(2 * 16, 8, generator=g), dim=1)
    matched = patch_nce_loss(key.clone(), key, batch_size=2)
    unmatched = patch_nce_loss(noise, key, batch_size=2)
    assert matched < 0.5 * unmatched
    assert unmatched > 0.5 * math.log(16)  # chance level is log(P)

    per_image = [patch_nce_loss(noise[i * 16:(i + 1) * 16], key[i * 16:(i + 1) * 16], 1) for i in (0, 1)]
    assert torch.allclose(unmatched, torch.stack(per_image).mean())

    query, key = noise.clone().requires_grad_(), key.clone().requires_grad_()
    patch_nce_loss(query, key, 2).backward()
    assert query.grad is not None and key.grad is None  # keys are detached


def test_lsgan_loss_and_init_weights():
    assert lsgan_loss(torch.ones(2, 1, 3, 3), real=True) == 0
    assert lsgan_loss(torch.zeros(2, 1, 3, 3), real=False) == 0
    assert lsgan_loss(torch.zeros(2, 1, 3, 3), real=True) == 1
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=16)
    init_weights(disc, std=0.02)
    conv = disc.net[0]
    assert abs(conv.weight.std().item() - 0.02) < 0.005 and torch.all(conv.bias == 0)


# ---------------------------------------------------------------------- modules and objectives


@pytest.mark.parametrize("kind, keys", [("cut", {"G", "F", "D"}), ("cyclegan", {"G", "G_inv", "D", "D_inv"})])
def test_translator_modules_are_seeded_and_split_into_two_parameter_groups(kind, keys):
    first, again, other = (translator_modules(kind, WIDTH, BLOCKS, 8, seed) for seed in (3, 3, 4))
    assert set(first) == keys
    assert all(torch.equal(first["G"].state_dict()[k], v) for k, v in again["G"].state_dict().items())
    assert not torch.equal(first["G"].encoder[0][1].weight, other["G"].encoder[0][1].weight)
    groups = translator_param_groups(kind, first)
    every = {id(p) for m in first.values() for p in m.parameters()}
    g_ids, d_ids = {id(p) for p in groups["G"]}, {id(p) for p in groups["D"]}
    assert g_ids | d_ids == every and not g_ids & d_ids  # incl. the eagerly built NCE head
    assert {id(p) for p in first["D"].parameters()} <= d_ids
    with pytest.raises(ConfigError, match="Unknown translator"):
        translator_modules("pix2pix", WIDTH, BLOCKS, 8, 0)


@pytest.mark.parametrize("kind", ["cut", "cyclegan"])
def test_objectives_report_finite_floats_and_store_detached_fakes(kind):
    modules, optimizers = _setup(kind, seed=0)
    weights = TranslationLossWeights()
    objectives = cut_objectives(weights) if kind == "cut" else cyclegan_objectives(weights)
    assert [o.optimizer for o in objectives] == ["G", "D"]
    g = torch.Generator().manual_seed(0)
    batch = {"a": _blobs(2, g), "b": _to_b(_blobs(2, g))}
    parts, scratch = _step(objectives, modules, optimizers, batch, g, 0)
    expected = {"g_gan", "nce", "nce_idt", "d_loss"} if kind == "cut" else {
        "g_gan", "g_gan_inv", "cycle", "identity", "d_loss", "d_inv_loss"}
    assert expected <= set(parts)
    assert all(isinstance(v, float) and math.isfinite(v) for v in parts.values())
    fakes = ["fake"] if kind == "cut" else ["fake", "fake_inv"]
    for key in fakes:
        assert scratch[key].shape == batch["a"].shape and not scratch[key].requires_grad

    # The discriminator objective sends no gradient to the generator side.
    for p in optimizers["G"].param_groups[0]["params"]:
        p.grad = None
    loss, _ = objectives[1].loss(modules, batch, scratch)
    loss.backward()
    assert all(p.grad is None for p in optimizers["G"].param_groups[0]["params"])
    with pytest.raises(RuntimeError, match="generator objective must run before"):
        objectives[1].loss(modules, batch, {"generator": g, "step": 0})


def test_cut_training_moves_the_histogram_of_a_to_b_and_keeps_the_content():
    a, b = _eval_pair()
    untrained = _setup("cut", seed=0)[0]["G"]
    trained = _train("cut", TranslationLossWeights(), seed=0)["G"]
    without_gan = _train("cut", TranslationLossWeights(gan=0.0), seed=0)["G"]
    with torch.no_grad():
        fake, fake_untrained, fake_no_gan = trained(a), untrained(a), without_gan(a)
    distance = _w1(fake, b)
    assert distance < 0.5 * _w1(a, b)
    assert distance < 0.5 * _w1(fake_untrained, b)
    assert distance < 0.5 * _w1(fake_no_gan, b)  # the adversarial term does the moving
    assert _corr(fake, a) > 0.5  # PatchNCE keeps the blobs where they were


def test_cyclegan_training_moves_the_histograms_both_ways():
    a, b = _eval_pair()
    modules = _train("cyclegan", TranslationLossWeights(), seed=0)
    with torch.no_grad():
        fake, fake_inv = modules["G"](a), modules["G_inv"](b)
    assert _w1(fake, b) < 0.5 * _w1(a, b)
    assert _w1(fake_inv, a) < 0.5 * _w1(a, b)
    assert _corr(fake, a) > 0.5
