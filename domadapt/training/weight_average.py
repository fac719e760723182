"""An exponential moving average of a module's weights, kept beside the trained module.

Averaging the weights along the optimiser's path lands in flatter solutions that transfer
better to an unseen domain (SWAD, Cha et al. 2021; SWA, Izmailov et al. 2018) and takes the
step-to-step noise out of every checkpoint a label-free criterion can choose. The trainer
evaluates and saves the average; the live module keeps training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def ema_update(average: nn.Module, live: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * live, for weights and float buffers.

    Integer buffers (batch-norm's batch counter) are copied: an average of
    counters means nothing.
    """
    for a, b in zip(average.parameters(), live.parameters()):
        a.lerp_(b.detach(), 1.0 - decay)
    for a, b in zip(average.buffers(), live.buffers()):
        if a.dtype.is_floating_point:
            a.lerp_(b.detach(), 1.0 - decay)
        else:
            a.copy_(b)


class WeightAverage:
    """``average = d * average + (1 - d) * live`` after every step, for parameters and
    floating buffers (batch-norm statistics); integer buffers are copied.

    ``d`` ramps up as ``(1 + n) / (10 + n)`` until it reaches ``decay`` so that the first
    updates do not keep the random initial weights.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"A weight-average decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(module).requires_grad_(False).eval()

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self, live: nn.Module) -> None:
        ema_update(self.module, live, self.current_decay())
        self.updates += 1

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay,
                "weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
