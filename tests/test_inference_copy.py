"""The prediction-only copy of a network: same outputs, faster layout, original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from domadapt.models.inference_copy import inference_copy, prepare_input
from domadapt.models.unet import build_unet


@pytest.mark.parametrize("arch", ["unet", "attention_unet"])
def test_copy_predicts_what_the_original_predicts_and_leaves_it_alone(arch):
    torch.manual_seed(0)
    net = build_unet(arch, 8, 3, "batch")
    net.train()
    for _ in range(3):  # running statistics away from their initial values
        net(torch.randn(4, 1, 64, 64))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_copy(net, "cpu")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = net.eval()(x)
        got = fast(prepare_input(fast, x))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_instance_norm_becomes_the_equal_group_norm():
    torch.manual_seed(0)
    net = build_unet("unet", 8, 2, "instance")
    with torch.no_grad():  # affine parameters away from 1 and 0, so a lost copy would show
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    fast = inference_copy(net, "cpu")
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in fast.modules()) == sum(
        isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    x = torch.randn(2, 1, 64, 64) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(fast(prepare_input(fast, x)), net.eval()(x), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())


def test_other_norms_are_kept():
    net = build_unet("unet", 8, 2, "group")
    fast = inference_copy(net, "cpu")
    assert sum(isinstance(m, nn.GroupNorm) for m in fast.modules()) == sum(
        isinstance(m, nn.GroupNorm) for m in net.modules())


def test_bfloat16_is_used_only_where_the_cpu_computes_it_and_stays_within_1_in_255():
    from domadapt.inference import predict_slice
    from domadapt.models.inference_copy import native_cpu_bf16

    torch.manual_seed(0)
    net = build_unet("unet", 8, 3, "batch")
    for _ in range(3):
        net(torch.randn(4, 1, 64, 64))
    fast = inference_copy(net, "cpu", cpu_bf16=True)
    assert fast.cpu_bf16 == native_cpu_bf16()
    assert inference_copy(net, "cpu", cpu_bf16=False).cpu_bf16 is False
    image = torch.rand(150, 170).numpy()
    exact = predict_slice(inference_copy(net, "cpu"), image, tile=64, overlap=16)
    quick = predict_slice(fast, image, tile=64, overlap=16)
    assert abs(quick - exact).max() <= 1 / 255


def test_ibn_normalises_per_image_in_the_shallow_encoder_only_and_its_copy_predicts_the_same():
    from domadapt.models.unet import IBN_LEVELS

    torch.manual_seed(0)
    net = build_unet("unet", 8, 3, "ibn")
    kinds = [type(block[1]) for block in net.encoder.blocks]
    assert kinds == [nn.InstanceNorm2d] * IBN_LEVELS + [nn.BatchNorm2d] * (4 - IBN_LEVELS)
    assert all(isinstance(block[1], nn.BatchNorm2d) for block in net.decoder.blocks)
    net.train()
    for _ in range(3):
        net(torch.randn(4, 1, 64, 64))
    fast = inference_copy(net, "cpu")
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) for m in fast.modules())
    x = torch.randn(2, 1, 64, 64) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(fast(prepare_input(fast, x)), net.eval()(x), atol=1e-4, rtol=1e-4)
