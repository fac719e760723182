"""A copy of a network made for prediction only: batch norm folded, channels-last on the CPU.

Prediction is most of the cost of an evaluation and of ``domadapt predict``.
Folding each eval-mode BatchNorm into the convolution before it removes a
pass over every feature map, and oneDNN's CPU convolutions run about 1.7x
faster on channels-last tensors; together about 2x on two cores. Instance
norm cannot be folded (its statistics are each tile's own), but group norm
with one group per channel computes the same thing, and its CPU kernel
predicts about 1.8x faster in float32 (1.4x in bfloat16); the copy uses it.
On CPUs with native bfloat16 (AMX or AVX512-BF16) the copy can also run under
bfloat16 autocast, about 3x faster again, with probabilities within 1/255 of
float32 (docs/results/performance.md). The original network is never
touched, so training can go on.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def inference_copy(model: nn.Module, device: torch.device | str, cpu_bf16: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` on ``device``: BN folded, instance norm as group norm, and on
    the CPU channels-last (with bfloat16 autocast when ``cpu_bf16`` and the CPU computes it natively)."""
    fast = copy.deepcopy(model).eval().to(device)
    for module in list(fast.modules()):
        if isinstance(module, nn.Sequential):
            _fold_batchnorm(module)
        _instance_as_group_norm(module)
    if torch.device(device).type == "cpu":
        fast = fast.to(memory_format=torch.channels_last)
        fast.channels_last = True
        fast.cpu_bf16 = cpu_bf16 and native_cpu_bf16()
    return fast


def native_cpu_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix units (AMX) or instructions (AVX512-BF16).

    Elsewhere bfloat16 is emulated and slower than float32, so it is never used.
    """
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_for(model: nn.Module, device: torch.device, cuda_amp: bool):
    """The autocast context of a prediction: float16 on CUDA with AMP, bfloat16 on a capable CPU."""
    if cuda_amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and getattr(model, "cpu_bf16", False):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_input(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The batch in the memory format ``model`` was prepared for."""
    if getattr(model, "channels_last", False) and batch.dim() == 4:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def _fold_batchnorm(sequence: nn.Sequential) -> None:
    """Replace each Conv2d -> BatchNorm2d pair of ``sequence`` by one equivalent Conv2d."""
    names = list(sequence._modules)
    for first, second in zip(names, names[1:]):
        conv, norm = sequence._modules[first], sequence._modules[second]
        if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                and norm.running_mean is not None):
            sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
            sequence._modules[second] = nn.Identity()


def _instance_as_group_norm(module: nn.Module) -> None:
    """Replace each affine InstanceNorm2d child of ``module`` by the equal GroupNorm
    (one group per channel, the same eps and affine parameters)."""
    for name, child in list(module.named_children()):
        if (isinstance(child, nn.InstanceNorm2d) and child.affine
                and not child.track_running_stats):
            group = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps)
            group.to(device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                group.weight.copy_(child.weight)
                group.bias.copy_(child.bias)
            setattr(module, name, group)
