"""Data-parallel training under torchrun, on the CPU with the gloo backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from domadapt.training.checkpoint import load_checkpoint


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
@pytest.mark.parametrize("method, stage", [("baseline", "segmentation"),
                                           ("self_training-sections", "self_training")])
def test_two_process_gloo_run(tmp_path, method, stage):
    torchrun = shutil.which("torchrun") or str(os.path.join(os.path.dirname(sys.executable),
                                                            "torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "domadapt.cli", "run",
           "--method", method, "--profile", "smoke", "--quiet", "--device", "cpu", "--out", str(tmp_path),
           "--set", "train.steps=10", "--set", "train.eval_every=5", "--set", "train.threads=1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["world_size"] == 2 and metrics["target_iou"] is not None
    last = load_checkpoint(next(tmp_path.rglob(f"checkpoints/{stage}/last.pt")))
    assert len(last["generators"]) == 2  # each rank's sampler state, for resume
    assert not torch.equal(last["generators"][0], last["generators"][1])
