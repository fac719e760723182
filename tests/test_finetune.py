"""Few-shot target fine-tuning: the slice rule, N = 0, disjointness from the test volume, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from domadapt.data.prepare import load_target
from domadapt.errors import DataError, RunFolderError
from domadapt.finetune import FinetuneSettings, finetune, labeled_slices, split_holdout
from domadapt.pipeline import run, run_dir_for


def test_labeled_slices_are_seeded_nested_and_only_slices_with_mitochondria():
    mask = np.zeros((12, 20, 20), np.uint8)
    mask[::2, :10, :10] = 1  # even slices hold 100 foreground pixels, odd ones none
    five, ten = labeled_slices(mask, 5, seed=3), labeled_slices(mask, 6, seed=3)
    assert set(five) <= set(ten) and np.all(five % 2 == 0)
    assert list(labeled_slices(mask, 5, seed=3)) == list(five)
    assert list(labeled_slices(mask, 5, seed=4)) != list(five)
    with pytest.raises(DataError, match="more labeled slices"):
        labeled_slices(mask, 7, seed=0)


def test_holdout_starts_at_five_slices():
    assert len(split_holdout(np.arange(4))[1]) == 0
    fit, held = split_holdout(np.arange(10))
    assert len(held) == 2 and not set(fit) & set(held)


@pytest.fixture(scope="module")
def start_run(tmp_path_factory):
    from domadapt.config import build_config

    out = tmp_path_factory.mktemp("ft")
    cfg = build_config(profile="smoke", overrides=["train.threads=1"], flags={"out": str(out)})
    return run(cfg, progress=False), run_dir_for(cfg), cfg


def test_finetune_curve_starts_at_the_run_and_uses_training_slices_only(start_run, tmp_path):
    metrics, folder, cfg = start_run
    settings = FinetuneSettings(n_labeled=[0, 1, 3], seeds=[0], steps=15, threads=1)
    out = finetune(folder, cfg.target, settings, tmp_path / "fine", progress=False)
    rows = list(csv.DictReader((out / "label_efficiency.csv").open()))
    start = next(r for r in rows if r["n_labeled"] == "0")
    assert float(start["iou"]) == pytest.approx(metrics["target_iou"], abs=1e-9)  # N=0 = the run
    assert {(r["n_labeled"], r["kind"]) for r in rows} == {
        ("0", "start"), ("1", "finetuned"), ("1", "scratch"), ("3", "finetuned"), ("3", "scratch")}
    train, test = load_target(cfg, "train"), load_target(cfg, "test")
    used = {int(z) for r in rows for z in r["slices"].split()}
    for z in used:  # every labeled slice comes from the training split, none equals a test slice
        assert not any(np.array_equal(train.image[z], t) for t in test.image)
    assert (out / "label_efficiency.png").stat().st_size > 1000
    assert "N = 0 is the starting model" in (out / "label_efficiency.md").read_text()


def test_impossible_requests_fail_before_training(start_run, tmp_path):
    _, folder, cfg = start_run
    with pytest.raises(DataError, match="more labeled slices"):
        finetune(folder, cfg.target, FinetuneSettings(n_labeled=[1, 500], seeds=[0], steps=5),
                 tmp_path / "fine", progress=False)
    assert not (tmp_path / "fine").exists()
    with pytest.raises(RunFolderError, match="no such run folder"):
        finetune(tmp_path / "nope", cfg.target, FinetuneSettings([1], [0]), tmp_path / "x")


@pytest.mark.parametrize("kind", ["histogram", "fda"])
def test_a_style_transfer_model_is_finetuned_on_harmonized_slices(start_run, tmp_path, kind):
    from domadapt.config import build_config
    from domadapt.predict import model_from_checkpoint
    from domadapt.training.checkpoint import load_checkpoint

    _, baseline, _ = start_run
    cfg = build_config(profile="smoke", method="style_transfer",
                       overrides=["train.threads=1", f"style.kind={kind}",
                                  f"style.segmenter_from={baseline}"],
                       flags={"out": str(tmp_path / "runs")})
    metrics = run(cfg, progress=False)
    settings = FinetuneSettings(n_labeled=[0, 1], seeds=[0], steps=10, threads=1)
    out = finetune(run_dir_for(cfg), cfg.target, settings, tmp_path / "fine", progress=False)
    rows = {r["n_labeled"]: r for r in csv.DictReader((out / "label_efficiency.csv").open())}
    assert float(rows["0"]["iou"]) == pytest.approx(metrics["target_iou"], abs=1e-9)
    start = load_checkpoint(metrics["selected_checkpoint"])
    path = out / "seed0" / "n001-finetuned" / "checkpoints" / "finetune" / "last.pt"
    tuned = load_checkpoint(path)
    assert tuned["harmonizer"]["kind"] == kind  # predict harmonizes as the model was trained
    assert isinstance(model_from_checkpoint(path)[0], torch.nn.Sequential)
    assert any(not torch.equal(tuned["modules"]["net"][k], v) for k, v in start["modules"]["net"].items())
    scratch = load_checkpoint(out / "seed0" / "n001-scratch" / "checkpoints" / "finetune" / "last.pt")
    assert "harmonizer" not in scratch  # the scratch twin sees the raw slices


@pytest.mark.parametrize("method,arch", [("baseline", "attention_unet"), ("multitask", "unet")])
def test_attention_unet_and_ynet_starts_are_finetuned(tmp_path, method, arch):
    """The common lab recipe (a patch-based Attention U-Net fine-tuned on a few slices) and a
    Y-Net start, whose segmentation branch alone is fine-tuned."""
    from domadapt.config import build_config

    cfg = build_config(profile="smoke", method=method,
                       overrides=["train.threads=1", f"model.arch={arch}"],
                       flags={"out": str(tmp_path / "runs")})
    metrics = run(cfg, progress=False)
    settings = FinetuneSettings(n_labeled=[0, 1], seeds=[0], steps=10, threads=1)
    out = finetune(run_dir_for(cfg), cfg.target, settings, tmp_path / "fine", progress=False)
    rows = {(r["n_labeled"], r["kind"]): r for r in csv.DictReader((out / "label_efficiency.csv").open())}
    assert float(rows[("0", "start")]["iou"]) == pytest.approx(metrics["target_iou"], abs=1e-9)
    assert set(rows) == {("0", "start"), ("1", "finetuned"), ("1", "scratch")}
