"""The shared trainer: resume, NaN stop, early stopping, best-per-monitor checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from domadapt.config import TrainConfig
from domadapt.errors import TrainingError
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.monitors import Monitor, MonitorResult
from domadapt.training.optim import make_optimizer, make_scheduler
from domadapt.training.trainer import Objective, Stage, Trainer


class ScriptedMonitor(Monitor):
    """Returns a scripted value per evaluation (and the parameter norm, undirected)."""

    name = "scripted"
    directions = {"score": "max", "error": "min"}

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def evaluate(self, ctx):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        norm = float(sum(p.norm() for p in ctx.modules["net"].parameters()))
        return MonitorResult({"score": value, "error": -value, "param_norm": norm})


def _stage(steps=20, eval_every=5, values=(0.1,) * 10, fail_at=None, nan_at=None,
           patience=0, stop_metric=None, average=0.0):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))
    cfg = TrainConfig(steps=steps, lr=0.01, warmup_steps=2)
    opt = make_optimizer(net.parameters(), cfg)

    def batches(g):
        x = torch.rand(2, 1, 16, 16, generator=g)
        return {"image": x, "target": (x > 0.5).float()}

    def loss(modules, batch, scratch):
        if fail_at is not None and scratch["step"] == fail_at:
            raise KeyboardInterrupt  # a kill in the middle of a step
        out = modules["net"](batch["image"])
        value = nn.functional.binary_cross_entropy_with_logits(out, batch["target"])
        if nan_at is not None and scratch["step"] >= nan_at:
            value = value * float("nan")
        return value, {"bce": value.item()}

    return Stage("toy", {"net": net}, {"main": opt}, [Objective(loss)], batches, steps,
                 eval_every, [ScriptedMonitor(values)], predictor="net" if average else None,
                 stop_metric=stop_metric, patience=patience, average=average,
                 schedulers={"main": make_scheduler(opt, cfg, steps)}, log_every=5)


def _trainer(path, resume=False):
    return Trainer(path, torch.device("cpu"), seed=1, resume=resume, progress=False)


def test_resume_after_kill_gives_identical_weights_and_history(tmp_path):
    full = _trainer(tmp_path / "a").fit(_stage())
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "b").fit(_stage(fail_at=13))
    partial = load_checkpoint(tmp_path / "b/checkpoints/toy/last.pt")
    assert partial["step"] == 10 and not partial["finished"]
    resumed = _trainer(tmp_path / "b", resume=True).fit(_stage())
    a = load_checkpoint(tmp_path / "a/checkpoints/toy/last.pt")["modules"]["net"]
    b = load_checkpoint(tmp_path / "b/checkpoints/toy/last.pt")["modules"]["net"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop_scripted = [{k: v for k, v in r.items() if k != "score" and k != "error"}
                     for r in full.history]
    assert drop_scripted == [{k: v for k, v in r.items() if k != "score" and k != "error"}
                             for r in resumed.history]


def test_resume_of_finished_stage_does_not_train_again(tmp_path):
    first = _trainer(tmp_path).fit(_stage())
    again = _trainer(tmp_path, resume=True).fit(_stage())
    assert again.history == first.history and again.last_step == 20


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="loss became nan at step 13"):
        _trainer(tmp_path).fit(_stage(nan_at=12))
    assert load_checkpoint(tmp_path / "checkpoints/toy/last.pt")["step"] == 10


def test_best_checkpoint_per_monitor_and_direction(tmp_path):
    values = [0.2, 0.5, 0.4, 0.3]
    result = _trainer(tmp_path).fit(_stage(values=values))
    assert result.best["score"]["step"] == 10  # max of score
    assert result.best["error"]["step"] == 10  # min of -score
    best = load_checkpoint(result.best_path("score"))
    assert best["step"] == 10
    assert {p.name for p in (tmp_path / "checkpoints/toy").glob("step-*.pt")} == {
        f"step-{s:07d}.pt" for s in (5, 10, 15, 20)}
    assert (tmp_path / "checkpoints/toy/history.json").is_file()
    assert any((tmp_path / "tb/toy").iterdir())


def test_early_stopping_with_patience(tmp_path):
    values = [0.5, 0.4, 0.3, 0.2]
    result = _trainer(tmp_path).fit(_stage(steps=40, values=values, patience=2,
                                           stop_metric="score"))
    assert result.stopped_early and result.last_step == 15
    assert result.best["score"]["step"] == 5


def test_stop_metric_must_be_declared(tmp_path):
    with pytest.raises(TrainingError, match="param_norm"):
        _trainer(tmp_path).fit(_stage(patience=1, stop_metric="param_norm"))


def test_rescoring_saved_checkpoints_evaluates_them_as_the_trainer_did(tmp_path):
    """A reused run's checkpoints go through the same monitors and bookkeeping as training."""
    trained = _trainer(tmp_path / "a").fit(_stage(values=(0.1, 0.4, 0.2, 0.3)))
    saved = sorted((tmp_path / "a/checkpoints/toy").glob("step-*.pt"))
    assert len(saved) == 4
    stage = _stage(values=(0.1, 0.4, 0.2, 0.3))
    rescored = _trainer(tmp_path / "b").rescore(stage, saved)
    norms = [r["param_norm"] for r in rescored.history]
    assert norms == pytest.approx([r["param_norm"] for r in trained.history])  # the saved weights
    assert rescored.best["score"]["step"] == 10 and rescored.best["error"]["step"] == 10
    best = load_checkpoint(tmp_path / "b/checkpoints/toy/best-score.pt")
    assert best["reused_from"] == str(saved[1]) and best["step"] == 10
    assert not list((tmp_path / "b/checkpoints/toy").glob("step-*.pt"))  # no copies
    again = _trainer(tmp_path / "b", resume=True).rescore(_stage(values=(0.9,)), saved)
    assert again.history == rescored.history  # a finished re-scoring is not redone


def test_an_interrupted_rescoring_resumes_without_scoring_a_checkpoint_twice(tmp_path):
    class Interrupting(ScriptedMonitor):
        def evaluate(self, ctx):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().evaluate(ctx)

    _trainer(tmp_path / "a").fit(_stage())
    saved = sorted((tmp_path / "a/checkpoints/toy").glob("step-*.pt"))
    stage = _stage()
    stage.monitors = [Interrupting((0.1,))]
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "b").rescore(stage, saved)
    resumed = _trainer(tmp_path / "b", resume=True).rescore(_stage(), saved)
    assert [r["step"] for r in resumed.history] == [5, 10, 15, 20]



class TwoParts(Monitor):
    """Two scripted criteria, one maximised and one minimised: parts of ``combo_test``."""

    name = "two_parts"
    directions = {"part_a_test": "max", "part_b_test": "min"}

    def __init__(self, a, b):
        self.a, self.b, self.calls = a, b, 0

    def evaluate(self, ctx):
        a, b = self.a[self.calls], self.b[self.calls]
        self.calls += 1
        return MonitorResult({"part_a_test": a, "part_b_test": b})


def _fit_combined(path, a, b, **stage_options):
    """Train the toy stage with ``combo_test`` = rank(part_a_test) + rank(part_b_test) registered."""
    from domadapt.criteria import REGISTRY, Criterion, register

    made = [register(type(name, (Criterion,), {"name": name, "direction": direction, "parts": parts}))
            for name, direction, parts in (("part_a_test", "max", ()), ("part_b_test", "min", ()),
                                           ("combo_test", "min", ("part_a_test", "part_b_test")))]
    try:
        stage = _stage(**stage_options)
        stage.monitors = [TwoParts(a, b)]
        return _trainer(path).fit(stage)
    finally:
        for cls in made:
            REGISTRY.pop(cls.name, None)


def test_a_combined_criterion_may_go_back_to_an_earlier_checkpoint(tmp_path):
    """Rank sums change as evaluations come in: the kept file follows the pick back in time."""
    result = _fit_combined(tmp_path, (0.9, 0.5, 0.7, 0.8), (0.5, 0.1, 0.05, 0.6))
    # ranks after the last evaluation: a [1, 4, 3, 2] + b [3, 2, 1, 4] = [4, 6, 4, 6]
    assert [r["combo_test"] for r in result.history] == [4, 6, 4, 6]
    assert result.best["combo_test"]["step"] == 5  # was 15 after the third evaluation
    kept = load_checkpoint(result.best_path("combo_test"))
    first = load_checkpoint(tmp_path / "checkpoints/toy/step-0000005.pt")
    assert kept["step"] == 5
    for key, value in first["modules"]["net"].items():
        assert torch.equal(kept["modules"]["net"][key], value), key


def test_patience_on_a_combined_criterion_counts_evaluations_that_are_not_its_pick(tmp_path):
    """Early stopping on the default kind of criterion: an evaluation that does not become the
    pick is a bad one, even when the pick moves back to an earlier step."""
    result = _fit_combined(tmp_path, (0.9, 0.5, 0.7, 0.8, 0.1), (0.5, 0.1, 0.05, 0.6, 0.9),
                           steps=40, patience=2, stop_metric="combo_test")
    # picks 5 | 5 (a tie: bad) | 15 (reset) | back to 5 (bad) | 5 (bad): the second bad in a row
    assert result.stopped_early and result.last_step == 25
    assert result.best["combo_test"]["step"] == 5


def test_a_weight_averaging_stage_evaluates_and_saves_the_average_and_resumes_identically(tmp_path):
    full = _trainer(tmp_path / "a").fit(_stage(average=0.9))
    folder = tmp_path / "a/checkpoints/toy"
    last = load_checkpoint(folder / "last.pt")
    step = load_checkpoint(folder / "step-0000020.pt")["modules"]["net"]
    live, averaged = last["modules"]["net"], last["weight_average"]["weights"]
    assert last["weight_average"]["updates"] == 20
    assert all(torch.equal(step[k], averaged[k]) for k in step)
    assert not all(torch.equal(step[k], live[k]) for k in step)  # the average, not the live net
    saved_norm = float(sum(v.norm() for k, v in step.items()))
    assert full.history[-1]["param_norm"] == pytest.approx(saved_norm, rel=1e-5)  # what was scored

    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "b").fit(_stage(average=0.9, fail_at=13))
    _trainer(tmp_path / "b", resume=True).fit(_stage(average=0.9))
    again = load_checkpoint(tmp_path / "b/checkpoints/toy/step-0000020.pt")["modules"]["net"]
    assert all(torch.equal(step[k], again[k]) for k in step)
