"""``domadapt export``: a chosen model as a bioimage.io model package.

deepImageJ, ilastik, napari and the bioimage.io tools run models in this format
without domadapt. The package holds TorchScript weights (harmonizer included when
the model has one), the package's own pre-processing as bioimage.io operations (1st
and 99th percentile of each slice to 0 and 1, clipped to [-0.5, 1.5]; a sigmoid
after), the pixel size the model expects on its y/x axes, a test input and output,
a cover, and the run's label-free choice in its ``config``. Inputs must be at that
pixel size: unlike ``domadapt predict``, bioimage.io consumers do not resample.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domadapt import __version__
from domadapt.errors import DataError

_FRANCO = ("Franco-Barranco D. et al. Deep learning based domain adaptation for mitochondria "
           "segmentation on EM volumes. Computer Methods and Programs in Biomedicine 222 (2022) 106949.")


def export_bioimageio(ref: str | Path, out: str | Path, *, sample: str | Path | None = None,
                      sample_voxel_size: tuple[float, float, float] | None = None,
                      license_id: str = "CC-BY-4.0", authors: list[str] | None = None) -> Path:
    """Write the model a run folder chose (or a checkpoint) as a bioimage.io ``.zip``.

    The test input is the middle slice of ``sample`` (default: the run's target test
    volume) resampled to the model's pixel size; its expected output is computed here
    through the same pre-processing the package declares.
    """
    from bioimageio.spec import save_bioimageio_package

    from domadapt.api import load_model
    from domadapt.training.checkpoint import load_checkpoint

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise DataError(f"Export writes a bioimage.io .zip package; {out} does not end in .zip.")
    model = load_model(ref)
    payload = load_checkpoint(model.source)
    step = 2 ** int(payload["model_spec"].get("depth", 4))
    side = max(step, int(model.settings.get("tile", 256)) // step * step)
    image = _test_image(payload, model.pixel_size_nm, side, sample, sample_voxel_size)
    net = model.net.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        record = _run_record(ref)
        files = _write_files(folder, net, image, model, payload, record)
        descr = _description(files, model.pixel_size_nm, step, license_id, authors, payload, record)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial.zip")
        try:  # a half-written package never appears under the output's name
            save_bioimageio_package(descr, output_path=partial)
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
    return out


def normalise_like_bioimageio(image: np.ndarray) -> np.ndarray:
    """The declared pre-processing, in numpy: per-slice 1/99 % percentiles to 0/1, clipped."""
    low, high = (float(v) for v in np.percentile(image, [1, 99]))
    return np.clip((image.astype(np.float32) - low) / (high - low + 1e-6), -0.5, 1.5).astype(np.float32)


def _test_image(payload: dict, pixel_nm: float, side: int, sample, sample_voxel) -> np.ndarray:
    """A (side, side) float32 slice at the model's pixel size: one inference tile, so the
    test output is also what ``domadapt predict`` gives for it (reflect-padded when small)."""
    from domadapt.data.io import lazy_image, stored_voxel_size
    from domadapt.data.transforms import resample_image, scale_factor

    if sample is not None:
        volume = lazy_image(sample)
        voxel = sample_voxel or stored_voxel_size(sample) or (pixel_nm,) * 3
    else:
        from domadapt.config import config_from_plain
        from domadapt.data.prepare import load_target

        target = load_target(config_from_plain(payload["config"], stored=True), "test")
        volume, voxel = target.image, target.voxel_size_nm
    slice_yx = np.asarray(volume[volume.shape[0] // 2] if len(volume.shape) == 3 else volume)
    zoomed = resample_image(slice_yx.astype(np.float32)[None], scale_factor(voxel, pixel_nm))[0]
    pad = [(0, max(0, side - n)) for n in zoomed.shape]
    zoomed = np.pad(zoomed, pad, mode="reflect" if min(zoomed.shape) > 1 else "edge")
    y0, x0 = ((n - side) // 2 for n in zoomed.shape)
    return np.round(zoomed[y0:y0 + side, x0:x0 + side]).astype(np.float32)


def _write_files(folder: Path, net: torch.nn.Module, image: np.ndarray, model: Any, payload: dict,
                 record: dict) -> dict[str, Path]:
    """Weights, test tensors, cover and documentation in ``folder``."""
    x = torch.from_numpy(normalise_like_bioimageio(image))[None, None]
    traced = torch.jit.trace(net, x)  # logits: the sigmoid is declared post-processing
    with torch.no_grad():
        prob = torch.sigmoid(traced(x)).numpy().astype(np.float32)
    files = {"weights": folder / "weights_torchscript.pt", "input": folder / "test_input.npy",
             "output": folder / "test_output.npy", "cover": folder / "cover.png",
             "doc": folder / "README.md"}
    traced.save(str(files["weights"]))
    np.save(files["input"], image[None, None])
    np.save(files["output"], prob)
    _cover(files["cover"], image, prob[0, 0])
    files["doc"].write_text(_documentation(model, payload, record))
    return files


def _cover(path: Path, image: np.ndarray, prob: np.ndarray) -> None:
    """Input | input with the prediction in red, side by side (what the model does, at a glance)."""
    from PIL import Image

    grey = np.clip(normalise_like_bioimageio(image) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, -1).astype(np.float32)
    tinted = rgb.copy()
    tinted[prob >= 0.5] = 0.5 * tinted[prob >= 0.5] + 0.5 * np.array([255.0, 0.0, 0.0])
    both = np.concatenate([rgb, np.full((rgb.shape[0], 8, 3), 255.0), tinted], 1)
    Image.fromarray(both.astype(np.uint8)).save(path)


def _run_record(ref: str | Path) -> dict:
    """What the run says about its own choice (empty for a bare checkpoint)."""
    metrics = Path(ref) / "metrics.json"
    if not metrics.is_file():
        return {}
    m = json.loads(metrics.read_text())
    keys = ("method", "source", "target", "seed", "selection_criterion", "selected_step",
            "selected_checkpoint", "target_predicted_fraction", "trust_warnings")
    return {k: m[k] for k in keys if k in m}


def _documentation(model: Any, payload: dict, record: dict) -> str:
    cfg = payload.get("config", {})
    lines = [
        "# Mitochondria segmentation (domadapt)", "",
        f"A 2-D U-Net trained with domadapt {__version__} on `{cfg.get('source', '?')}` and "
        f"adapted to `{cfg.get('target', '?')}` (method `{cfg.get('method', '?')}`), predicting "
        "the probability that a pixel belongs to a mitochondrion.", "",
        f"**Input pixel size: {model.pixel_size_nm:g} nm** in y and x. Resample your slices to it "
        "first; `domadapt predict` does this itself.", "",
        "Pre-processing: each slice's 1st and 99th intensity percentiles are mapped to 0 and 1 "
        "and the result clipped to [-0.5, 1.5]. Post-processing: a sigmoid; threshold "
        f"{model.threshold:g} for a mask.", "",
    ]
    if model.harmonized:
        lines += ["The weights include the run's intensity harmonizer in front of the U-Net.", ""]
    if record:
        lines += ["## How this checkpoint was chosen (no target labels)", ""]
        lines += [f"- {k}: {v}" for k, v in record.items()] + [""]
    lines += ["## Citation", "", _FRANCO, ""]
    return "\n".join(lines)


def _description(files: dict[str, Path], pixel_nm: float, step: int, license_id: str,
                 authors: list[str] | None, payload: dict, record: dict) -> Any:
    import bioimageio.spec.model.v0_5 as v

    space_in = [v.SpaceInputAxis(id=v.AxisId(a), size=v.ParameterizedSize(min=4 * step, step=step),
                                 unit="nanometer", scale=pixel_nm) for a in "yx"]
    space_out = [v.SpaceOutputAxis(id=v.AxisId(a), size=v.SizeReference(
        tensor_id=v.TensorId("raw"), axis_id=v.AxisId(a)), unit="nanometer", scale=pixel_nm)
        for a in "yx"]
    channel_in = v.ChannelAxis(channel_names=[v.Identifier("em")])
    channel_out = v.ChannelAxis(channel_names=[v.Identifier("mitochondria")])
    pre = [v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32")),
           v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(
               axes=[v.AxisId("y"), v.AxisId("x")], min_percentile=1.0, max_percentile=99.0,
               eps=1e-6)),
           v.ClipDescr(kwargs=v.ClipKwargs(min=-0.5, max=1.5))]
    cfg = payload.get("config", {})
    return v.ModelDescr(
        name=f"domadapt mitochondria {cfg.get('source', 'source')} to {cfg.get('target', 'target')}",
        description="2-D U-Net for mitochondria in EM, adapted to an unlabeled target domain with "
                    "domadapt; checkpoint chosen without target labels.",
        authors=[v.Author(name=n) for n in (authors or ["domadapt"])],
        cite=[v.CiteEntry(text=_FRANCO, doi=v.Doi("10.1016/j.cmpb.2022.106949"))],
        license=license_id,
        documentation=v.FileDescr(source=files["doc"]),
        covers=[v.FileDescr(source=files["cover"])],
        tags=["mitochondria", "electron-microscopy", "semantic-segmentation", "domain-adaptation",
              "2d", "unet", "pytorch"],
        inputs=[v.InputTensorDescr(
            id=v.TensorId("raw"), axes=[v.BatchAxis(), channel_in, *space_in],
            test_tensor=v.FileDescr(source=files["input"]), preprocessing=pre,
            data=v.IntervalOrRatioDataDescr(type="float32"))],
        outputs=[v.OutputTensorDescr(
            id=v.TensorId("probability"), axes=[v.BatchAxis(), channel_out, *space_out],
            test_tensor=v.FileDescr(source=files["output"]),
            postprocessing=[v.SigmoidDescr()],
            data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))],
        weights=v.WeightsDescr(torchscript=v.TorchscriptWeightsDescr(
            source=files["weights"], pytorch_version=v.Version(torch.__version__.split("+")[0]))),
        config={"domadapt": {"version": __version__, "pixel_size_nm": pixel_nm,
                             "threshold": float(payload.get("config", {}).get("inference", {})
                                                .get("threshold", 0.5)), **record}},
    )
