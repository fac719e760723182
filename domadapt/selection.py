"""Label-free checkpoint choice, replayed from a run folder, and its measured regret.

Every evaluation of a run's final stage is kept (``history.json`` + the
weights in ``step-<N>.pt``), so any criterion's choice can be replayed after
the fact. When the target has labels (synthetic domains, benchmark pairs),
:func:`selection_report` also scores every checkpoint on the target test
volume and reports, per criterion, the *regret* (target IoU of the best
checkpoint minus that of the chosen one) and the Spearman rank correlation
between the criterion and target IoU across checkpoints. Labels are used for
this report only; no criterion can read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domadapt.config import load_yaml
from domadapt.criteria import directions, with_combined
from domadapt.data.atomic import atomic_path
from domadapt.errors import RunFolderError
from domadapt.markdown import table

SCORES_FILE = "checkpoint_scores.json"


@dataclass
class RunHistory:
    run_dir: Path
    stage: str
    records: list[dict]

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / "checkpoints" / self.stage


def load_history(run_dir: str | Path, stage: str | None = None) -> RunHistory:
    """The evaluation history of a run's final stage (or of ``stage``)."""
    run_dir = Path(run_dir)
    base = run_dir / "checkpoints"
    if not base.is_dir() and (run_dir / "config.yaml").is_file():
        raise _no_evaluation_yet(run_dir)
    if not base.is_dir():
        raise RunFolderError(f"{run_dir} is not a domadapt run folder (no config.yaml, no checkpoints/).")
    if stage is None:
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            stage = Path(json.loads(metrics.read_text())["selected_checkpoint"]).parent.name
        else:
            stages = sorted(base.iterdir(), key=lambda p: p.stat().st_mtime)
            stage = stages[-1].name if stages else None
    path = base / str(stage) / "history.json"
    if stage is None or not path.is_file():
        raise _no_evaluation_yet(run_dir)
    return RunHistory(run_dir, stage, with_combined(json.loads(path.read_text())))


def _no_evaluation_yet(run_dir: Path) -> RunFolderError:
    """A run that has started but not yet evaluated is not a broken folder: say when to come back."""
    config = run_dir / "config.yaml"
    every = load_yaml(config).get("train", {}).get("eval_every") if config.is_file() else None
    return RunFolderError(
        f"Run folder {run_dir} has no evaluation yet (the first comes after "
        f"{every or 'train.eval_every'} training steps); run select again once it has one."
    )


def target_has_labels(run_dir: str | Path) -> bool:
    """Whether the run's target test volume was scored (its metrics.json says so)."""
    metrics = Path(run_dir) / "metrics.json"
    return metrics.is_file() and bool(json.loads(metrics.read_text()).get("target_labels"))


def choose(records: list[dict], criterion: str, direction: str | None = None) -> dict | None:
    """The record a criterion picks (first one on ties); None if it was never logged."""
    direction = direction or directions()[criterion]
    valued = [r for r in records if _finite(r.get(criterion))]
    if not valued:
        return None
    pick = max if direction == "max" else min
    return pick(valued, key=lambda r: r[criterion])


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Rank correlation; None when either side is constant or too short."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def regret_table(records: list[dict], target_iou: dict[int, float],
                 criteria: dict[str, str] | None = None) -> dict[str, dict]:
    """Per criterion: chosen step, its target IoU, regret and Spearman correlation.

    Spearman is computed between the criterion oriented so that higher is
    better and target IoU, so +1 always means "ranks checkpoints perfectly".
    """
    best = max(target_iou.values())
    table = {}
    for name, direction in (criteria or directions()).items():
        chosen = choose(records, name, direction)
        if chosen is None:
            continue
        pairs = [(r[name], target_iou[r["step"]]) for r in records
                 if _finite(r.get(name)) and r["step"] in target_iou]
        sign = 1.0 if direction == "max" else -1.0
        rho = spearman([sign * a for a, _ in pairs], [b for _, b in pairs])
        iou = target_iou.get(chosen["step"])
        table[name] = {"direction": direction, "chosen_step": chosen["step"],
                       "chosen_target_iou": iou,
                       "regret": None if iou is None else best - iou, "spearman": rho}
    return table


def score_checkpoints(history: RunHistory, max_slices: int = 40, progress: bool = True) -> dict[int, dict]:
    """Target test scores of every evaluated checkpoint (uses labels: reporting only).

    At most ``max_slices`` evenly spaced target test slices are predicted per
    checkpoint to bound the cost; the result is cached in the stage folder.
    """
    cache = history.stage_dir / SCORES_FILE
    if cache.is_file():
        cached = {int(k): v for k, v in json.loads(cache.read_text()).items()}
        if all(r["step"] in cached for r in history.records):
            return cached
    from domadapt.config import config_from_plain, load_yaml
    from domadapt.data.prepare import load_target
    from domadapt.data.volume import Volume
    from domadapt.inference import predict_to_array
    from domadapt.metrics import segmentation_scores

    cfg = config_from_plain(load_yaml(history.run_dir / "config.yaml"), stored=True)
    test = load_target(cfg, "test")
    if not isinstance(test, Volume):
        raise RunFolderError(f"The target of {history.run_dir} has no labels to score with.")
    z = np.unique(np.linspace(0, test.shape[0] - 1, min(max_slices, test.shape[0])).astype(int))
    image, labels = test.image[z], test.mask[z]
    scores, reused = {}, _reused_run(history)
    for record in _progress(history.records, progress):
        net = _checkpoint_model(history, record["step"], reused)
        prob = predict_to_array(net, image, voxel_size_nm=test.voxel_size_nm,
                                model_pixel_nm=cfg.data.pixel_size_nm, tile=cfg.inference.tile,
                                overlap=cfg.inference.overlap, cpu_bf16=cfg.inference.cpu_bf16)
        s = segmentation_scores(prob, labels, cfg.inference.threshold)
        scores[record["step"]] = {"target_iou": s["iou"], "target_iou_slice_mean": s["iou_slice_mean"]}
    cache.write_text(json.dumps(scores, indent=1))
    return scores


def model_at_step(history: RunHistory, step: int):
    """The model a finished run evaluated at ``step``, harmonizer included: what a criterion
    scored there, ready to predict (e.g. to re-choose a run under another criterion)."""
    return _checkpoint_model(history, step, _reused_run(history))


def _reused_run(history: RunHistory) -> tuple[Path, dict | None] | None:
    """For a run that re-scored another run's checkpoints
    (``style.segmenter_from``): that run's stage folder and this run's harmonizer spec."""
    from domadapt.training.checkpoint import load_checkpoint

    picks = sorted(history.stage_dir.glob("best-*.pt"))
    payload = load_checkpoint(picks[0]) if picks else {}
    if "reused_from" not in payload:
        return None
    return Path(payload["reused_from"]).parent, payload.get("harmonizer")


def _checkpoint_model(history: RunHistory, step: int, reused: tuple[Path, dict | None] | None):
    """The model evaluated at ``step``. A run that reused another run's checkpoints keeps only
    its pick: the other steps are that run's segmenters behind this run's harmonizer."""
    from torch import nn

    from domadapt.models.spec import with_harmonizer
    from domadapt.predict import model_from_checkpoint

    name = f"step-{step:07d}.pt"
    if (history.stage_dir / name).is_file():
        return model_from_checkpoint(history.stage_dir / name)[0]
    if reused is None:
        raise RunFolderError(f"Checkpoint {history.stage_dir / name} is missing.")
    folder, harmonizer = reused
    net = model_from_checkpoint(folder / name)[0]
    net = net[-1] if isinstance(net, nn.Sequential) else net  # its own harmonizer is not this run's
    return with_harmonizer(net, harmonizer).eval()


def _progress(items, enabled):
    from tqdm.auto import tqdm

    return tqdm(items, desc="scoring checkpoints", disable=not enabled)


def selection_report(run_dir: str | Path, with_labels: bool = True, max_slices: int = 40,
                     progress: bool = True) -> dict:
    """Checkpoints x criteria, each criterion's pick and, with labels, regret and Spearman."""
    history = load_history(run_dir)
    present = {k: v for k, v in directions().items() if any(_finite(r.get(k)) for r in history.records)}
    report: dict = {"run_dir": str(history.run_dir), "stage": history.stage,
                    "criteria": present, "records": history.records,
                    "picks": {k: choose(history.records, k, v)["step"] for k, v in present.items()}}
    if with_labels:
        scores = score_checkpoints(history, max_slices, progress)
        target_iou = {step: s["target_iou"] for step, s in scores.items()}
        report["target_scores"] = scores
        report["best_step"] = max(target_iou, key=target_iou.get)
        report["regret"] = regret_table(history.records, target_iou, present)
    return report


def write_report(report: dict, run_dir: str | Path) -> list[Path]:
    """selection.json, selection.md and (with labels) selection.png in the run folder."""
    run_dir = Path(run_dir)
    paths = [run_dir / "selection.json", run_dir / "selection.md"]
    paths[0].write_text(json.dumps(report, indent=1, default=str))
    paths[1].write_text(render_table(report))
    if "target_scores" in report:
        paths.append(plot_criteria(report, run_dir / "selection.png"))
    return paths


def render_table(report: dict) -> str:
    """Markdown: one row per checkpoint, one column per criterion; picks marked with *."""
    names = list(report["criteria"])
    scores = report.get("target_scores", {})
    head = ["step", *[f"{n} ({report['criteria'][n]})" for n in names]]
    if scores:
        head.append("target IoU (labels)")
    rows = []
    for r in report["records"]:
        cells = [str(r["step"])]
        for n in names:
            mark = "*" if report["picks"].get(n) == r["step"] else ""
            cells.append(f"{r[n]:.4f}{mark}" if _finite(r.get(n)) else "-")
        if scores:
            cells.append(f"{scores[r['step']]['target_iou']:.4f}")
        rows.append(cells)
    lines = [table(head, rows), "\n`*` = the checkpoint that criterion picks."]
    if "regret" in report:
        regret = [[n, row["chosen_step"], f"{row['chosen_target_iou']:.4f}", f"{row['regret']:.4f}",
                   "-" if row["spearman"] is None else f"{row['spearman']:+.2f}"]
                  for n, row in report["regret"].items()]
        lines += ["", table(["criterion", "picks step", "target IoU", "regret", "Spearman"], regret)]
    return "\n".join(lines) + "\n"


def plot_criteria(report: dict, path: Path) -> Path:
    """Each criterion (normalised to [0, 1], higher = better) and target IoU over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in report["records"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, direction in report["criteria"].items():
        values = np.array([r.get(name, np.nan) for r in report["records"]], dtype=float)
        values = values if direction == "max" else -values
        span = np.nanmax(values) - np.nanmin(values)
        ax.plot(steps, (values - np.nanmin(values)) / (span or 1.0), label=name, alpha=0.8)
    iou = [report["target_scores"][s]["target_iou"] for s in steps]
    ax2 = ax.twinx()
    ax2.plot(steps, iou, "k-o", lw=2, label="target IoU (labels)")
    ax.set_xlabel("step")
    ax.set_ylabel("criterion (normalised, higher = better)")
    ax2.set_ylabel("target IoU")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
