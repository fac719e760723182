"""Fault injection: bad input and faults on every entry point.

Each case asserts the exit code, the one-sentence message and that nothing
already written changed. The cases follow docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from tests.conftest import run_cli

SMOKE = ["run", "--profile", "smoke", "--quiet", "--set", "train.threads=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_error(code: int, err: str) -> str:
    """The single ``error:`` line of a refused command (exit 2, no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines()
             if line and not line.startswith(("domadapt run:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to prove that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished smoke run (10 steps) shared by the cases that need a run or a checkpoint."""
    out = tmp_path_factory.mktemp("faults")
    from domadapt.config import build_config
    from domadapt.pipeline import run, run_dir_for

    cfg = build_config(profile="smoke", overrides=["train.threads=1", "train.steps=10"],
                       flags={"out": str(out)})
    run(cfg, progress=False)
    return run_dir_for(cfg)


@pytest.fixture
def checkpoint(finished) -> str:
    return str(finished / "checkpoints/segmentation/last.pt")


@pytest.fixture
def volume(tmp_path) -> Path:
    path = tmp_path / "in.tif"
    data = (np.random.default_rng(0).random((2, 64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def _predict(monkeypatch, capsys, checkpoint, source, output, *extra):
    return run_cli(monkeypatch, capsys, "predict", "--checkpoint", checkpoint, "--input",
                   str(source), "--output", str(output), "--quiet", *extra)


# ----------------------------------------------------------------------- 1. data loss


def test_predict_refuses_to_overwrite_its_input(monkeypatch, capsys, checkpoint, volume):
    before = volume.read_bytes()
    code, _, err = _predict(monkeypatch, capsys, checkpoint, volume, volume)
    assert "is the input volume" in one_error(code, err)
    assert volume.read_bytes() == before


def test_predict_refuses_output_inside_an_input_folder(monkeypatch, capsys, checkpoint, tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(2):
        tifffile.imwrite(folder / f"{z}.tif", np.full((64, 64), 100 + z, np.uint8))
    before = snapshot(folder)
    code, _, err = _predict(monkeypatch, capsys, checkpoint, folder, folder / "2.tif")
    assert "inside the input folder" in one_error(code, err)
    assert snapshot(folder) == before


def test_predict_output_that_is_a_folder(monkeypatch, capsys, checkpoint, volume, tmp_path):
    (tmp_path / "outdir").mkdir()
    code, _, err = _predict(monkeypatch, capsys, checkpoint, volume, tmp_path / "outdir")
    assert "is a folder" in one_error(code, err)
    assert not list((tmp_path / "outdir").iterdir())


# ------------------------------------------------------- 2. silent wrong results, exit 0


def test_a_nan_voxel_is_refused_by_run_and_predict(monkeypatch, capsys, checkpoint, tmp_path):
    image = (np.random.default_rng(0).random((4, 96, 96)) * 255).astype(np.float32)
    image[2, 5, 7] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image, photometric="minisblack")
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path / "runs"),
                           "--target", str(tmp_path / "nan.tif"), "--target-voxel-size", "10,10,10")
    assert "(z=2, y=5, x=7)" in one_error(code, err)
    assert not (tmp_path / "runs").exists()
    code, _, err = _predict(monkeypatch, capsys, checkpoint, tmp_path / "nan.tif",
                            tmp_path / "out.tif")
    assert "NaN" in one_error(code, err)
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("voxel, words", [("0.03,0.004,0.004", "micrometres"),
                                          ("1e-9,1e-9,1e-9", "micrometres"),
                                          ("1e9,1e9,1e9", "nanometres")])
def test_implausible_voxel_sizes_are_refused(monkeypatch, capsys, checkpoint, volume, tmp_path,
                                             voxel, words):
    code, _, err = _predict(monkeypatch, capsys, checkpoint, volume, tmp_path / "out.tif",
                            "--voxel-size", voxel)
    assert words in one_error(code, err)
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path / "runs"),
                           "--target", str(volume), "--target-voxel-size", voxel)
    assert words in one_error(code, err)
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "runs").exists()


def test_a_three_slice_stack_stays_three_slices_in_a_run(monkeypatch, capsys, tmp_path):
    stack = (np.random.default_rng(0).random((3, 96, 96)) * 255).astype(np.uint8)
    # what tifffile.imwrite(path, stack) writes by default today: planar RGB
    tifffile.imwrite(tmp_path / "three.tif", stack, photometric="rgb", planarconfig="separate")
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path / "runs"),
                           "--set", "train.steps=10", "--target", str(tmp_path / "three.tif"),
                           "--target-voxel-size", "10,10,10")
    assert code == 0, err
    assert "read as 3 z-slices" in err
    prediction = tifffile.imread(next(tmp_path.rglob("target_test_prob.tif")))
    assert prediction.shape == (3, 96, 96)


# ----------------------------------------------------------- 3. a false record of the run


def test_resume_with_changed_settings_is_refused_and_config_kept(monkeypatch, capsys, finished):
    before = snapshot(finished)
    out = str(finished.parents[2])
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", out, "--resume",
                           "--set", "train.steps=10", "--set", "train.lr=0.5",
                           "--set", "model.width=4")
    line = one_error(code, err)
    assert "train.lr" in line and "model.width" in line and "train.steps" not in line
    assert snapshot(finished) == before


def test_resume_with_the_same_settings_still_works(monkeypatch, capsys, tmp_path):
    args = [*SMOKE, "--out", str(tmp_path), "--set", "train.steps=10"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    config = next(tmp_path.rglob("config.yaml"))
    before = config.read_bytes()
    code, _, err = run_cli(monkeypatch, capsys, *args, "--resume", "--set", "train.threads=2")
    assert code == 0, err
    assert config.read_bytes() == before


@pytest.mark.parametrize("sets", [["train=5"], ["train=5", "train.steps=3"],
                                  ["train.steps=3", "train=5"]])
def test_a_scalar_given_to_a_section_names_the_key(monkeypatch, capsys, tmp_path, sets):
    args = [arg for item in sets for arg in ("--set", item)]
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path), "--device", "cpu",
                           *args)
    assert "'train' must be a mapping" in one_error(code, err)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------ 4. one sentence, no traceback


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_bad_seed_is_refused_before_anything_is_written(monkeypatch, capsys, tmp_path, seed):
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path), "--seed", seed)
    assert "'seed'" in one_error(code, err)
    assert not list(tmp_path.iterdir())


def _limited(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_during_a_run_says_no_space_left(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "domadapt.cli", *SMOKE, "--out", str(tmp_path)],
                          preexec_fn=_limited(200_000), capture_output=True, text=True, env=ENV)
    assert "no space left" in one_error(proc.returncode, proc.stderr)
    assert not list(tmp_path.rglob("*.partial"))
    assert not list(tmp_path.rglob("metrics.json"))


def test_disk_full_during_predict_keeps_the_old_output(checkpoint, volume, tmp_path):
    output = tmp_path / "out.tif"
    output.write_bytes(b"an earlier prediction")
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.zeros((4, 256, 256), np.uint8), photometric="minisblack")
    proc = subprocess.run([sys.executable, "-m", "domadapt.cli", "predict", "--checkpoint",
                           checkpoint, "--input", str(big), "--output", str(output), "--quiet"],
                          preexec_fn=_limited(100_000), capture_output=True, text=True, env=ENV)
    assert "no space left" in one_error(proc.returncode, proc.stderr)
    assert output.read_bytes() == b"an earlier prediction"
    assert not list(tmp_path.glob("*.partial"))


HOLD_LOCK = """
import sys, time
from pathlib import Path
from domadapt.run_lock import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def live_run(finished):
    """Another process holding the finished run's folder, as a live run does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(finished)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield finished
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_live_run_folder_is_refused(monkeypatch, capsys, live_run, flag):
    before = snapshot(live_run)
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(live_run.parents[2]),
                           "--set", "train.steps=10", flag)
    assert "in use by another domadapt process" in one_error(code, err)
    assert snapshot(live_run) == before


def test_a_lock_left_by_a_killed_run_does_not_block_resume(monkeypatch, capsys, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "r" / "x")], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    from domadapt.run_lock import run_folder_lock

    with run_folder_lock(tmp_path / "r" / "x"):  # the kernel released the dead holder's lock
        assert (tmp_path / "r" / "x" / ".lock").is_file()
    assert not (tmp_path / "r" / "x" / ".lock").exists()


def test_two_runs_started_at_once_one_is_refused(tmp_path):
    """Both pass the folder check (--resume, as two benchmark invocations do); one must wait."""
    args = [sys.executable, "-m", "domadapt.cli", *SMOKE, "--out", str(tmp_path),
            "--set", "train.steps=60", "--resume"]
    procs = [subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use by another domadapt process" in one_error(2, refused)
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["stages"]["segmentation"]["last_step"] == 60


# ------------------------------------------------------------------ 5. misleading messages


def test_one_slice_source_names_the_real_cause(monkeypatch, capsys, tmp_path):
    image = (np.random.default_rng(0).random((1, 160, 160)) * 255).astype(np.uint8)
    mask = np.zeros((1, 160, 160), np.uint8)
    mask[0, 40:60, 40:70] = 1
    tifffile.imwrite(tmp_path / "one.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "one_mask.tif", mask, photometric="minisblack")
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path / "runs"),
                           "--source", str(tmp_path / "one.tif"),
                           "--source-mask", str(tmp_path / "one_mask.tif"),
                           "--source-voxel-size", "10,10,10")
    line = one_error(code, err)
    assert "1 z-slice" in line and "selection.criterion" in line
    assert not (tmp_path / "runs").exists()


def test_nan_loss_does_not_point_to_a_deleted_folder(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path),
                           "--set", "train.lr=1e30", "--set", "train.warmup_steps=0")
    line = one_error(code, err)
    assert "loss became" in line
    folder = line.split("checkpoint is in ")[-1].rstrip(".") if "checkpoint is in" in line else None
    assert folder is None or Path(folder).is_dir()


def test_a_wrong_file_placed_by_hand_is_a_checksum_mismatch(tmp_path):
    from domadapt.data.download import fetch
    from domadapt.errors import DownloadError

    dest = tmp_path / "lucchi" / "archive.zip"
    dest.parent.mkdir()
    dest.write_bytes(b"not the archive")
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        fetch("http://127.0.0.1:9/archive.zip", "0" * 64, dest, progress=False)
    assert dest.read_bytes() == b"not the archive"


def test_downloading_a_synthetic_dataset_says_there_is_nothing_to_download(monkeypatch, capsys,
                                                                           tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "datasets", "download", "synth-cortex",
                             "--data-root", str(tmp_path))
    assert code == 0, err
    assert "generated on the fly" in out and "ready:" not in out
    assert not list(tmp_path.iterdir())


def test_select_on_a_run_without_evaluation_says_so(monkeypatch, capsys, finished, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.yaml").write_bytes((finished / "config.yaml").read_bytes())
    code, _, err = run_cli(monkeypatch, capsys, "select", str(started), "--quiet")
    assert "no evaluation yet" in one_error(code, err)


def test_an_h5_with_two_datasets_names_the_way_for_run(monkeypatch, capsys, tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as h5:
        h5["a"] = np.zeros((2, 64, 64), np.uint8)
        h5["b"] = np.zeros((2, 64, 64), np.uint8)
    code, _, err = run_cli(monkeypatch, capsys, *SMOKE, "--out", str(tmp_path / "runs"),
                           "--target", str(tmp_path / "two.h5"), "--target-voxel-size", "10,10,10")
    assert "dataset YAML" in one_error(code, err)
    assert not (tmp_path / "runs").exists()


def test_resume_accepts_a_run_written_before_newer_settings_existed(monkeypatch, capsys, tmp_path):
    import yaml

    args = [*SMOKE, "--out", str(tmp_path), "--set", "train.steps=10"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    config = next(tmp_path.rglob("config.yaml"))
    older = yaml.safe_load(config.read_text())
    del older["selection"]["target_crop"], older["train"]["cpu_bf16"]
    config.write_text(yaml.safe_dump(older, sort_keys=False))
    code, _, err = run_cli(monkeypatch, capsys, *args, "--resume")
    assert code == 0, err
