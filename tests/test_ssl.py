"""The self-supervised strategy: pretext corruptions and losses, hand-off, fine-tune options, resume."""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest
import torch

from domadapt.data import synthetic
from domadapt.data.patches import PatchSampler
from domadapt.data.prepare import prepare_data
from domadapt.errors import CheckpointError, ConfigError, DataError
from domadapt.pipeline import run, run_dir_for
from domadapt.predict import model_from_checkpoint
from domadapt.strategies import get_strategy
from domadapt.strategies.base import Domains, StrategyContext, new_segmentation_net
from domadapt.strategies.ssl import Ssl, SslConfig, plan_ssl, pretext_input, pretext_stage, structured_batch
from domadapt.training.checkpoint import load_checkpoint
from domadapt.training.monitors import EvalContext
from domadapt.training.reconstruction import blind_spot, crappify, regression_loss
from domadapt.training.trainer import Trainer

CPU = torch.device("cpu")
HEAD = "decoder.head."
# Cheap selection for the runs that do not test selection itself.
SOURCE_VAL = ("selection.monitors=[source_val]", "selection.criterion=source_val_iou")


def _domains(cfg) -> Domains:
    data = prepare_data(cfg)
    return Domains(data.source_train, data.source_val, data.target_train, data.target_test)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class RecordingTrainer(Trainer):
    """A Trainer that keeps each stage's starting weights and optimiser groups."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started: dict[str, dict] = {}

    def fit(self, stage):
        net = stage.modules["net"]
        self.started[stage.name] = {
            "net": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "groups": [dict(g, params=len(g["params"])) for g in stage.optimizers["main"].param_groups],
        }
        return super().fit(stage)


# ---------------------------------------------------------------------- corruptions and losses


def test_crappify_keeps_the_shape_and_degrades_reproducibly():
    x = torch.rand(2, 1, 32, 32, generator=_gen(1))
    a, b = crappify(x, 0.3, 4, _gen()), crappify(x, 0.3, 4, _gen())
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x, atol=0.05)
    assert torch.allclose(crappify(torch.full_like(x, 0.4), 0.0, 4, _gen()), torch.full_like(x, 0.4))
    assert torch.equal(crappify(x, 0.0, 1, _gen()), x)
    fine_detail = x - torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # down/up-sampling removes it
    assert (a - torch.nn.functional.avg_pool2d(a, 3, 1, 1)).std() < 0.5 * fine_detail.std()


def test_noise2void_replaces_masked_pixels_by_a_neighbour_and_scores_only_them():
    x = torch.arange(2 * 24 * 24, dtype=torch.float32).reshape(2, 1, 24, 24)  # all values distinct
    fed, mask = blind_spot(x, 0.1, _gen())
    chosen = mask.bool()
    assert 0 < int(chosen.sum()) < x.numel() // 4
    assert torch.equal(fed[~chosen], x[~chosen])  # unmasked pixels untouched
    assert not torch.any(fed[chosen] == x[chosen])  # never the pixel itself
    for b, _, y, xx in chosen.nonzero()[:20].tolist():  # ... but a pixel of its 5x5 neighbourhood
        window = x[b, 0, max(0, y - 2):y + 3, max(0, xx - 2):xx + 3]
        assert fed[b, 0, y, xx] in window
    wrong_elsewhere = torch.where(chosen, x, x + 100)
    assert float(regression_loss(wrong_elsewhere, x, mask)) == 0.0
    wrong_masked = torch.where(chosen, x + 2, x)
    assert float(regression_loss(wrong_masked, x, mask)) == pytest.approx(4.0)
    assert float(regression_loss(wrong_masked, x, mask, "mae")) == pytest.approx(2.0)


def test_masked_pretext_hides_squares_and_scores_only_them(tiny_config):
    ssl = tiny_config("ssl.pretext=masked", "ssl.mask_patch=4", "ssl.mask_ratio=0.5", method="ssl").options
    x = torch.rand(2, 1, 16, 16, generator=_gen(2))
    fed, weight = pretext_input(x, ssl, _gen())
    hidden = weight.bool()
    assert 0 < int(hidden.sum()) < x.numel() and torch.equal(fed[~hidden], x[~hidden])
    blocks = weight.reshape(2, 1, 4, 4, 4, 4)  # constant over each 4x4 square
    assert torch.equal(blocks.amin(dim=(3, 5)), blocks.amax(dim=(3, 5)))
    assert pretext_input(x, SslConfig(), _gen())[1] is None  # crappify scores every pixel


def test_near_empty_patches_are_skipped():
    rng = np.random.default_rng(0)
    volume = np.full((4, 32, 32), 0.5, np.float32)
    volume[:, :, 16:] = rng.random((4, 32, 16))  # left half empty, right half textured
    sampler = PatchSampler([volume], None, 16, 8, seed=0)
    batch = structured_batch(sampler, _gen(), min_std=0.1)["image"]
    assert batch.shape == (8, 1, 16, 16) and bool((batch.flatten(1).std(1) >= 0.1).all())
    raw = sampler.sample(_gen())["image"]
    assert bool((raw.flatten(1).std(1) < 0.1).any())  # the filter had something to skip
    empty = PatchSampler([np.full((2, 32, 32), 0.5, np.float32)], None, 16, 4, seed=0)
    with pytest.raises(DataError, match="ssl.min_patch_std"):
        structured_batch(empty, _gen(), min_std=0.1)


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("overrides", "key"), [
    (["ssl.pretext=blur"], "ssl.pretext"),
    (["ssl.finetune=partial"], "ssl.finetune"),
    (["ssl.stages.pretext.share=0"], "ssl.stages[0].share"),
    (["ssl.noise_std=-1"], "ssl.noise_std"),
    (["ssl.downsample=two"], "ssl.downsample"),
    (["ssl.crop=3"], "ssl.crop"),
    (["ssl.stages.pretext.steps=0"], "ssl.stages[0].steps"),
    (["ssl.stages.pretext.frozen=[encoder]"], "ssl.stages[0].frozen"),
    (["ssl.pretext_steps=5"], "ssl.pretext_steps' is now 'ssl.stages.pretext.steps"),
    (["ssl.finetune=freeze_encoder", "ssl.freeze_steps=20", "train.steps=20"], "ssl.freeze_steps"),
])
def test_bad_ssl_config_names_the_key(tiny_config, overrides, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        plan_ssl(tiny_config(*overrides, method="ssl"))


def test_the_method_yaml_defaults_to_the_papers_pretext(tiny_config):
    cfg = tiny_config(method="ssl")
    assert isinstance(get_strategy("ssl"), Ssl)
    assert (cfg.options.pretext, cfg.options.noise_std, cfg.options.downsample) == ("crappify", 0.3, 4)
    assert plan_ssl(cfg)[0] == 10 and [(p.name, p.steps) for p in plan_ssl(cfg)[1]] == [("finetune", 20)]


# ---------------------------------------------------------------------- pretraining


@pytest.mark.parametrize("pretext", ["crappify", "noise2void"])
def test_pretraining_restores_held_out_patches_of_both_domains_better_than_random(
        tiny_config, tmp_path, pretext):
    cfg = tiny_config(f"ssl.pretext={pretext}", "train.steps=60", "train.eval_every=60", "train.lr=0.01",
                      "data.patch_size=32", method="ssl")
    stage = pretext_stage(cfg, _domains(cfg), steps=40)
    monitor = stage.monitors[0]

    def held_out() -> dict[str, float]:
        with torch.no_grad():
            return monitor.evaluate(EvalContext(stage.modules, None, CPU, False, 0)).metrics

    random = held_out()
    Trainer(tmp_path, CPU, cfg.seed, progress=False).fit(stage)
    trained = held_out()
    for domain in ("source", "target"):
        assert trained[f"pretext_loss_{domain}"] < 0.5 * random[f"pretext_loss_{domain}"]


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One default ssl run (crappify, full fine-tune), selected by a non-default criterion."""
    from domadapt.config import build_config

    out = tmp_path_factory.mktemp("runs")
    cfg = build_config(profile="smoke", method="ssl", flags={"out": str(out)},
                       overrides=["train.threads=1", "selection.criterion=morph_paper"])
    recorder: dict = {}
    original = Trainer.fit

    def recording_fit(self, stage):
        recorder[stage.name] = {k: v.detach().clone() for k, v in stage.modules["net"].state_dict().items()}
        return original(self, stage)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "fit", recording_fit)
        metrics = run(cfg, progress=False)
    return cfg, metrics, recorder


def test_run_writes_both_stages_into_one_folder(e2e):
    cfg, metrics, _ = e2e
    folder = run_dir_for(cfg)
    assert list(metrics["stages"]) == ["pretext", "finetune"] and metrics["method"] == "ssl"
    assert metrics["selection_criterion"] == "morph_paper"
    assert metrics["selected_checkpoint"].endswith("finetune/best-morph_paper.pt")
    assert (folder / "checkpoints/pretext/last.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for stage in ("pretext", "finetune"):
        events = EventAccumulator(str(folder / "tb" / stage))
        events.Reload()
        tags[stage] = set(events.Tags()["scalars"]) | set(events.Tags()["images"])
    assert {"train/pretext_loss", "eval/pretext_loss_source", "eval/pretext_loss_target",
            "images/pretext_source", "images/pretext_target"} <= tags["pretext"]
    assert {"train/seg_loss", "eval/source_val_iou"} <= tags["finetune"]
    net, _ = model_from_checkpoint(metrics["selected_checkpoint"])  # predict works unchanged
    assert net.decoder.head.out_channels == 1
    with pytest.raises(CheckpointError):  # a restoration network is not a segmenter
        model_from_checkpoint(folder / "checkpoints/pretext/last.pt")


def test_finetune_starts_from_the_pretext_weights_with_a_fresh_head(e2e):
    cfg, _, recorder = e2e
    start = recorder["finetune"]
    pretext = load_checkpoint(run_dir_for(cfg) / "checkpoints/pretext/last.pt")["modules"]["net"]
    fresh = new_segmentation_net(cfg).state_dict()
    body = [k for k in start if not k.startswith(HEAD)]
    assert all(torch.equal(start[k], pretext[k]) for k in body)
    assert any(not torch.equal(start[k], fresh[k]) for k in body if k.startswith("encoder."))
    assert any(not torch.equal(start[k], fresh[k]) for k in body if k.startswith("decoder."))
    assert all(torch.equal(start[k], fresh[k]) for k in start if k.startswith(HEAD))  # seeded re-init


def test_resume_across_the_stage_boundary(e2e):
    cfg, metrics, _ = e2e
    folder = run_dir_for(cfg)
    stamp = (folder / "checkpoints/pretext/last.pt").stat().st_mtime_ns
    shutil.rmtree(folder / "checkpoints/finetune")  # killed after the pretext stage
    shutil.rmtree(folder / "tb/finetune")
    again = run(cfg, resume=True, progress=False)
    for key in ("target_iou", "selected_step", "source_val_iou"):
        assert again[key] == metrics[key]
    assert (folder / "checkpoints/pretext/last.pt").stat().st_mtime_ns == stamp  # not retrained


# ---------------------------------------------------------------------- fine-tuning options


def _fit(cfg, tmp_path) -> RecordingTrainer:
    trainer = RecordingTrainer(tmp_path, CPU, cfg.seed, progress=False)
    Ssl().fit(_domains(cfg), StrategyContext(cfg, trainer, CPU, tmp_path))
    return trainer


def _part(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_encoder_trains_the_decoder_first_then_everything(tiny_config, tmp_path):
    cfg = tiny_config(*SOURCE_VAL, "ssl.finetune=freeze_encoder", "train.steps=8", "train.eval_every=4",
                      method="ssl")
    trainer = _fit(cfg, tmp_path)
    assert list(trainer.started) == ["pretext", "finetune_frozen", "finetune"]
    last = {s: load_checkpoint(tmp_path / "checkpoints" / s / "last.pt")["modules"]["net"]
            for s in ("pretext", "finetune_frozen", "finetune")}
    encoder = [_part(last[s], "encoder.") for s in last]
    assert _same(encoder[0], encoder[1])  # frozen, batch-norm statistics included
    assert not _same(encoder[1], encoder[2])  # unfrozen afterwards
    decoder = [_part(last[s], "decoder.blocks") for s in ("pretext", "finetune_frozen")]
    assert not _same(*decoder)  # the decoder trains while the encoder is frozen
    assert _same(trainer.started["finetune"]["net"], last["finetune_frozen"])  # head included


def test_lower_encoder_lr_gives_the_encoder_its_own_rate(tiny_config, tmp_path):
    cfg = tiny_config(*SOURCE_VAL, "ssl.finetune=lower_encoder_lr", "ssl.encoder_lr_factor=0.25",
                      "train.steps=8", "train.eval_every=4", method="ssl")
    trainer = _fit(cfg, tmp_path)
    decoder, encoder = trainer.started["finetune"]["groups"]
    assert encoder["initial_lr"] == pytest.approx(0.25 * decoder["initial_lr"])
    assert decoder["initial_lr"] == pytest.approx(cfg.train.lr)
    pretext, final = (load_checkpoint(tmp_path / "checkpoints" / s / "last.pt")["modules"]["net"]
                      for s in ("pretext", "finetune"))
    assert not _same(_part(pretext, "encoder."), _part(final, "encoder."))


# ---------------------------------------------------------------------- against the baseline


def _noisy_textured_target(monkeypatch) -> str:
    """The source's geometry seen with a finer, stronger texture and eight times the noise."""
    source = synthetic.get_domain("synth-hippocampus")
    look = dataclasses.replace(source.appearance, texture=0.5, texture_scale_nm=6.0, noise_level=0.4)
    monkeypatch.setitem(synthetic.SYNTHETIC_DOMAINS, "synth-noisy",
                        dataclasses.replace(source, name="synth-noisy", appearance=look))
    return "synth-noisy"


@pytest.mark.slow
def test_ssl_beats_the_baseline_on_a_texture_and_noise_shift(tiny_config, monkeypatch, record_property):
    """Same seed, same supervised budget (300 steps); ssl adds 150 crappify pretext steps.

    Measured margins (target IoU, ssl - baseline) on this pair with seeds 0, 1, 2: +0.108,
    +0.195, +0.133. At 100 steps, or on a milder shift the baseline handles, the sign
    varies with the seed (from -0.22 to +0.20): there the comparison is noise.
    """
    target = _noisy_textured_target(monkeypatch)
    # Margins measured with batch norm throughout: per-image normalisation in the shallow
    # layers (model.norm=ibn, the default since) absorbs much of a shift like this one.
    common = ("data.synthetic_shape=[8,256,256]", "data.patch_size=32", "data.batch_size=8",
              "train.steps=300", "train.eval_every=50", "inference.tile=64", "model.norm=batch",
              *SOURCE_VAL)
    metrics = {method: run(tiny_config(*common, method=method, target=target), progress=False)
               for method in ("baseline", "ssl")}
    base, ssl = metrics["baseline"], metrics["ssl"]
    assert base["target_iou"] < base["source_val_iou"] - 0.3  # the shift really hurts the baseline
    margin = ssl["target_iou"] - base["target_iou"]
    record_property("ssl_minus_baseline_target_iou", margin)
    print(f"target IoU: baseline {base['target_iou']:.4f}, ssl {ssl['target_iou']:.4f}, "
          f"margin {margin:+.4f}")
    assert margin >= 0.0
