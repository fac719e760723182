"""Self-training (mean teacher): pseudo-labels, aligned strong views, learning from a teacher,
no target labels, resume, and a stored harmonizer at prediction time."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from domadapt.data.augment import augment_batch
from domadapt.data.patches import PatchSampler
from domadapt.data.volume import IGNORE_LABEL, UnlabeledVolume, Volume
from domadapt.errors import ConfigError
from domadapt.metrics import segmentation_scores
from domadapt.pipeline import run, run_dir_for
from domadapt.predict import model_from_checkpoint
from domadapt.strategies.base import (
    Domains,
    StrategyContext,
    new_segmentation_net,
    segmentation_stage,
    select,
    source_sampler,
)
from domadapt.strategies.self_training import SelfTraining, StrongView, batch_split, self_training_stage
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.mean_teacher import pseudo_labels, sigmoid_rampup
from domadapt.training.trainer import Trainer
from domadapt.training.weight_average import ema_update

CPU = torch.device("cpu")
FAST = ("selection.monitors=[source_val]", "selection.criterion=source_val_iou")


# ---------------------------------------------------------------------- building blocks


def test_pseudo_labels_keep_only_confident_pixels():
    prob = torch.tensor([0.97, 0.91, 0.5, 0.2, 0.05])
    assert pseudo_labels(prob, 0.9).tolist() == [1, 1, IGNORE_LABEL, IGNORE_LABEL, 0]


def test_class_keep_gives_both_classes_labels_from_an_unsure_teacher():
    """Background never below 0.1: the absolute threshold alone labels foreground only."""
    prob = torch.tensor([0.99, 0.95, 0.7, 0.6, 0.15, 0.2, 0.3, 0.4])
    assert set(pseudo_labels(prob, 0.9).tolist()) == {1, IGNORE_LABEL}
    kept = pseudo_labels(prob, 0.9, class_keep=0.5).tolist()
    assert kept == [1, 1, IGNORE_LABEL, IGNORE_LABEL, 0, 0, IGNORE_LABEL, IGNORE_LABEL]


def test_ema_moves_the_teacher_a_fraction_toward_the_student():
    teacher, student = nn.BatchNorm2d(1), nn.BatchNorm2d(1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(2.0)
        student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.75)
    assert teacher.weight.item() == pytest.approx(1.5)
    assert teacher.running_mean.item() == pytest.approx(0.5)
    assert teacher.num_batches_tracked.item() == 7  # counters are copied, not averaged


def test_rampup_rises_from_near_zero_to_one():
    values = [sigmoid_rampup(s, 100) for s in (0, 50, 99, 100, 500)]
    assert values[0] < 0.01 and values[1] < values[2] < 1.0 and values[3:] == [1.0, 1.0]
    assert sigmoid_rampup(0, 0) == 1.0


def test_strong_view_moves_pseudo_labels_with_the_image_pixel_for_pixel():
    """Flips and turns act on image, pseudo-labels and neighbour labels alike, per sample."""
    g = torch.Generator().manual_seed(3)
    image = torch.rand(16, 1, 32, 32, generator=g)
    views = {"image": image, "mask": pseudo_labels(image, 0.6), "near": pseudo_labels(image, 0.6)}
    geometric_only = StrongView(brightness=0, contrast=0, gamma=0, noise=0, blur=0)
    out = augment_batch(views, geometric_only, torch.Generator().manual_seed(0))
    assert torch.equal(out["mask"], pseudo_labels(out["image"], 0.6))
    assert torch.equal(out["near"], out["mask"])
    assert not torch.equal(out["image"], image)  # something was actually flipped or turned
    strong = augment_batch(views, StrongView(), torch.Generator().manual_seed(0))
    assert torch.equal(strong["mask"], out["mask"])  # photometric changes leave labels in place
    assert not torch.allclose(strong["image"], out["image"])


def test_neighbour_patches_come_from_an_adjacent_section_at_the_same_window():
    depth = 5
    volume = np.stack([np.full((40, 40), z, np.float32) for z in range(depth)])
    volume += np.arange(40, dtype=np.float32)[None, None, :] / 100  # x position, to check windows
    batch = PatchSampler([volume], None, 16, 64, seed=0, neighbours=True).sample(
        torch.Generator().manual_seed(1))
    z = batch["image"][:, 0, 0, 0].floor()
    z_near = batch["neighbour"][:, 0, 0, 0].floor()
    assert torch.all((z - z_near).abs() == 1)
    assert torch.allclose(batch["image"] - z[:, None, None, None],
                          batch["neighbour"] - z_near[:, None, None, None])


def test_each_step_holds_source_and_target_patches(tiny_config):
    assert batch_split(tiny_config("data.batch_size=8", method="self_training")) == (4, 4)
    assert batch_split(tiny_config("data.batch_size=2", method="self_training",)) == (1, 1)
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        batch_split(tiny_config("data.batch_size=1", method="self_training"))


@pytest.mark.parametrize("override, key", [
    ("self_training.threshold=0.3", "self_training.threshold"),
    ("self_training.ema_decay=1.0", "self_training.ema_decay"),
    ("self_training.unlabeled_fraction=1.0", "self_training.unlabeled_fraction"),
    ("self_training.strong.noise=-1", "self_training.strong.noise"),
])
def test_bad_self_training_config_names_the_key(tiny_config, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny_config(override, method="self_training")


# ---------------------------------------------------------------------- learning from a teacher


def _disks(rng: np.random.Generator, depth: int, size: int, inside: float,
           outside: float) -> tuple[np.ndarray, np.ndarray]:
    """Dark disks (mitochondria) on a brighter background, with a little noise."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((depth, size, size), np.uint8)
    for z in range(depth):
        for _ in range(6):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, 8))]
            mask[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    image = np.where(mask == 1, inside, outside) + rng.normal(0, 0.02, mask.shape)
    return image.astype(np.float32), mask


class PerfectTeacher(nn.Module):
    """Labels the target exactly: its mitochondria (0.1) are darker than its background (0.35)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (0.225 - x)


def _target_iou(net: nn.Module, image: np.ndarray, mask: np.ndarray) -> float:
    net.eval()
    with torch.no_grad():
        prob = torch.sigmoid(net(torch.from_numpy(image)[:, None]))[:, 0].numpy()
    return segmentation_scores(prob, mask)["iou"]


@pytest.mark.slow
def test_a_perfect_teacher_lifts_the_students_target_iou_above_the_source_only_start(
        tiny_config, tmp_path):
    """Source: disks at 0.3 on 0.7; target: disks at 0.1 on 0.35, where a source-only model
    calls the whole background mitochondria. The teacher's labels must fix that. Batch norm
    throughout: per-image normalisation in the first layers (model.norm=ibn) would absorb
    this intensity shift before the teacher had anything to fix."""
    rng = np.random.default_rng(0)
    src_image, src_mask = _disks(rng, 8, 64, 0.3, 0.7)
    val_image, val_mask = _disks(rng, 2, 64, 0.3, 0.7)
    tgt_image, tgt_mask = _disks(rng, 6, 64, 0.1, 0.35)
    cfg = tiny_config(*FAST, "train.steps=60", "train.eval_every=30", "model.norm=batch",
                      "self_training.stages.self_training.steps=60",
                      "self_training.rampup_share=0", "self_training.lr_factor=1",
                      method="self_training")
    voxel = (10.0, 10.0, 10.0)
    domains = Domains(Volume(src_image, src_mask, voxel), Volume(val_image, val_mask, voxel),
                      UnlabeledVolume(tgt_image, voxel), UnlabeledVolume(tgt_image, voxel))
    trainer = Trainer(tmp_path, CPU, cfg.seed, progress=False)
    start = new_segmentation_net(cfg)
    stage = segmentation_stage("segmentation", start, cfg, domains, source_sampler(cfg, domains))
    start = select(trainer.fit(stage), start, "source_val_iou").model
    before = _target_iou(start, tgt_image, tgt_mask)
    stage = self_training_stage(copy.deepcopy(start), cfg, domains)
    stage.modules["teacher"] = PerfectTeacher()
    trainer.fit(stage)
    after = _target_iou(stage.modules["net"], tgt_image, tgt_mask)
    assert before < 0.5 and after > before + 0.3, (before, after)


# ---------------------------------------------------------------------- whole runs


class LabelGuard(UnlabeledVolume):
    """An unlabeled volume that fails the test on any attempt to reach labels."""

    def __getattr__(self, name):
        if name in ("mask", "labels", "label"):
            raise AssertionError(f"self_training read target {name}")
        raise AttributeError(name)


def test_the_strategy_sees_no_target_labels(tiny_config, tmp_path):
    from domadapt.data.prepare import prepare_data

    cfg = tiny_config(*FAST, "self_training.stages.self_training.steps=4", method="self_training")
    data = prepare_data(cfg)
    guard = [LabelGuard(v.image, v.voxel_size_nm, v.name) for v in (data.target_train, data.target_test)]
    assert not hasattr(data.target_train, "mask")
    trainer = Trainer(tmp_path, CPU, cfg.seed, progress=False)
    fit = SelfTraining().fit(Domains(data.source_train, data.source_val, *guard),
                             StrategyContext(cfg, trainer, CPU, tmp_path))
    assert fit.checkpoint.parent.name == "self_training"


@pytest.fixture(scope="module")
def histogram_run(tmp_path_factory):
    from domadapt.config import build_config

    out = tmp_path_factory.mktemp("st")
    cfg = build_config(profile="smoke", method="self_training-histogram",
                       overrides=["train.threads=1", *FAST], flags={"out": str(out)})
    return cfg, run(cfg, progress=False)


def test_a_run_trains_source_only_then_self_training_and_logs_pseudo_labels(histogram_run):
    cfg, metrics = histogram_run
    folder = run_dir_for(cfg)
    assert list(metrics["stages"]) == ["segmentation", "self_training"]
    assert metrics["selected_checkpoint"].endswith("self_training/best-source_val_iou.pt")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tb" / "self_training"))
    events.Reload()
    tags = set(events.Tags()["scalars"]) | set(events.Tags()["images"])
    assert {"train/pseudo_coverage", "train/pseudo_agreement", "train/pseudo_loss",
            "eval/target_pseudo_coverage", "eval/target_pseudo_agreement",
            "images/target_teacher_student"} <= tags


def test_predict_applies_the_stored_harmonizer(histogram_run):
    from domadapt.models.spec import harmonizer_from_spec

    cfg, metrics = histogram_run
    net, payload = model_from_checkpoint(metrics["selected_checkpoint"])
    assert isinstance(net, nn.Sequential) and payload["harmonizer"]["kind"] == "histogram"
    assert payload["predictor"] == "teacher"
    x = torch.rand(1, 1, 64, 64)
    unet = net[1]
    with torch.no_grad():
        harmonized = harmonizer_from_spec(payload["harmonizer"])(x)
        assert not torch.allclose(harmonized, x)
        assert torch.allclose(net(x), unet(harmonized))


def test_resume_after_a_kill_in_self_training_continues_identically(tmp_path, monkeypatch):
    """The 2.5D variant, killed mid-stage after its first evaluation, then resumed."""
    from domadapt.config import build_config
    from domadapt.strategies import self_training

    def config(out):
        return build_config(profile="smoke", method="self_training-sections",
                            overrides=["train.threads=1", *FAST,
                                       "self_training.stages.self_training.steps=20"],
                            flags={"out": str(tmp_path / out)})

    full = run(config("a"), progress=False)
    original = self_training.mean_teacher_objective

    def killed_at_step_15(cfg, steps):
        objective = original(cfg, steps)
        inner = objective.loss

        def loss(modules, batch, scratch):
            if scratch["step"] == 14:
                raise KeyboardInterrupt
            return inner(modules, batch, scratch)

        objective.loss = loss
        return objective

    with monkeypatch.context() as m:
        m.setattr(self_training, "mean_teacher_objective", killed_at_step_15)
        with pytest.raises(KeyboardInterrupt):
            run(config("b"), progress=False)
    folder = run_dir_for(config("b"))
    assert load_checkpoint(folder / "checkpoints/self_training/last.pt")["step"] == 10
    resumed = run(config("b"), resume=True, progress=False)
    for key in ("target_iou", "selected_step", "source_val_iou"):
        assert resumed[key] == full[key], key
    a = load_checkpoint(run_dir_for(config("a")) / "checkpoints/self_training/last.pt")["modules"]
    b = load_checkpoint(folder / "checkpoints/self_training/last.pt")["modules"]
    for module in ("net", "teacher"):
        assert all(torch.equal(a[module][k], b[module][k]) for k in a[module]), module
