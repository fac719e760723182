"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m domadapt.cli run ...`` sets WORLD_SIZE/RANK;
each process then samples its own batches (its own generator seed), gradients
are averaged by DDP, and only rank 0 evaluates, logs and writes files. On the
CPU the gloo backend is used, so the same code path is testable without GPUs.
"""

from __future__ import annotations

import os
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


def wrap_ddp(modules: dict[str, nn.Module], info: DistInfo,
             device: torch.device) -> dict[str, nn.Module]:
    """DDP-wrap every module with trainable parameters when distributed."""
    if not info.enabled:
        return dict(modules)
    ids = [device.index] if device.type == "cuda" else None
    return {k: (nn.parallel.DistributedDataParallel(m, device_ids=ids)
                if any(p.requires_grad for p in m.parameters()) else m)
            for k, m in modules.items()}


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
