"""Benchmark rows -> results.csv, summary.md and figures, on a small hand-made grid."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from domadapt import reporting
from domadapt.errors import ConfigError

PUBLISHED = Path(__file__).resolve().parents[1] / "configs" / "benchmarks" / "published.yaml"
PAIRS = [("lucchi", "vnc"), ("vnc", "lucchi")]
# (pair, column) -> target_iou_slice_mean of seeds 0 and 1; the oracle beats every method.
SCORES = {
    ("lucchi->vnc", "ssl"): (0.48, 0.52), ("lucchi->vnc", "style_transfer"): (0.40, 0.44),
    ("lucchi->vnc", "source-only"): (0.30, 0.34),
    ("vnc->lucchi", "ssl"): (0.60, 0.62), ("vnc->lucchi", "style_transfer"): (0.70, 0.58),
    ("vnc->lucchi", "source-only"): (0.50, 0.50),
    ("vnc->vnc", "oracle"): (0.80, 0.84), ("lucchi->lucchi", "oracle"): (0.90, 0.90),
}
FAILED = ("vnc->lucchi", "style_transfer", 0)


def _row(pair: str, column: str, seed: int, value: float) -> dict:
    source, target = pair.split("->")
    role = column if column in ("source-only", "oracle") else "method"
    row = {"source": source, "target": target, "pair": pair, "method": column, "role": role,
           "seed": seed, "status": "finished", "target_iou": value - 0.01, "target_dice": value + 0.05,
           "target_iou_slice_mean": value, "source_val_iou": 0.9, "selection_criterion": "morph_paper",
           "selected_epoch": 3, "selected_step": 300, "wall_time_s": 600.0 + 60 * seed,
           "device": "cpu:x86_64:2threads", "profile": "cpu-quick",
           "run_dir": f"/runs/{pair}/{column}/{seed}"}
    if column == "ssl":
        row["regret/morph_paper"] = 0.01 * (seed + 1)
        row["regret/source_val_iou"] = 0.05
    return row


@pytest.fixture
def rows() -> list[dict]:
    out = [_row(pair, column, seed, value)
           for (pair, column), values in SCORES.items() for seed, value in enumerate(values)]
    for row in out:
        if (row["pair"], row["method"], row["seed"]) == FAILED:
            row.update(status="failed", target_iou=None, target_dice=None, target_iou_slice_mean=None,
                       source_val_iou=None, selected_epoch=None, selected_step=None, wall_time_s=None)
    return out


def _line(markdown: str, start: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(start))


def test_csv_round_trip_keeps_values_none_and_column_order(rows, tmp_path):
    path = reporting.write_results_csv(rows, tmp_path / "results.csv")
    assert not list(tmp_path.glob("results.csv*.partial"))
    header = path.read_text().splitlines()[0].split(",")
    assert header == [*reporting.RESULT_COLUMNS, "regret/morph_paper", "regret/source_val_iou"]
    back = reporting.read_results_csv(path)
    assert len(back) == len(rows)
    for original, read in zip(rows, back):
        assert {k: read[k] for k in original} == original
        assert read.get("regret/morph_paper") == original.get("regret/morph_paper")
    failed = next(r for r in back if r["status"] == "failed")
    assert failed["target_iou_slice_mean"] is None and failed["selected_step"] is None
    assert isinstance(back[0]["seed"], int) and isinstance(back[0]["wall_time_s"], float)


def test_results_csv_holds_each_runs_difference_to_source_only(rows, tmp_path):
    reporting.write_report(rows, tmp_path)
    read = reporting.read_results_csv(tmp_path / "results.csv")
    back = {(r["pair"], r["method"], r["seed"]): r for r in read}
    assert back[("lucchi->vnc", "ssl", 1)]["paired_diff_vs_source_only"] == pytest.approx(0.18)
    assert back[("vnc->lucchi", "style_transfer", 0)]["paired_diff_vs_source_only"] is None  # failed
    assert back[("lucchi->vnc", "source-only", 0)].get("paired_diff_vs_source_only") is None


def test_aggregate_population_std_over_finished_seeds(rows):
    stats = reporting.aggregate(rows)
    ssl = stats[("lucchi->vnc", "ssl")]
    assert ssl["mean"] == pytest.approx(0.50) and ssl["std"] == pytest.approx(0.02) and ssl["n"] == 2
    assert ssl["values"] == [0.48, 0.52]
    single = stats[("vnc->lucchi", "style_transfer")]  # seed 0 failed
    assert single["n"] == 1 and single["std"] == 0.0 and single["values"] == [0.58]
    assert stats[("vnc->vnc", "oracle")]["mean"] == pytest.approx(0.82)
    assert reporting.aggregate(rows, "target_iou")[("lucchi->vnc", "ssl")]["mean"] == pytest.approx(0.49)


def test_summary_results_table(rows):
    md = reporting.summary_markdown(rows, reporting.load_published(PUBLISHED))
    header = _line(md, "| pair |")
    assert header.index("ssl") < header.index("style_transfer") < header.index("source-only (ref.)") \
        < header.index("oracle (ref., target labels)") < header.index("Att. Y-Net (published)")
    lucchi_vnc = _line(md, "| lucchi->vnc |").split(" | ")
    # bold: beats source-only on both seeds by the same margin (interval excludes 0); the oracle
    # of target vnc comes from the vnc->vnc runs
    assert lucchi_vnc[1] == "**0.500 ± 0.020 (2)**"
    assert lucchi_vnc[2] == "**0.420 ± 0.020 (2)**"
    assert lucchi_vnc[4] == "0.820 ± 0.020 (2)"
    assert lucchi_vnc[5] == "0.402 ± 0.040"  # quoted from published.yaml
    assert lucchi_vnc[6] == "—"  # DA-ISC has no lucchi->vnc figure
    vnc_lucchi = _line(md, "| vnc->lucchi |").split(" | ")
    # +0.10 and +0.12 over two seeds: t-interval [-0.017, +0.237], not shown to beat source-only
    assert vnc_lucchi[1] == "0.610 ± 0.010 (2)"  # the failed seed's 0.70 does not count
    assert vnc_lucchi[2] == "0.580"
    assert vnc_lucchi[4] == "0.900 ± 0.000 (2)"
    assert vnc_lucchi[6].startswith("0.687")
    results = md.split("## Paired with source-only")[0]
    assert sum(line.count("**") for line in results.splitlines() if line.startswith("| ")) == 4
    paired = md.split("## Paired with source-only")[1]
    assert "+0.110 [-0.017, +0.237] (2)" in _line(paired, "| vnc->lucchi |")
    assert "(1 seed, no interval)" in _line(paired, "| vnc->lucchi |")  # style_transfer lost seed 0
    assert "**+0.180 [+0.180, +0.180] (2)**" in _line(paired, "| lucchi->vnc |")
    assert "| vnc->vnc |" not in md  # oracle runs are shown on the pairs with their target
    assert "never used by any method" in md and "Franco-Barranco" in md and "Lucchi++" in md
    assert "`target_iou_slice_mean`" in md
    assert "1 failed" in md and "15 finished" in md and "/runs/vnc->lucchi/style_transfer/0" in md


def test_summary_published_only_on_the_same_metric(rows):
    md = reporting.summary_markdown(rows, reporting.load_published(PUBLISHED), metric="target_iou")
    assert "Att. Y-Net" not in _line(md, "| pair |") and "not shown" in md
    assert "0.490 ± 0.020 (2)" in _line(md, "| lucchi->vnc |")


def test_summary_of_pairs_nobody_published(rows):
    synthetic = [dict(r, pair=r["pair"].replace("lucchi", "synth-a").replace("vnc", "synth-b"))
                 for r in rows]
    md = reporting.summary_markdown(synthetic, reporting.load_published(PUBLISHED))
    assert "No published figure exists for these pairs." in md and "not shown" not in md


def test_regret_table_present_and_omitted(rows):
    md = reporting.summary_markdown(rows, None)
    section = md.split("## Label-free selection regret")[1].split("##")[0]
    assert _line(section, "| criterion |") == "| criterion | ssl |"
    assert _line(section, "| morph_paper |") == "| morph_paper | 0.015 (4) |"
    assert _line(section, "| source_val_iou |") == "| source_val_iou | 0.050 (4) |"
    plain = [{k: v for k, v in r.items() if not k.startswith("regret/")} for r in rows]
    section = reporting.summary_markdown(plain, None).split("## Label-free selection regret")[1]
    assert "No run has a selection regret" in section.split("##")[0]
    assert "| criterion |" not in section


def test_wall_time_table_and_total(rows):
    section = reporting.summary_markdown(rows, None).split("## Wall time")[1].split("## Runs")[0]
    assert _line(section, "| lucchi->vnc |") == "| lucchi->vnc | 10.5 | 10.5 | 10.5 | 10.5 |"
    assert _line(section, "| vnc->lucchi |").split(" | ")[2] == "11.0"  # only seed 1 finished
    # 15 timed runs: 7 x 600 s + 8 x 660 s = 9480 s = 158 min
    assert "Total wall time: 2 h 38 min over 15 runs on cpu:x86_64:2threads." in section


def test_figures_are_readable_pngs(rows, tmp_path):
    heat = iio.imread(reporting.heatmap(rows, tmp_path / "heatmap.png"))
    assert heat.ndim == 3 and heat.shape[2] in (3, 4) and heat.shape[1] > heat.shape[0] > 100
    bars = reporting.bar_charts(rows, tmp_path, reporting.load_published(PUBLISHED))
    assert [p.name for p in bars] == ["bars_lucchi-to-vnc.png", "bars_vnc-to-lucchi.png"]
    assert all(iio.imread(p).shape[0] > 100 for p in bars)
    # a cell with no finished run is grey
    holes = [r for r in rows if not (r["pair"] == "lucchi->vnc" and r["method"] == "style_transfer")]
    grey = iio.imread(reporting.heatmap(holes, tmp_path / "holes.png"))[..., :3]
    def grey_pixels(png: np.ndarray) -> int:
        return int((np.abs(png[..., :3].astype(int) - 211).max(axis=-1) <= 1).sum())

    assert grey_pixels(grey) - grey_pixels(heat) > 5000  # one cell is about 160 x 55 pixels


def test_overlay_montage_draws_prediction_and_truth(tmp_path):
    image = np.tile(np.linspace(0, 200, 64, dtype=np.float32), (48, 1))
    labels = np.zeros((48, 64), np.uint8)
    labels[10:30, 10:30] = 1
    labels[40:, :] = 255
    prob = np.zeros((48, 64), np.float32)
    prob[12:32, 12:40] = 0.9
    predictions = {"ssl": prob, "source-only": (prob * 255).astype(np.uint8)}
    png = iio.imread(reporting.overlay_montage(image, labels, predictions, tmp_path / "m.png", "lucchi->vnc"))
    rgb = png[..., :3].astype(int)
    assert png.shape[1] > 2 * png.shape[0]  # three panels side by side
    magenta = (rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] > 150)
    green = (rgb[..., 1] > 180) & (rgb[..., 0] < 100) & (rgb[..., 2] < 100)
    assert magenta.sum() > 200 and green.sum() > 50
    third = png.shape[1] // 3
    assert magenta[:, :third].sum() == 0 and magenta[:, third:2 * third].sum() > 100 \
        and magenta[:, 2 * third:].sum() > 100


def test_write_report_writes_everything(rows, tmp_path):
    written = reporting.write_report(rows, tmp_path / "out", PUBLISHED)
    assert set(written) == {"results.csv", "summary.md", "heatmap.png", "bars_lucchi-to-vnc.png",
                            "bars_vnc-to-lucchi.png"}
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in written.values())
    assert "0.402 ± 0.040" in written["summary.md"].read_text()
    assert not list((tmp_path / "out").glob("*.partial"))


def test_load_published_reads_the_shipped_file_and_rejects_bad_ones(tmp_path):
    published = reporting.load_published(PUBLISHED)
    assert published["metric"] == "target_iou_slice_mean"
    assert published["sources"][0]["results"]["lucchi->vnc"] == {"mean": 0.402, "std": 0.040}
    assert published["sources"][1]["results"]["vnc->lucchi"]["std"] is None
    bad = {
        "must be a mapping": "- 1\n- 2\n",
        "lacks the key": "metric: x\n",
        "unknown key": "metric: x\nsources: []\nsource: []\n",
        "not a pair": "metric: x\nsources:\n- {name: a, citation: b, results: {lucchi: {mean: 0.1}}}\n",
        "must be a non-negative number": "metric: x\nsources:\n- {name: a, citation: b, "
                                         "results: {a->b: {mean: high}}}\n",
        "not valid YAML": "metric: [x\n",
        "does not exist": None,
    }
    for message, text in bad.items():
        path = tmp_path / "missing.yaml" if text is None else tmp_path / "bad.yaml"
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            reporting.load_published(path)


def test_charts_show_the_95_percent_interval_of_the_mean_over_seeds():
    from domadapt.reporting import _half_width, _stats

    assert _half_width(_stats([0.1, 0.2, 0.3])) == pytest.approx(4.3027 * 0.1 / 3 ** 0.5, rel=1e-3)
    assert _half_width(_stats([0.4])) == 0.0  # one seed: no interval to draw
    assert _half_width({"mean": 0.4, "std": 0.04}) == 0.04  # a published figure's quoted std


def test_selection_line_keeps_in_domain_criteria_apart_from_label_free_ones(rows):
    for row in rows:
        if row["role"] == "oracle":
            row["selection_criterion"] = "source_val_iou"
    line = _line(reporting.summary_markdown(rows, None), "Checkpoints were chosen")
    assert line.startswith("Checkpoints were chosen label-free by: `morph_paper`. In-domain runs")
    assert "`source_val_iou`" in line.split("In-domain")[1]
    assert "source_val_iou" not in line.split("In-domain")[0]


def test_heatmap_column_labels_fit_their_column():
    """Every method of the shipped grids, and the reference rows, label a 1.3-inch heatmap column
    in lines short enough not to run into the next column's label at font size 8."""
    import yaml

    from domadapt.reporting.figures import _tick_label

    configs = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
    grids = [yaml.safe_load(f.read_text()) or {} for f in configs.glob("*.yaml")]
    methods = {method for grid in grids for method in grid.get("methods", [])}
    assert {"style_transfer-cyclegan", "self_training-histogram"} <= methods
    for column in sorted(methods) + ["source-only", "oracle"]:
        label = _tick_label(column)
        assert label.replace("\n", "").removesuffix("(ref.)") == column
        assert max(len(line) for line in label.splitlines()) <= 16, label
