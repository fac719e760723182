"""``domadapt run --method auto``: run a portfolio of methods, keep the one the criterion prefers.

No method wins on every pair, and a user without target labels cannot tell which to
try. Every portfolio run chooses its checkpoint by the same label-free criterion on the
same fixed sample of target crops (the sample depends on the seed, not the method),
so the best checkpoint over all methods is the best of the runs' own choices. Methods
that can start from the pair's source-only run do (their ``reuse_key``), which keeps
the portfolio close to the cost of one source-only run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.config import RunConfig, configs_dir, load_yaml, save_config
from domadapt.criteria import REGISTRY, directions, rank_sums
from domadapt.errors import ConfigError
from domadapt.markdown import table
from domadapt.pipeline import METRICS_FILE, run, run_dir_for
from domadapt.selection import load_history
from domadapt.strategies import get_strategy

#: configs/auto.yaml: the default portfolio.
PORTFOLIO_FILE = "auto.yaml"
#: The method every other portfolio member may reuse; always run first.
SOURCE_ONLY = "baseline"


def default_portfolio() -> list[str]:
    """The methods of configs/auto.yaml, the source-only baseline first."""
    data = load_yaml(configs_dir() / PORTFOLIO_FILE)
    methods = data.get("portfolio") if isinstance(data, dict) else None
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"{PORTFOLIO_FILE} must hold 'portfolio:', a list of method names.")
    return _baseline_first(methods)


def _baseline_first(methods: list[str]) -> list[str]:
    for m in methods:
        get_strategy(m)  # an unknown name fails before anything runs
    return [SOURCE_ONLY] + [m for m in dict.fromkeys(methods) if m != SOURCE_ONLY]


def run_auto(build: Callable[[str, list[str]], RunConfig], *, portfolio: list[str] | None = None,
             resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or reuse, when finished) each portfolio method, then write the auto run folder.

    ``build(method, extra_overrides)`` makes one member's RunConfig from the user's command.
    """
    methods = _baseline_first(portfolio) if portfolio else default_portfolio()
    base = build(SOURCE_ONLY, [])
    members = {}
    for method in methods:
        cfg = build(method, _reuse(method, base, build))
        folder = run_dir_for(cfg)
        finished = (folder / METRICS_FILE).is_file() and not overwrite
        metrics = (json.loads((folder / METRICS_FILE).read_text()) if finished
                   else run(cfg, resume=resume and folder.exists(), overwrite=overwrite,
                            progress=progress))
        members[method] = (folder, metrics, not finished)
    return write_auto(replace(base, method="auto"), members)


def _reuse(method: str, base: RunConfig, build) -> list[str]:
    strategy = get_strategy(method)
    if method == SOURCE_ONLY or not strategy.can_reuse(build(method, [])):
        return []
    return [f"{strategy.reuse_key}={run_dir_for(base)}"]


def candidate(method: str, folder: Path, metrics: dict) -> dict:
    """One portfolio member's chosen checkpoint and its criterion value."""
    criterion, step = metrics["selection_criterion"], metrics["selected_step"]
    record = next((r for r in load_history(folder).records if r["step"] == step), {})
    value = record.get(criterion)
    return {"method": method, "run_dir": str(folder), "step": step, "criterion": criterion,
            "value": None if value is None or not np.isfinite(value) else float(value),
            "parts": {p: record.get(p) for p in REGISTRY[criterion].parts},
            "selected_checkpoint": str(_absolute(folder, metrics["selected_checkpoint"])),
            "target_iou_slice_mean": metrics.get("target_iou_slice_mean"),
            "trust_warnings": metrics.get("trust_warnings"),
            "wall_time_s": metrics.get("wall_time_s")}


def _absolute(folder: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else folder / path


def rank(candidates: list[dict]) -> list[dict]:
    """Best first by the shared criterion's direction; unscored candidates last.

    A combined criterion's value ranks checkpoints within one run, so across methods the
    candidates are ranked again among themselves by its parts (all scored on the same crops)."""
    criteria = {c["criterion"] for c in candidates}
    if len(criteria) != 1:
        raise ConfigError(f"Portfolio runs chose by different criteria {sorted(criteria)}; "
                          "auto compares one criterion across methods.")
    name = criteria.pop()
    if REGISTRY[name].parts:
        sums = across_runs([c["parts"] for c in candidates], name)
        candidates = [{**c, "value": v} for c, v in zip(candidates, sums)]
    sign = 1.0 if directions()[name] == "min" else -1.0
    return sorted(candidates, key=lambda c: (c["value"] is None, sign * (c["value"] or 0.0)))


def across_runs(records: list[dict], criterion: str) -> list:
    """Values of ``criterion`` that compare checkpoints of different runs: its own, or for a
    combined criterion the rank sums among these records (its per-run values rank within a run)."""
    parts = REGISTRY[criterion].parts
    return rank_sums(records, parts) if parts else [r.get(criterion) for r in records]


def write_auto(cfg: RunConfig, members: dict[str, tuple[Path, dict, bool]]) -> dict:
    """metrics.json (the winner's scores, which method and step won, the runner-up), report.md
    with the candidates ranked and a montage of the top three, config.yaml."""
    ranked = rank([candidate(m, folder, metrics) for m, (folder, metrics, _) in members.items()])
    winner = ranked[0]
    folder = run_dir_for(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    won = dict(members[winner["method"]][1])
    spent = sum(float(metrics.get("wall_time_s") or 0.0) for _, metrics, ran in members.values() if ran)
    won.update(method="auto", selected_checkpoint=winner["selected_checkpoint"],
               wall_time_s=spent, auto={"chosen_method": winner["method"],
                                        "chosen_step": winner["step"],
                                        "runner_up": ranked[1] if len(ranked) > 1 else None,
                                        "candidates": ranked})
    save_config(cfg, folder / "config.yaml")
    montage = _montage(cfg, ranked[:3], folder / "auto_montage.png")
    (folder / "report.md").write_text(_report(ranked, montage))
    (folder / METRICS_FILE).write_text(json.dumps(won, indent=1))
    return won


def _report(ranked: list[dict], montage: Path | None) -> str:
    crit = ranked[0]["criterion"]
    lines = ["# domadapt auto run", "",
             f"Each method's checkpoint was chosen by `{crit}` ({directions()[crit]}) without target "
             f"labels; the same criterion ranks them across methods. Kept: **{ranked[0]['method']}** "
             f"at step {ranked[0]['step']}.", ""]
    rows = [[i, c["method"], c["step"], "n/a" if c["value"] is None else f"{c['value']:.4f}",
             c["trust_warnings"],
             "—" if c["target_iou_slice_mean"] is None else f"{c['target_iou_slice_mean']:.3f}"]
            for i, c in enumerate(ranked, 1)]
    lines.append(table(["rank", "method", "step", crit, "trust warnings", "target IoU (labels, if any)"],
                       rows))
    if montage is not None:
        lines += ["", f"![top three on one target slice]({montage.name})"]
    return "\n".join(lines) + "\n"


def _montage(cfg: RunConfig, top: list[dict], path: Path) -> Path | None:
    """The middle target test slice and the top candidates' predictions of it, side by side."""
    import tifffile
    from PIL import Image

    slices = []
    for c in top:
        prob = Path(c["run_dir"]) / "predictions" / "target_test_prob.tif"
        if not prob.is_file():
            return None
        with tifffile.TiffFile(prob) as tif:
            slices.append(tif.pages[len(tif.pages) // 2].asarray())
    image = _target_slice(cfg, slices[0].shape)
    panels = ([image] if image is not None else []) + slices
    gap = np.full((panels[0].shape[0], 6), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    Image.fromarray(row).save(path)
    return path


def _target_slice(cfg: RunConfig, shape: tuple[int, int]) -> Any:
    """The middle target test image slice as uint8 (None if it cannot be read again)."""
    from domadapt.data.prepare import load_target
    from domadapt.errors import DomadaptError

    try:
        image = load_target(cfg, "test").image
    except DomadaptError:
        return None
    plane = np.asarray(image[image.shape[0] // 2], np.float32)
    if plane.shape != shape:
        return None
    low, high = np.percentile(plane, [1, 99])
    return np.clip((plane - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)


def auto_selection_report(auto_dir: str | Path, with_labels: bool = True, max_slices: int = 40,
                          progress: bool = True) -> dict:
    """``domadapt select`` on an auto run: each member's report (written in its folder), then
    every criterion's choice across the members and, with labels, its cross-method regret."""
    from domadapt.selection import choose, selection_report, write_report

    metrics = json.loads((Path(auto_dir) / METRICS_FILE).read_text())
    members = {}
    for cand in metrics["auto"]["candidates"]:
        report = selection_report(cand["run_dir"], with_labels, max_slices, progress)
        write_report(report, cand["run_dir"])
        members[cand["method"]] = report
    shared = [c for c in directions() if all(c in r["criteria"] for r in members.values())]
    best = (max(s["target_iou"] for r in members.values() for s in r["target_scores"].values())
            if with_labels else None)
    rows = {}
    for crit in shared:
        sign = 1.0 if directions()[crit] == "min" else -1.0
        picks = {m: choose(r["records"], crit) for m, r in members.items()}
        values = dict(zip(picks, across_runs(list(picks.values()), crit)))
        method = min(picks, key=lambda m: sign * values[m])
        rows[crit] = {"method": method, "step": picks[method]["step"]}
        if with_labels:
            kept = members[method]["target_scores"][picks[method]["step"]]["target_iou"]
            rows[crit].update(target_iou=kept, regret=best - kept)
    return {"auto_dir": str(auto_dir), "methods": list(members), "cross_method": rows}


def render_auto_selection(report: dict) -> str:
    """Markdown: each criterion's cross-method choice (and regret, with labels)."""
    labels = any("regret" in r for r in report["cross_method"].values())
    head = ["criterion", "keeps method", "step"] + (["target IoU", "cross-method regret"] if labels else [])
    rows = [[crit, row["method"], row["step"]]
            + ([f"{row['target_iou']:.4f}", f"{row['regret']:.4f}"] if labels else [])
            for crit, row in report["cross_method"].items()]
    return f"Methods: {', '.join(report['methods'])}.\n\n" + table(head, rows) + "\n"
