"""domadapt's Trainer beside torch-em's DefaultTrainer: patches/s, then IoU at equal wall time.

    PYTHONPATH=. python tools/bench_peer.py [--dataset lucchi] [--seconds 240] [--threads 2]

Same U-Net (domadapt's, same seed), same patch size, batch, loss (bce_dice), optimiser
(AdamW, train.lr) and labeled patches (domadapt's PatchSampler, foreground-centred
share included) for both; cpu-quick settings. domadapt runs twice: in float32 like
torch-em, and with its CPU training settings (bfloat16 autocast where the CPU has it,
channels-last). Phase 1 measures each trainer's rate without its fixed costs (setting up,
a last validation, saving): a run of 10 steps and one of 40, after 5 warm-up steps; the
rate is 30 steps over the difference of their times. Phase 2 trains each for
``--seconds`` of wall time (steps = seconds x that rate, cosine schedule for domadapt as
its profile sets, constant rate for torch-em as its default), then scores all on the
dataset's test volume with the same code (in-domain: source = target, as the
source-only baseline). The table gives the wall time each really took, so a trainer
whose fixed costs are larger shows it.

torch-em is not a dependency of the package; install it in its own environment
(``pip install --no-deps torch_em python-elf bioimage-cpp``).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch


class SamplerDataset(torch.utils.data.Dataset):
    """domadapt's PatchSampler as a map-style dataset of single patches (torch-em batches them)."""

    def __init__(self, sampler, length: int, seed: int) -> None:
        self.sampler, self.length = sampler, length
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        batch = self.sampler.sample(self.generator)
        return batch["image"][0], (batch["mask"][0] == 1).float()


class LogitsLoss(torch.nn.Module):
    """domadapt's bce_dice on logits and a float {0, 1} target, for torch-em's loss slot."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from domadapt.training.losses import bce_dice_loss

        return bce_dice_loss(logits, target.to(torch.uint8))


def domadapt_train(cfg, domains, net, steps: int, out: Path, fast: bool = False) -> float:
    """Train through domadapt's Trainer (no evaluation but the last); return seconds.
    ``fast``: bfloat16 autocast (where native) and channels-last, the CPU training settings."""
    from domadapt.strategies.base import source_sampler, supervised_stage
    from domadapt.training.trainer import Trainer

    cfg.train.steps, cfg.train.eval_every = steps, steps
    stage = supervised_stage("peer", net, cfg, source_sampler(cfg, domains), steps, [])
    t0 = time.perf_counter()
    Trainer(out, torch.device("cpu"), cfg.seed, progress=False, train_cpu_bf16=fast,
            channels_last=fast).fit(stage)
    return time.perf_counter() - t0


def domadapt_fast_train(cfg, domains, net, steps: int, out: Path) -> float:
    return domadapt_train(cfg, domains, net, steps, out, fast=True)


def torch_em_train(cfg, domains, net, steps: int, out: Path) -> float:
    """Train through torch-em's DefaultTrainer for ``steps`` iterations; return seconds."""
    import torch_em

    from domadapt.strategies.base import source_sampler

    one = copy.copy(cfg)
    one.data = copy.copy(cfg.data)
    one.data.batch_size = 1
    loader = torch.utils.data.DataLoader(
        SamplerDataset(source_sampler(one, domains), steps * cfg.data.batch_size, cfg.seed),
        batch_size=cfg.data.batch_size)
    val = torch.utils.data.DataLoader(SamplerDataset(source_sampler(one, domains), 8, cfg.seed + 1),
                                      batch_size=cfg.data.batch_size)
    trainer = torch_em.trainer.DefaultTrainer(
        name="peer", train_loader=loader, val_loader=val, model=net, loss=LogitsLoss(),
        optimizer=torch.optim.AdamW(net.parameters(), lr=cfg.train.lr,
                                    weight_decay=cfg.train.weight_decay),
        metric=LogitsLoss(), device=torch.device("cpu"), mixed_precision=False, logger=None,
        compile_model=False, save_root=str(out))  # torch-em compiles by default: ~2 min first step
    t0 = time.perf_counter()
    trainer.fit(iterations=steps)
    return time.perf_counter() - t0


def test_iou(cfg, data, net) -> float:
    from domadapt.inference import predict_to_array
    from domadapt.metrics import segmentation_scores

    test = data.target_test_original
    prob = predict_to_array(net.eval(), test.image.image, voxel_size_nm=test.image.voxel_size_nm,
                            model_pixel_nm=cfg.data.pixel_size_nm, norm_stats=test.stats,
                            tile=cfg.inference.tile, overlap=cfg.inference.overlap)
    return segmentation_scores(prob.reshape(test.labels.shape), test.labels)["iou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lucchi")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from domadapt.config import build_config
    from domadapt.data.prepare import prepare_data
    from domadapt.strategies.base import Domains, new_segmentation_net

    cfg = build_config(profile="cpu-quick", overrides=[f"seed={args.seed}"],
                       flags={"source": args.dataset, "target": args.dataset})
    data = prepare_data(cfg)
    domains = Domains(data.source_train, data.source_val, data.target_train, data.target_test)
    trainers = {"domadapt Trainer, float32": domadapt_train,
                "domadapt Trainer, bfloat16 + channels-last": domadapt_fast_train,
                "torch-em DefaultTrainer, float32": torch_em_train}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, train) in enumerate(trainers.items()):
            train(copy.deepcopy(cfg), domains, new_segmentation_net(cfg), 5, Path(tmp, f"w{i}"))
            short = train(copy.deepcopy(cfg), domains, new_segmentation_net(cfg), 10,
                          Path(tmp, f"s{i}"))
            long = train(copy.deepcopy(cfg), domains, new_segmentation_net(cfg), 40,
                         Path(tmp, f"l{i}"))
            rate = 30 * cfg.data.batch_size / max(long - short, 1e-6)
            steps = max(1, int(args.seconds * rate / cfg.data.batch_size))
            net = new_segmentation_net(cfg)
            used = train(copy.deepcopy(cfg), domains, net, steps, Path(tmp, f"t{i}"))
            rows.append((name, rate, steps, used, test_iou(cfg, data, net)))
    print(f"{args.dataset} in-domain, cpu-quick, {args.threads} thread(s), seed {args.seed}")
    print("| trainer | patches/s | steps in the budget | wall s | test IoU |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, steps, used, iou in rows:
        print(f"| {name} | {rate:.1f} | {steps} | {used:.0f} | {iou:.3f} |")
    for name, rate, *_ in rows[:-1]:
        print(f"patches/s ratio {name} / torch-em: {rate / rows[-1][1]:.2f}")


if __name__ == "__main__":
    main()
