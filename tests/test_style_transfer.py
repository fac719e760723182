"""Style-transfer harmonization: classical harmonizers, learned translators, the strategy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from domadapt.data import harmonize
from domadapt.errors import ConfigError, RunFolderError
from domadapt.inference import blend_tiles
from domadapt.pipeline import run, run_dir_for
from domadapt.predict import model_from_checkpoint, predict_file
from domadapt.training.translation_monitor import wasserstein_1d
from tests.conftest import shift_config, write_appearance_shift


def _smooth_volume(seed: int, shape=(3, 96, 96)) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return np.clip(gaussian_filter(rng.random(shape), (0, 3, 3)) * 4 - 1.5, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------- classical harmonizers


def test_histogram_matching_gives_the_reference_histogram_and_ignores_tiling():
    reference = _smooth_volume(0)
    moving = _smooth_volume(1) ** 3 * 0.6 + 0.2  # a monotone appearance change
    lut = harmonize.histogram_matching(moving, reference)
    with torch.no_grad():
        matched = lut(torch.from_numpy(moving)).numpy()
    assert wasserstein_1d(matched, reference) < 0.1 * wasserstein_1d(moving, reference)
    assert np.all(np.diff(lut.fp.numpy()) >= 0)  # monotone: structures keep their order
    # pointwise: harmonizing in blended tiles equals harmonizing the whole slice (no seams)
    tiled = blend_tiles(lambda b: lut(torch.from_numpy(b)).numpy(), moving[0], tile=32, overlap=8)
    np.testing.assert_allclose(tiled, matched[0], atol=1e-5)


def test_mean_std_matching_and_equalization():
    reference, moving = _smooth_volume(0), _smooth_volume(1) * 0.3 + 0.5
    with torch.no_grad():
        out = harmonize.mean_std_matching(moving, reference)(torch.from_numpy(moving)).numpy()
        flat = harmonize.equalization(moving)(torch.from_numpy(moving)).numpy()
    assert out.mean() == pytest.approx(reference.mean(), abs=0.01)
    assert out.std() == pytest.approx(reference.std(), rel=0.05)
    assert np.histogram(flat, bins=4, range=(0, 1))[0].std() < np.histogram(moving, 4, (0, 1))[0].std()


def test_fda_swaps_low_frequency_amplitudes_and_keeps_phase_and_detail():
    reference, moving = _smooth_volume(0, (4, 64, 64)), _smooth_volume(1, (1, 64, 64)) * 0.3 + 0.6
    fda = harmonize.fda(reference, tile=64, beta=0.05)
    with torch.no_grad():
        out = fda(torch.from_numpy(moving)[:, None])[0, 0].numpy()
    f_in, f_out = np.fft.fft2(moving[0]), np.fft.fft2(out)
    low = fda.low.numpy()
    np.testing.assert_allclose(np.abs(f_out)[low], fda.amplitude.numpy()[low], rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(np.abs(f_out)[~low], np.abs(f_in)[~low], rtol=1e-3, atol=1e-2)
    keep = np.abs(f_in) > 1e-3
    phase_diff = np.angle(f_out[keep] * np.conj(f_in[keep]))
    assert np.abs(phase_diff).max() < 1e-2
    assert out.mean() == pytest.approx(reference.mean(), abs=0.02)  # the DC term comes along
    with pytest.raises(ConfigError, match="inference.tile=64"):
        fda(torch.zeros(1, 1, 32, 32))


# ---------------------------------------------------------------------- the strategy on an appearance shift


@pytest.fixture(scope="module")
def appearance_shift(tmp_path_factory):
    """Two volumes of one synthetic domain; the target differs only in appearance (gamma 3)."""
    return write_appearance_shift(tmp_path_factory.mktemp("shift"))


def _shift_config(folder, method="baseline", *overrides, out="runs"):
    return shift_config(folder, method, *overrides, out=out)


@pytest.fixture(scope="module")
def shift_baseline(appearance_shift):
    cfg = _shift_config(appearance_shift)
    return run(cfg, progress=False), run_dir_for(cfg)


@pytest.mark.parametrize("kind", ["histogram", "fda"])
def test_harmonization_raises_target_iou_on_an_appearance_shift(appearance_shift, shift_baseline, kind):
    """Same segmenter (reused from the baseline run), target harmonized first: a clear gain."""
    baseline, baseline_dir = shift_baseline
    cfg = _shift_config(appearance_shift, "style_transfer", f"style.kind={kind}",
                        f"style.segmenter_from={baseline_dir}", out=f"runs-{kind}")
    metrics = run(cfg, progress=False)
    print(f"{kind}: target IoU {metrics['target_iou']:.3f} vs baseline {baseline['target_iou']:.3f}")
    assert metrics["target_iou"] > baseline["target_iou"] + 0.2
    folder = run_dir_for(cfg)
    assert sorted(p.name for p in (folder / "translated").glob("*.png"))  # samples written
    # predict reloads the harmonizer from the checkpoint and reproduces the run's prediction
    net, payload = model_from_checkpoint(metrics["selected_checkpoint"])
    assert isinstance(net, nn.Sequential) and payload["harmonizer"]["kind"] == kind
    out = predict_file(metrics["selected_checkpoint"], appearance_shift / "tgt.tif",
                       folder / "again.tif", voxel_size=[5, 5, 5], device="cpu", progress=False)
    np.testing.assert_array_equal(tifffile.imread(out),
                                  tifffile.imread(folder / "predictions" / "target_test_prob.tif"))


@pytest.mark.parametrize("kind,direction", [("histogram", "source_to_target"),
                                            ("equalize", "target_to_source")])
def test_harmonizing_the_source_trains_a_segmenter_on_it(appearance_shift, shift_baseline, kind,
                                                         direction):
    baseline, _ = shift_baseline
    cfg = _shift_config(appearance_shift, "style_transfer", f"style.kind={kind}",
                        f"style.direction={direction}", out=f"runs-{kind}-own")
    metrics = run(cfg, progress=False)
    print(f"{kind}: target IoU {metrics['target_iou']:.3f} vs baseline {baseline['target_iou']:.3f}")
    assert metrics["target_iou"] > baseline["target_iou"] + 0.2
    net, payload = model_from_checkpoint(metrics["selected_checkpoint"])
    assert ("harmonizer" in payload) == (kind == "equalize")  # equalize: the target too
    assert list((run_dir_for(cfg) / "translated").glob("source_*.png"))


@pytest.mark.parametrize("kind", ["cut", "cyclegan"])
def test_learned_translator_brings_target_intensities_toward_the_source(appearance_shift,
                                                                       shift_baseline, kind):
    _, baseline_dir = shift_baseline
    cfg = _shift_config(appearance_shift, "style_transfer", f"style.kind={kind}",
                        f"style.segmenter_from={baseline_dir}", "style.stages.translator.steps=40",
                        "style.stages.translator.eval_every=20", "style.translator_patch=64",
                        "style.stages.translator.lr=0.002", "style.generator_width=8",
                        "style.generator_blocks=2", "style.discriminator_width=8",
                        out=f"runs-{kind}")
    metrics = run(cfg, progress=False)
    history = json.loads((run_dir_for(cfg) / "checkpoints/translator/history.json").read_text())
    best = min(r["translation_w1"] for r in history)
    assert best < 0.5 * history[0]["translation_w1_untranslated"]
    assert metrics["stages"]["translator"]["last_step"] == 40
    assert (run_dir_for(cfg) / "tb" / "translator").is_dir()


def test_segmenter_from_is_checked(appearance_shift, shift_baseline, tiny_config, tmp_path):
    _, baseline_dir = shift_baseline
    with pytest.raises(ConfigError, match="source_to_target"):
        _shift_config(appearance_shift, "style_transfer", f"style.segmenter_from={baseline_dir}",
                      "style.direction=source_to_target")
    with pytest.raises(ConfigError, match="equalize"):
        _shift_config(appearance_shift, "style_transfer", f"style.segmenter_from={baseline_dir}",
                      "style.kind=equalize")
    with pytest.raises(RunFolderError, match="no saved segmentation"):
        run(_shift_config(appearance_shift, "style_transfer", f"style.segmenter_from={tmp_path}",
                          out="bad"), progress=False)
    with pytest.raises(ConfigError, match="trained on source"):  # another pair's model
        run(tiny_config(f"style.segmenter_from={baseline_dir}", method="style_transfer"),
            progress=False)


def test_reused_segmenter_reads_source_val_scores_instead_of_evaluating_again(appearance_shift,
                                                                             shift_baseline,
                                                                             monkeypatch):
    """The recorded scores are the baseline's, and equal what a new evaluation gives."""
    from domadapt.training.monitors import SourceValMonitor

    _, baseline_dir = shift_baseline
    calls = []
    evaluate = SourceValMonitor.evaluate
    monkeypatch.setattr(SourceValMonitor, "evaluate", lambda self, ctx: calls.append(ctx.step)
                        or evaluate(self, ctx))

    def source_val(*overrides, out):
        calls.clear()
        cfg = _shift_config(appearance_shift, "style_transfer", f"style.segmenter_from={baseline_dir}",
                            *overrides, out=out)
        run(cfg, progress=False)
        history = json.loads((run_dir_for(cfg) / "checkpoints/segmentation/history.json").read_text())
        return {r["step"]: (r["source_val_iou"], r["source_val_loss"]) for r in history}

    baseline = json.loads((baseline_dir / "checkpoints/segmentation/history.json").read_text())
    replayed = source_val(out="runs-replayed")
    assert replayed == {r["step"]: (r["source_val_iou"], r["source_val_loss"]) for r in baseline}
    assert calls == []
    evaluated = source_val("train.device=cpu", out="runs-evaluated")  # a config change: evaluated anew
    assert sorted(calls) == sorted(evaluated) == sorted(replayed)
    for step, values in evaluated.items():
        np.testing.assert_allclose(values, replayed[step], rtol=1e-5, atol=1e-6)


def test_model_at_step_is_the_reused_segmenter_behind_this_runs_harmonizer(appearance_shift,
                                                                           shift_baseline):
    """What re-choosing a finished run under another criterion predicts with (tools/rescore_grid.py)."""
    import torch

    from domadapt.predict import model_from_checkpoint
    from domadapt.selection import load_history, model_at_step

    _, baseline_dir = shift_baseline
    cfg = _shift_config(appearance_shift, "style_transfer", f"style.segmenter_from={baseline_dir}",
                        out="runs-at-step")
    run(cfg, progress=False)
    history = load_history(run_dir_for(cfg))
    step = history.records[0]["step"]
    net = model_at_step(history, step)
    segmenter = model_from_checkpoint(baseline_dir / f"checkpoints/segmentation/step-{step:07d}.pt")[0]
    assert isinstance(net, torch.nn.Sequential) and len(net) == 2  # harmonizer, then segmenter
    mine, theirs = net[-1].state_dict(), segmenter.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    plain = model_at_step(load_history(baseline_dir), step)
    assert all(torch.equal(plain.state_dict()[k], theirs[k]) for k in theirs)
