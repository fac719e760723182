"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m domadapt.cli run ...`` sets WORLD_SIZE/RANK;
each process then samples its own batches (its own generator seed), gradients
are averaged by DDP, and only rank 0 evaluates, logs and writes files. On the
CPU the gloo backend is used, so the same code path is testable without GPUs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend)
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(info: DistInfo) -> None:
    if info.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


class _Joint(nn.Module):
    """Every module of a stage as one, so that each objective is one DDP forward.

    Objectives call any part of any module (``net.encoder``, a discriminator, an
    EMA teacher); DDP only synchronises gradients of what runs inside its own
    forward, so the whole objective runs there, on the plain modules.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)

    def forward(self, loss_fn: Callable, batch: dict, scratch: dict):
        return loss_fn(dict(self.parts.items()), batch, scratch)


def objective_runner(modules: dict[str, nn.Module], info: DistInfo,
                     device: torch.device) -> Callable:
    """``run(loss_fn, batch, scratch)``: the objective on the stage's modules, inside one
    DistributedDataParallel forward when distributed.

    Parameters an objective leaves unused (a discriminator's step does not touch the
    generator; a frozen or weight-0 head) are allowed: ``find_unused_parameters``.
    """
    plain = dict(modules)
    if not info.enabled or not any(p.requires_grad for m in plain.values() for p in m.parameters()):
        return lambda loss_fn, batch, scratch: loss_fn(plain, batch, scratch)
    ids = [device.index] if device.type == "cuda" else None
    warnings.filterwarnings("ignore", message=".*find_unused_parameters=True was specified.*")
    joint = nn.parallel.DistributedDataParallel(_Joint(plain), device_ids=ids,
                                                find_unused_parameters=True)
    return joint


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision (e.g. early stop) for every rank."""
    if not info.enabled:
        return flag
    dev = device if device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor([int(flag)], device=dev)
    torch_dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def all_gather_objects(obj, info: DistInfo) -> list:
    """Gather one picklable object per rank (e.g. generator states for resume)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's object (e.g. the evaluation history) on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch_dist.barrier()
