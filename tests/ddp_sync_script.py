"""Launched by tests/test_ddp.py under torchrun: after a two-objective stage (a generator and a
discriminator, each with its own optimiser, one calling a method besides forward), every rank
must hold the same weights, i.e. the trainer synchronised every gradient."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from domadapt.training.distributed import init_from_env
from domadapt.training.trainer import Objective, Stage, Trainer


class Gen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.features(x))

    def features(self, x):
        return torch.relu(self.body(x))


def main(out: Path) -> None:
    info = init_from_env("cpu")
    torch.manual_seed(info.rank)  # different starts: DDP must broadcast rank 0's weights
    g, d = Gen(), nn.Linear(1, 1)

    def g_loss(modules, batch, scratch):
        feats = modules["G"].features(batch["x"])  # a second entry point besides forward
        value = modules["D"](modules["G"].head(feats)).mean() + feats.pow(2).mean()
        return value, {}

    def d_loss(modules, batch, scratch):
        return (modules["D"](modules["G"](batch["x"]).detach()) ** 2).mean(), {}

    stage = Stage(name="toy", modules={"G": g, "D": d},
                  optimizers={"G": torch.optim.SGD(g.parameters(), 0.1),
                              "D": torch.optim.SGD(d.parameters(), 0.1)},
                  objectives=[Objective(g_loss, "G"), Objective(d_loss, "D")],
                  batches=lambda gen: {"x": torch.randn(8, 4, generator=gen)},
                  steps=6, eval_every=3, predictor=None)
    Trainer(out, torch.device("cpu"), 0, dist=info, progress=False).fit(stage)
    flat = torch.cat([p.detach().flatten() for m in (g, d) for p in m.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(info.world_size)]
    dist.all_gather(gathered, flat)
    if info.is_main:
        (out / "sync.json").write_text(json.dumps(
            {"same": all(torch.equal(gathered[0], x) for x in gathered)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
