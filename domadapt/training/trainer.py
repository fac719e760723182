"""THE trainer: one loop for every stage of every strategy.

A strategy describes a :class:`Stage` (modules, optimisers, objectives, a batch
source, monitors) and hands it to :meth:`Trainer.fit`. The trainer owns
everything else: device placement, mixed precision on CUDA, DistributedDataParallel
under ``torchrun``, gradient clipping, the evaluation schedule, TensorBoard,
atomic checkpoints (last + best per monitored metric + every evaluation),
resume after a kill, NaN detection and early stopping.

Several objectives per step (e.g. a GAN's generator and discriminator) run in
order, each with its own optimiser, so adversarial strategies need no second loop.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from domadapt.criteria import combined_criteria, rank_sums
from domadapt.data.atomic import atomic_path
from domadapt.errors import TrainingError
from domadapt.models.inference_copy import native_cpu_bf16
from domadapt.selection import choose
from domadapt.timing import PhaseTimer
from domadapt.training import checkpoint as ckpt
from domadapt.training.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_flag,
    broadcast_object,
    objective_runner,
)
from domadapt.training.monitors import EvalContext, Monitor
from domadapt.training.weight_average import WeightAverage

Batch = dict[str, torch.Tensor]
LossOutput = tuple[torch.Tensor, dict[str, float]]


@dataclass
class Objective:
    """One loss minimised by one named optimiser; ``scratch`` is shared within a step."""

    loss: Callable[[dict[str, nn.Module], Batch, dict], LossOutput]
    optimizer: str = "main"


@dataclass
class Stage:
    """One phase of training, declared as data by a strategy."""

    name: str
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    objectives: list[Objective]
    batches: Callable[[torch.Generator], Batch]  # draws a CPU batch from the generator
    steps: int
    eval_every: int
    monitors: list[Monitor] = field(default_factory=list)
    transform: Callable[[Batch, torch.Generator], Batch] | None = None  # on device (augment)
    predictor: str | None = "net"  # module the segmentation monitors evaluate
    stop_metric: str | None = None
    patience: int = 0
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = field(default_factory=dict)
    grad_clip: float = 1.0
    log_every: int = 10
    image_every: int = 1
    average: float = 0.0  # decay of the predictor's weight average (0: evaluate the live weights)


@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    name: str
    history: list[dict]
    best: dict[str, dict]  # metric -> {"value", "step", "path", "direction"}
    last_step: int
    stopped_early: bool
    checkpoint_dir: Path

    def best_path(self, metric: str) -> Path:
        if metric not in self.best:
            raise TrainingError(
                f"Stage '{self.name}' has no selectable metric '{metric}'; "
                f"available: {', '.join(self.best) or 'none'}."
            )
        return Path(self.best[metric]["path"])


class Trainer:
    """Runs stages; ``extra`` is stored in every checkpoint (config, model spec, norm stats)."""

    def __init__(self, run_dir: Path, device: torch.device, seed: int, *, amp: bool = True,
                 resume: bool = False, extra: dict | None = None, progress: bool = True,
                 dist: DistInfo | None = None, tile: int = 256, overlap: int = 32,
                 keep_checkpoints: bool = True, timer: PhaseTimer | None = None,
                 cpu_bf16: bool = False, train_cpu_bf16: bool = False,
                 channels_last: bool = False) -> None:
        self.run_dir, self.device, self.seed = Path(run_dir), device, seed
        self.cpu_bf16 = cpu_bf16
        on_cpu = device.type == "cpu"
        self.train_bf16 = train_cpu_bf16 and on_cpu and native_cpu_bf16()
        self.channels_last = channels_last and on_cpu
        self.timer = timer or PhaseTimer()
        self.amp = amp and device.type == "cuda"
        self.resume, self.extra, self.progress = resume, extra or {}, progress
        self.dist = dist or DistInfo()
        self.tile, self.overlap, self.keep_checkpoints = tile, overlap, keep_checkpoints

    # ------------------------------------------------------------------ public
    def fit(self, stage: Stage) -> StageResult:
        """Train ``stage`` to its end (or early stop) and return its record."""
        def train(state, generator, scaler, writer) -> None:
            runner = objective_runner(stage.modules, self.dist, self.device)
            self._loop(stage, state, runner, generator, scaler, writer)

        return self._run(stage, train)

    def rescore(self, stage: Stage, checkpoints: list[Path],
                adapt: Callable[[dict[str, nn.Module]], None] | None = None) -> StageResult:
        """Evaluate saved checkpoints (e.g. of a finished run) as if ``stage`` had trained them.

        Same monitors, history, best-checkpoint files, TensorBoard scalars and resume
        as :meth:`fit`, with weights read from disk instead of optimised, so a method
        that reuses a segmenter chooses among its checkpoints the way every stage
        does. Best files name the checkpoint their weights came from (``reused_from``);
        the checkpoints themselves are not copied. ``adapt`` changes the loaded modules
        in place before each evaluation (e.g. new batch-norm statistics); the weights then
        are this run's own, so they are saved as its checkpoints like trained ones.
        """
        def evaluate(state, generator, scaler, writer) -> None:
            scored = {record["step"] for record in state.history}  # before an interruption
            for path in checkpoints:
                payload = ckpt.load_checkpoint(path)
                if int(payload["step"]) in scored:
                    continue
                for key, module in stage.modules.items():
                    module.load_state_dict(payload["modules"][key])
                if adapt is not None:
                    adapt(stage.modules)
                state.step = int(payload["step"])
                self._evaluate(stage, state, generator, scaler, writer,
                               origin=None if adapt is not None else str(path))
            state.finished = True
            if self.dist.is_main:
                self._save(stage, state, generator, scaler, state.dir / "last.pt", [generator.get_state()])

        return self._run(stage, evaluate)

    def _run(self, stage: Stage, body: Callable) -> StageResult:
        """What every stage shares around its ``body``: devices, random state, resume (a
        finished stage is not run again), TensorBoard, and the ranks' common record."""
        state = _LoopState(stage, self.run_dir / "checkpoints" / stage.name)
        for module in stage.modules.values():
            module.to(self.device)
            if self.channels_last:
                module.to(memory_format=torch.channels_last)
        _move_optimizer_state(stage.optimizers, self.device)
        if stage.average and stage.predictor and stage.optimizers:
            state.average = WeightAverage(stage.modules[stage.predictor], stage.average)
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.dist.rank)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if self.resume and (state.dir / "last.pt").is_file():
            self._restore(stage, state, generator, scaler)
            if state.finished:
                return state.result()
        writer = self._writer(stage.name, state.step)
        try:
            body(state, generator, scaler, writer)
        finally:
            if writer is not None:
                writer.close()
        barrier(self.dist)  # rank 0's files are complete before any rank reads them
        state.history, state.best = broadcast_object((state.history, state.best), self.dist)
        return state.result()

    # ------------------------------------------------------------------ loop
    def _loop(self, stage, state, runner, generator, scaler, writer) -> None:
        bar = tqdm(total=stage.steps, initial=state.step, desc=stage.name, unit="step",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        for module in stage.modules.values():
            module.train()
        running: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        while state.step < stage.steps and not state.stopped_early:
            with self.timer.phase(f"{stage.name}/train"):
                batch = {k: self._on_device(v) for k, v in stage.batches(generator).items()}
                if stage.transform is not None:
                    batch = stage.transform(batch, generator)
                parts = self._step(stage, runner, batch, generator, scaler, state.step)
                if state.average is not None:
                    state.average.update(stage.modules[stage.predictor])
            state.step += 1
            bar.update(1)
            for key, value in parts.items():
                running.setdefault(key, []).append(value)
            if writer is not None and state.step % stage.log_every == 0:
                self._log_train(writer, stage, running, state.step, time.perf_counter() - t0)
                bar.set_postfix(loss=f"{sum(running['loss']) / len(running['loss']):.4f}")
                running, t0 = {}, time.perf_counter()
            if state.step % stage.eval_every == 0 or state.step == stage.steps:
                self._evaluate(stage, state, generator, scaler, writer)
        bar.close()
        state.finished = True
        gen_states = all_gather_objects(generator.get_state(), self.dist)
        if self.dist.is_main:
            self._save(stage, state, generator, scaler, state.dir / "last.pt", gen_states)

    def _step(self, stage, runner, batch, generator, scaler, step) -> dict[str, float]:
        scratch: dict = {"generator": generator, "step": step}
        logged: dict[str, float] = {}
        total = 0.0
        for objective in stage.objectives:
            optimizer = stage.optimizers[objective.optimizer]
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, parts = runner(objective.loss, batch, scratch)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"Stage '{stage.name}' stopped: the loss became {float(loss.detach())} at step "
                    f"{step + 1}; lower train.lr or check the input data. "
                    + self._last_good(stage.name)
                )
            scaler.scale(loss).backward()
            if stage.grad_clip > 0:
                scaler.unscale_(optimizer)
                params = [p for g in optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            scaler.step(optimizer)
            total += loss.item()
            logged.update(parts)
        scaler.update()
        for scheduler in stage.schedulers.values():
            scheduler.step()
        logged["loss"] = total
        return logged

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _autocast(self):
        """float16 on CUDA with AMP; bfloat16 on a CPU that computes it natively, when asked."""
        if self.train_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=self.amp)

    # ------------------------------------------------------------------ evaluation
    def _last_good(self, stage_name: str) -> str:
        """Where the last good checkpoint is, only if one was written (a message, not a promise)."""
        folder = self.run_dir / "checkpoints" / stage_name
        if (folder / "last.pt").is_file():
            return f"The last good checkpoint is in {folder}."
        return "No checkpoint had been written yet."

    def _evaluate(self, stage, state, generator, scaler, writer, origin: str | None = None) -> None:
        stop = False
        if self.dist.is_main:
            record, images = self._run_monitors(stage, state.step, state.evaluated(stage))
            state.add(record, stage)
            self._log_eval(writer, stage.name, record, images, state.step)
            stop = state.should_stop(stage)
        stop = broadcast_flag(stop, self.dist, self.device)
        state.stopped_early = stop
        gen_states = all_gather_objects(generator.get_state(), self.dist)
        if self.dist.is_main:  # bests and history first: last.pt must never point ahead
            with self.timer.phase(f"{stage.name}/checkpoints"):
                self._save_bests(stage, state, origin)
                _write_json(state.dir / "history.json", state.history)
                self._save(stage, state, generator, scaler, state.dir / "last.pt", gen_states)

    def _run_monitors(self, stage: Stage, step: int, modules: dict[str, nn.Module]
                      ) -> tuple[dict, dict]:
        n_evals = step // stage.eval_every
        want_images = stage.image_every > 0 and n_evals % stage.image_every == 0
        predictor = modules.get(stage.predictor) if stage.predictor else None
        ctx = EvalContext(modules, predictor, self.device, self.amp, step, want_images,
                          self.tile, self.overlap, cpu_bf16=self.cpu_bf16)
        record: dict = {"step": step, "epoch": math.ceil(step / stage.eval_every)}
        images: dict = {}
        with torch.no_grad():
            for monitor in stage.monitors:
                with self.timer.phase(f"{stage.name}/eval/{monitor.name}"):
                    result = monitor.evaluate(ctx)
                record.update(result.metrics)
                images.update(result.images)
        for module in stage.modules.values():
            module.train()
        return record, images

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, stage, state, generator, scaler, gen_states=None, full=True) -> dict:
        """A full payload (``last.pt``) holds the live modules to resume from, and their
        average beside them; a light one (step and best files) the weights that were evaluated."""
        modules = stage.modules if full else state.evaluated(stage)
        payload = {
            "format": ckpt.FORMAT, "version": ckpt.package_version(), "stage": stage.name,
            "step": state.step, "finished": state.finished, "predictor": stage.predictor,
            "modules": {k: _cpu_state(m) for k, m in modules.items()},
            **self.extra,
        }
        if full:
            if state.average is not None:
                payload["weight_average"] = state.average.state_dict()
            payload.update({
                "optimizers": {k: o.state_dict() for k, o in stage.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in stage.schedulers.items()},
                "scaler": scaler.state_dict(),
                "generators": gen_states or [generator.get_state()],
                "history": state.history, "best": state.best_plain(),
                "bad_evals": state.bad_evals, "stopped_early": state.stopped_early,
            })
        return payload

    def _save(self, stage, state, generator, scaler, path, gen_states=None) -> None:
        ckpt.save_atomic(self._payload(stage, state, generator, scaler, gen_states), path)

    def _save_bests(self, stage: Stage, state: _LoopState, origin: str | None = None) -> None:
        light = self._payload(stage, state, None, None, full=False)
        if origin is not None:
            light["reused_from"] = origin
        # A combined criterion may pick an earlier evaluation later on, so it needs them all.
        if (origin is None and self.keep_checkpoints) or state.combined:
            ckpt.save_atomic(light, state.dir / f"step-{state.step:07d}.pt")
        for metric in state.improved:
            ckpt.save_atomic(light, state.dir / f"best-{metric}.pt")
        for metric, step in state.moved.items():
            ckpt.copy_atomic(state.dir / f"step-{step:07d}.pt", state.dir / f"best-{metric}.pt")

    def _restore(self, stage, state, generator, scaler) -> None:
        payload = ckpt.load_checkpoint(state.dir / "last.pt")
        for key, module in stage.modules.items():
            module.load_state_dict(payload["modules"][key])
        for key, optimizer in stage.optimizers.items():
            optimizer.load_state_dict(payload["optimizers"][key])
        _move_optimizer_state(stage.optimizers, self.device)
        for key, scheduler in stage.schedulers.items():
            scheduler.load_state_dict(payload["schedulers"][key])
        scaler.load_state_dict(payload["scaler"])
        if state.average is not None:
            state.average.load_state_dict(payload["weight_average"])
        gens = payload["generators"]
        generator.set_state(gens[min(self.dist.rank, len(gens) - 1)])
        state.load(payload)

    # ------------------------------------------------------------------ logging
    def _writer(self, stage_name: str, step: int):
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb" / stage_name), purge_step=step or None)

    def _log_train(self, writer, stage, running, step, seconds) -> None:
        for key, values in running.items():
            writer.add_scalar(f"train/{key}", sum(values) / len(values), step)
        for key, optimizer in stage.optimizers.items():
            writer.add_scalar(f"train/lr_{key}", optimizer.param_groups[0]["lr"], step)
        writer.add_scalar("train/steps_per_s", stage.log_every / max(seconds, 1e-9), step)

    def _log_eval(self, writer, stage_name, record, images, step) -> None:
        if writer is None:
            return
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                writer.add_scalar(f"eval/{key}", value, step)
        for tag, image in images.items():
            writer.add_image(f"images/{tag}", image, step)
        writer.flush()


class _LoopState:
    """Step counter, evaluation history, best values and patience of one stage."""

    def __init__(self, stage: Stage, directory: Path) -> None:
        self.dir = directory
        self.step, self.bad_evals = 0, 0
        self.finished = self.stopped_early = False
        self.history: list[dict] = []
        self.best: dict[str, dict] = {}
        self.improved: list[str] = []
        self.moved: dict[str, int] = {}  # combined criteria whose pick went back to an earlier step
        self.directions = {m: d for mon in stage.monitors for m, d in mon.directions.items()}
        self.combined = {c.name: c for c in combined_criteria() if set(c.parts) <= set(self.directions)}
        self.average: WeightAverage | None = None
        self.directions.update({name: c.direction for name, c in self.combined.items()})
        if stage.stop_metric and stage.stop_metric not in self.directions:
            raise TrainingError(
                f"Stage '{stage.name}' cannot stop on '{stage.stop_metric}': no monitor declares "
                f"it; selectable metrics: {', '.join(self.directions) or 'none'}."
            )

    def evaluated(self, stage: Stage) -> dict[str, nn.Module]:
        """The modules the monitors see and the step files keep: the predictor's weight
        average in place of the live predictor when the stage averages."""
        if self.average is None:
            return stage.modules
        return {**stage.modules, stage.predictor: self.average.module}

    def add(self, record: dict, stage: Stage) -> None:
        self.history.append(record)
        self.improved, self.moved = [], {}
        for metric, direction in self.directions.items():
            if metric in self.combined:
                continue
            value = record.get(metric)
            if value is None or not math.isfinite(value):
                continue
            best = self.best.get(metric)
            better = best is None or (value > best["value"] if direction == "max"
                                      else value < best["value"])
            if better:
                path = self.dir / f"best-{metric}.pt"
                self.best[metric] = {"value": value, "step": record["step"],
                                     "epoch": record["epoch"], "path": str(path),
                                     "direction": direction}
                self.improved.append(metric)
        for name, crit in self.combined.items():
            self._rerank(name, crit, record)
        if stage.stop_metric:
            self.bad_evals = 0 if stage.stop_metric in self.improved else self.bad_evals + 1

    def _rerank(self, name: str, crit, record: dict) -> None:
        """Rank every evaluation so far again; the pick may be this one or an earlier one."""
        for past, value in zip(self.history, rank_sums(self.history, crit.parts)):
            past[name] = value
        pick = choose(self.history, name, crit.direction)
        before = self.best.get(name)
        self.best[name] = {"value": pick[name], "step": pick["step"], "epoch": pick["epoch"],
                           "path": str(self.dir / f"best-{name}.pt"), "direction": crit.direction}
        if pick["step"] == record["step"]:
            self.improved.append(name)
        elif before is None or before["step"] != pick["step"]:
            self.moved[name] = pick["step"]

    def should_stop(self, stage: Stage) -> bool:
        return bool(stage.stop_metric and stage.patience and self.bad_evals >= stage.patience)

    def best_plain(self) -> dict:
        return {k: dict(v) for k, v in self.best.items()}

    def load(self, payload: dict) -> None:
        self.step, self.finished = payload["step"], payload["finished"]
        self.history, self.best = list(payload["history"]), dict(payload["best"])
        self.bad_evals, self.stopped_early = payload["bad_evals"], payload["stopped_early"]

    def result(self) -> StageResult:
        return StageResult(self.dir.name, self.history, self.best, self.step,
                           self.stopped_early, self.dir)


def _cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _move_optimizer_state(optimizers: dict, device: torch.device) -> None:
    for optimizer in optimizers.values():
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and key != "step":
                    state[key] = value.to(device)


def _write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))
