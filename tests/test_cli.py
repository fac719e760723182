"""The command line: verbs work, bad input is one sentence and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from tests.conftest import run_cli

SMOKE = ["run", "--profile", "smoke", "--quiet", "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished smoke run, shared by the predict tests."""
    out = tmp_path_factory.mktemp("cli")
    from domadapt.config import build_config
    from domadapt.pipeline import run, run_dir_for

    cfg = build_config(profile="smoke", overrides=["train.threads=1"], flags={"out": str(out)})
    run(cfg, progress=False)
    return run_dir_for(cfg)


def _one_error_line(code, err):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines()
             if line and not line.startswith(("domadapt run:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--source", "nosuchset"], "lucchi"),
    (["--method", "magic"], "valid methods"),
    (["--profile", "huge"], "valid profiles"),
    (["--set", "train.stpes=3"], "train.stpes"),
    (["--set", "train.steps=abc"], "train.steps"),
    (["--target", "/no/such/volume.tif", "--target-voxel-size", "30,3,3"], "/no/such/volume.tif"),
    (["--target-voxel-size", "3,3"], "three positive numbers"),
    (["--target-voxel-size", "3,-3,3"], "three positive numbers"),
    (["--set", "selection.criterion=morph_ours"], "cannot be fitted"),  # smoke source: too few objects
    (["--set", "selection.criterion=rank_morph_consistency"], "needs the morphological prior morph_ours"),
    (["--set", "selection.criterion=no_such_metric"], "selection.criterion"),
    (["--portfolio", "baseline,style_transfer"], "--method auto"),
    (["--method", "auto", "--portfolio", "baseline,magic"], "valid methods"),
])
def test_bad_run_input(monkeypatch, capsys, tmp_path, args, expected):
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path), *args)
    assert expected in _one_error_line(code, err)
    assert not list(tmp_path.rglob("*.*"))  # nothing written at all


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_requested_without_cuda(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path), "--device", "cuda")
    assert "CUDA" in _one_error_line(code, err)


def test_existing_run_folder(monkeypatch, capsys, trained):
    out = trained.parents[2]
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(out))
    assert "--overwrite" in _one_error_line(code, err)


def test_predict_probabilities_and_binary(monkeypatch, capsys, trained, tmp_path):
    volume = (np.random.default_rng(0).random((2, 70, 90)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    ckpt = trained / "checkpoints/segmentation/best-source_val_iou.pt"
    for extra, values in (([], None), (["--binary"], {0, 255})):
        out = tmp_path / f"out{len(extra)}.tif"
        code, stdout, err = run_cli(monkeypatch, capsys, "predict", "--checkpoint", str(ckpt),
                                    "--input", str(tmp_path / "in.tif"), "--output", str(out),
                                    "--voxel-size", "5,5,5", "--quiet", *extra)
        assert code == 0, err
        pred = tifffile.imread(out)
        assert pred.shape == volume.shape and pred.dtype == np.uint8
        if values:
            assert set(np.unique(pred).tolist()) <= values


def test_predict_rejects_foreign_and_truncated_checkpoints(monkeypatch, capsys, trained, tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((1, 32, 32), np.uint8))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    good = (trained / "checkpoints/segmentation/last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    for path, words in ((foreign, "not a domadapt checkpoint"), (garbage, "cannot be loaded"),
                        (truncated, "truncated")):
        code, _, err = run_cli(monkeypatch, capsys, "predict", "--checkpoint", str(path),
                               "--input", str(tmp_path / "in.tif"),
                               "--output", str(tmp_path / "o.tif"))
        assert words in _one_error_line(code, err)
    assert not (tmp_path / "o.tif").exists()


def test_datasets_list_and_info(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "list")
    assert code == 0
    for name in ("lucchi", "kasthuri", "vnc", "synth-hippocampus", "synth-cortex", "synth-vnc"):
        assert name in out
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "info", "synth-cortex")
    assert code == 0 and "foreground" in out
    code, _, err = run_cli(monkeypatch, capsys, "datasets", "info", "nope")
    assert "lucchi" in _one_error_line(code, err)


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL a real `domadapt run` after its first checkpoint, resume, compare."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "domadapt.cli", *SMOKE, "--set", "train.steps=30",
            "--set", "train.eval_every=10"]
    subprocess.run([*args, "--out", str(tmp_path / "full")], check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").rglob("checkpoints/segmentation/last.pt"))
        if found:
            last = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last is not None, "the run never wrote a checkpoint"
    assert not list((tmp_path / "killed").rglob("metrics.json"))
    subprocess.run([*args, "--out", str(tmp_path / "killed"), "--resume"], check=True, env=env,
                   capture_output=True)
    import json

    full = json.loads(next((tmp_path / "full").rglob("metrics.json")).read_text())
    resumed = json.loads(next((tmp_path / "killed").rglob("metrics.json")).read_text())
    for key in ("target_iou", "target_dice", "source_val_iou", "selected_step"):
        assert full[key] == resumed[key], key
