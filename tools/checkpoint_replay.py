"""What the replay tools share: a finished run's data as it trained, and each of its
evaluated checkpoints ready to be scored again by monitors (eval_bf16.py, crop_regret.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from domadapt.config import RunConfig, config_from_plain, load_yaml
from domadapt.data.prepare import prepare_data
from domadapt.selection import load_history
from domadapt.strategies.base import Domains
from domadapt.training.monitors import EvalContext


def stored_run(run_dir: Path) -> tuple[RunConfig, Domains]:
    """The run's recorded config and its data, prepared again the same way."""
    cfg = config_from_plain(load_yaml(run_dir / "config.yaml"), stored=True)
    data = prepare_data(cfg)
    return cfg, Domains(data.source_train, data.source_val, data.target_train, data.target_test)


def checkpoints(run_dir: Path) -> Iterator[tuple[int, nn.Module]]:
    """(step, network) for every evaluated checkpoint of the run's selection stage."""
    from domadapt.predict import model_from_checkpoint

    history = load_history(run_dir)
    for record in history.records:
        yield record["step"], model_from_checkpoint(history.stage_dir / f"step-{record['step']:07d}.pt")[0]


def eval_context(cfg: RunConfig, net: nn.Module, step: int, cpu_bf16: bool) -> EvalContext:
    """The CPU evaluation context a monitor scores ``net`` in, tiled as the run predicts."""
    return EvalContext({"net": net}, net, torch.device("cpu"), False, step, want_images=False,
                       tile=cfg.inference.tile, overlap=cfg.inference.overlap, cpu_bf16=cpu_bf16)
