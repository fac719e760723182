"""domadapt's self_training beside torch-em's MeanTeacherTrainer, from the same start.

    python tools/bench_peer_self_training.py RUN_DIR [--threads 1]

RUN_DIR is a finished domadapt ``self_training`` run that started from a source-only
run (``self_training.segmenter_from``). The script rebuilds the same pair, pixel size,
patch size, batch split (source / target patches per step), step budget, learning
rate, EMA decay and confidence threshold, and trains torch-em's MeanTeacherTrainer
from the same source-only weights. Both final teachers are scored on the target test
labels with the same code, and the training patches/s of both are printed.

torch-em is not a dependency of the package; install it in its own environment:
``pip install torch_em python-elf bioimage-cpp`` (with ``--no-deps`` where its other
extras are not wanted), then run with ``PYTHONPATH=<repo>``. torch-em's unlabeled views
are photometric only: its teacher and student see two views of the same patch, so a
geometric change would misalign them; domadapt's strong view adds flips and turns and
moves the pseudo-labels along.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


class SourcePatches(torch.utils.data.Dataset):
    """Random labeled patches with flips (the same augmentation for image and mask)."""

    def __init__(self, volume, size: int, length: int, seed: int) -> None:
        self.image, self.mask, self.size, self.length = volume.image, volume.mask, size, length
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        z, y, x = _corner(self.image.shape, self.size, self.rng)
        image = self.image[z, y:y + self.size, x:x + self.size]
        mask = (self.mask[z, y:y + self.size, x:x + self.size] == 1).astype(np.float32)
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return (torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
                torch.from_numpy(np.ascontiguousarray(mask))[None])


class TargetViews(torch.utils.data.Dataset):
    """An unlabeled target patch as it is (teacher) and photometrically changed (student)."""

    def __init__(self, image: np.ndarray, size: int, length: int, strong, seed: int) -> None:
        self.image, self.size, self.length, self.strong = image, size, length, strong
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        from domadapt.data.augment import _intensity

        z, y, x = _corner(self.image.shape, self.size, self.rng)
        weak = torch.from_numpy(np.ascontiguousarray(self.image[z, y:y + self.size, x:x + self.size],
                                                     np.float32))[None]
        g = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        return weak, _intensity(weak[None], self.strong, g)[0]


def _corner(shape, size: int, rng: np.random.Generator) -> tuple[int, int, int]:
    return (int(rng.integers(shape[0])), int(rng.integers(shape[1] - size + 1)),
            int(rng.integers(shape[2] - size + 1)))


def score(net: torch.nn.Module, cfg, test) -> float:
    """target_iou_slice_mean of ``net`` on the target test volume, as domadapt scores a run."""
    from domadapt.inference import predict_to_array
    from domadapt.metrics import segmentation_scores

    prob = predict_to_array(net.eval(), test.image.image, voxel_size_nm=test.image.voxel_size_nm,
                            model_pixel_nm=cfg.data.pixel_size_nm, norm_stats=test.stats,
                            tile=cfg.inference.tile, overlap=cfg.inference.overlap)
    return segmentation_scores(prob.reshape(test.labels.shape), test.labels,
                               cfg.inference.threshold)["iou_slice_mean"]


def torch_em_teacher(cfg, data, start: torch.nn.Module, out: Path) -> tuple[torch.nn.Module, float]:
    """Train torch-em's MeanTeacherTrainer; return its final teacher and patches/s."""
    import torch_em
    from torch_em.self_training import (
        DefaultPseudoLabeler,
        DefaultSelfTrainingLoss,
        DefaultSelfTrainingLossAndMetric,
        MeanTeacherTrainer,
    )

    from domadapt.stage_options import stage_named
    from domadapt.strategies.self_training import batch_split, self_training_steps

    st, steps = cfg.options, self_training_steps(cfg)
    n_source, n_target = batch_split(cfg)
    size = cfg.data.patch_size
    loader = torch.utils.data.DataLoader
    sup = loader(SourcePatches(data.source_train, size, steps * n_source, cfg.seed), n_source)
    val = loader(SourcePatches(data.source_val, size, 4 * n_source, cfg.seed + 2), n_source)
    unsup = loader(TargetViews(data.target_train.image, size, steps * n_target, st.strong,
                               cfg.seed + 1), n_target)
    dice = torch_em.loss.DiceLoss()
    sigmoid = torch.nn.Sigmoid()
    lr = stage_named(st.stages, "self_training").lr or cfg.train.lr * st.lr_factor
    trainer = MeanTeacherTrainer(
        name="peer", model=start, unsupervised_train_loader=unsup, supervised_train_loader=sup,
        supervised_val_loader=val, unsupervised_loss=DefaultSelfTrainingLoss(dice, sigmoid),
        supervised_loss=DefaultSelfTrainingLoss(dice, sigmoid),
        supervised_loss_and_metric=DefaultSelfTrainingLossAndMetric(dice, dice, sigmoid),
        pseudo_labeler=DefaultPseudoLabeler(sigmoid, confidence_threshold=st.threshold),
        optimizer=torch.optim.AdamW(start.parameters(), lr=lr), device=torch.device("cpu"),
        momentum=st.ema_decay, reinit_teacher=False, mixed_precision=False, logger=None,
        compile_model=False, save_root=str(out))  # compiling costs ~2 min before step 1 on this CPU
    t0 = time.perf_counter()
    trainer.fit(iterations=steps)
    seconds = time.perf_counter() - t0
    return trainer.teacher, steps * (n_source + n_target) / seconds


def domadapt_numbers(run_dir: Path, cfg, steps: int) -> tuple[torch.nn.Module, float, dict]:
    """The run's last teacher, its training patches/s and its metrics.json."""
    from domadapt.predict import model_from_checkpoint

    metrics = json.loads((run_dir / "metrics.json").read_text())
    net, _ = model_from_checkpoint(run_dir / "checkpoints" / "self_training" / "last.pt")
    seconds = metrics["timings_s"]["self_training/train"]
    return net, steps * cfg.data.batch_size / seconds, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/peer-self-training"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from domadapt.config import config_from_plain, load_yaml
    from domadapt.data.prepare import prepare_data
    from domadapt.strategies.self_training import reused_segmenter, self_training_steps

    cfg = config_from_plain(load_yaml(args.run_dir / "config.yaml"), stored=True)
    if not cfg.options.segmenter_from or cfg.options.harmonizer != "none":
        raise SystemExit("Give a plain self_training run that started from a source-only run.")
    data = prepare_data(cfg)
    start = reused_segmenter(Path(cfg.options.segmenter_from), cfg)
    steps = self_training_steps(cfg)
    ours, ours_rate, metrics = domadapt_numbers(args.run_dir, cfg, steps)
    theirs, theirs_rate = torch_em_teacher(cfg, data, start, args.out)
    test = data.target_test_original
    print(f"{cfg.source}->{cfg.target}, seed {cfg.seed}, {steps} steps, {args.threads} thread(s)")
    print("| trainer | last teacher target IoU (slice mean) | training patches/s |")
    print("|---|---:|---:|")
    print(f"| domadapt self_training | {score(ours, cfg, test):.3f} | {ours_rate:.1f} |")
    print(f"| torch-em MeanTeacherTrainer | {score(theirs, cfg, test):.3f} | {theirs_rate:.1f} |")
    print(f"(domadapt's label-free pick, step {metrics['selected_step']}: "
          f"{metrics['target_iou_slice_mean']:.3f})")


if __name__ == "__main__":
    main()
