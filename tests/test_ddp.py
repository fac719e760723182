"""Data-parallel training under torchrun, on the CPU with the gloo backend: every method."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from domadapt.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed missing")
SHORT = ("train.steps=10", "train.eval_every=5", "train.threads=1", "style.stages.translator.steps=4",
         "style.stages.translator.eval_every=2", "ssl.stages.pretext.steps=4")


def _torchrun(out, method: str, *overrides: str) -> dict:
    torchrun = shutil.which("torchrun") or str(os.path.join(os.path.dirname(sys.executable),
                                                            "torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "domadapt.cli", "run",
           "--method", method, "--profile", "smoke", "--quiet", "--device", "cpu", "--out", str(out)]
    for item in (*SHORT, *overrides):
        cmd += ["--set", item]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    assert metrics["world_size"] == 2 and metrics["target_iou"] is not None
    return metrics


@pytest.mark.parametrize("method, stage", [
    ("baseline", "segmentation"), ("self_training-sections", "self_training"),
    ("ssl", "finetune"), ("multitask-paper", None), ("style_transfer-cyclegan", "translator")])
def test_two_process_gloo_run(tmp_path, method, stage):
    metrics = _torchrun(tmp_path, method)
    stage = stage or list(metrics["stages"])[-1]
    last = load_checkpoint(next(tmp_path.rglob(f"checkpoints/{stage}/last.pt")))
    assert last["finished"]
    assert len(last["generators"]) == 2  # each rank's sampler state, for resume
    assert not torch.equal(last["generators"][0], last["generators"][1])


def test_two_process_runs_reuse_a_finished_source_only_run(tmp_path):
    _torchrun(tmp_path / "base", "baseline")
    source_only = next((tmp_path / "base").rglob("metrics.json")).parent
    for method, key in (("style_transfer", "style"), ("self_training", "self_training"), ("adabn", "adabn")):
        metrics = _torchrun(tmp_path / method, method, f"{key}.segmenter_from={source_only}")
        assert metrics["method"] == method


def test_every_gradient_of_a_two_objective_stage_is_synchronised(tmp_path):
    """Different seeds per rank, batches drawn per rank: equal weights at the end prove
    the broadcast at the start and the gradient averaging of both objectives."""
    torchrun = shutil.which("torchrun") or str(os.path.join(os.path.dirname(sys.executable),
                                                            "torchrun"))
    script = os.path.join(os.path.dirname(__file__), "ddp_sync_script.py")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", script, str(tmp_path)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "sync.json").read_text())["same"]
