"""--method auto: the portfolio's runs compared by one label-free criterion."""

from __future__ import annotations

import json

import pytest

import domadapt
from domadapt.auto import rank, run_auto, write_auto
from domadapt.config import build_config
from domadapt.errors import ConfigError
from domadapt.pipeline import run_dir_for


def _fake_run(root, method: str, criterion: str, values: dict[int, float], chosen: int):
    """A finished run folder with an evaluation history and the checkpoint it chose."""
    folder = root / "a-to-b" / method / "seed0"
    stage = folder / "checkpoints" / "segmentation"
    stage.mkdir(parents=True)
    (stage / "history.json").write_text(json.dumps([{"step": s, criterion: v} for s, v in values.items()]))
    metrics = {"selection_criterion": criterion, "selected_step": chosen, "method": method,
               "selected_checkpoint": f"checkpoints/segmentation/step-{chosen:07d}.pt",
               "target_iou_slice_mean": 0.5, "trust_warnings": 0, "wall_time_s": 10.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder, metrics, True


def test_auto_keeps_the_method_whose_checkpoint_the_criterion_prefers(tmp_path):
    cfg = build_config(profile="smoke", method="baseline", flags={"out": str(tmp_path),
                                                                  "source": "a", "target": "b"})
    members = {"baseline": _fake_run(tmp_path, "baseline", "morph_ours", {10: 0.9, 20: 0.6}, 20),
               "style_transfer": _fake_run(tmp_path, "style_transfer", "morph_ours", {10: 0.4}, 10),
               "ssl": _fake_run(tmp_path, "ssl", "morph_ours", {10: 0.5, 20: 0.45}, 20)}
    from dataclasses import replace

    won = write_auto(replace(cfg, method="auto"), members)
    assert won["auto"]["chosen_method"] == "style_transfer" and won["auto"]["chosen_step"] == 10
    assert won["auto"]["runner_up"]["method"] == "ssl"
    assert won["selected_checkpoint"].endswith("style_transfer/seed0/checkpoints/segmentation/"
                                               "step-0000010.pt")
    assert won["wall_time_s"] == pytest.approx(30.0)
    report = (tmp_path / "a-to-b" / "auto" / "seed0" / "report.md").read_text()
    assert report.index("| 1 | style_transfer") < report.index("| 2 | ssl") < report.index("| 3 | baseline")


def test_rank_follows_the_direction_and_puts_unscored_last():
    cands = [{"criterion": "source_val_iou", "value": v, "method": m}
             for m, v in (("a", 0.7), ("b", None), ("c", 0.9))]
    assert [c["method"] for c in rank(cands)] == ["c", "a", "b"]
    with pytest.raises(ConfigError, match="different criteria"):
        rank([{"criterion": "morph_ours", "value": 1.0}, {"criterion": "morph_paper", "value": 1.0}])


def test_a_combined_criterion_ranks_the_candidates_among_themselves():
    """Within-run rank sums do not compare across runs; the parts, scored on the same crops, do."""
    parts = {"A": (1.0, 0.5), "B": (2.0, 0.9), "C": (1.2, 0.95)}
    within = {"A": 2.0, "B": 2.0, "C": 6.0}  # each run's own rank sum: misleading across runs
    cands = [{"criterion": "rank_morph_consistency", "value": within[m], "method": m,
              "parts": {"morph_ours": p[0], "target_consistency": p[1]}} for m, p in parts.items()]
    ranked = rank(cands)
    # morph_ours ranks A 1, C 2, B 3; target_consistency C 1, B 2, A 3: sums C 3, A 4, B 5
    assert [c["method"] for c in ranked] == ["C", "A", "B"]
    assert [c["value"] for c in ranked] == [3.0, 4.0, 5.0]


def test_auto_runs_the_portfolio_once_and_its_folder_loads_as_a_model(tmp_path):
    def build(method, extra):
        return build_config(profile="smoke", method=method,
                            overrides=["train.threads=1", *extra], flags={"out": str(tmp_path)})

    won = run_auto(build, portfolio=["style_transfer"], progress=False)
    candidates = {c["method"] for c in won["auto"]["candidates"]}
    assert candidates == {"baseline", "style_transfer"}
    style = build("style_transfer", [])
    recorded = (run_dir_for(style).parent.parent / "style_transfer" / "seed0" / "config.yaml").read_text()
    assert "segmenter_from" in recorded and "\nstyle:" in recorded and "\nssl:" not in recorded
    folder = run_dir_for(build("baseline", [])).parent.parent / "auto" / "seed0"
    assert domadapt.load_model(folder).source.name.endswith(".pt")
    from click.testing import CliRunner

    from domadapt.cli import cli

    shown = CliRunner().invoke(cli, ["select", str(folder), "--quiet", "--max-slices", "3"])
    assert shown.exit_code == 0, shown.output
    assert "cross-method regret" in shown.output and "| source_val_iou |" in shown.output
    assert (run_dir_for(style) / "selection.json").is_file()  # each member's own report too
    stamp = (run_dir_for(build("baseline", [])) / "metrics.json").stat().st_mtime_ns
    again = run_auto(build, portfolio=["style_transfer"], progress=False)  # finished members are reused
    assert (run_dir_for(build("baseline", [])) / "metrics.json").stat().st_mtime_ns == stamp
    assert again["wall_time_s"] == 0.0
    cli_run = CliRunner().invoke(cli, ["run", "--profile", "smoke", "--quiet", "--set", "train.threads=1",
                                       "--out", str(tmp_path), "--method", "auto",
                                       "--portfolio", "style_transfer"])
    assert cli_run.exit_code == 0, cli_run.output
    assert "of 2 methods" in cli_run.output  # the default portfolio holds three
