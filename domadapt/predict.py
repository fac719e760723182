"""``domadapt predict``: segment any volume with a checkpoint, in bounded memory."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from domadapt.errors import CheckpointError, DataError
from domadapt.models.spec import is_unet, unet_from_spec, with_harmonizer
from domadapt.training.checkpoint import load_checkpoint


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The segmentation network stored in a checkpoint, in eval mode, and the payload."""
    payload = load_checkpoint(path)
    key = payload.get("predictor")
    if not is_unet(payload) or key not in payload.get("modules", {}):
        raise CheckpointError(f"Checkpoint '{path}' holds no segmentation network to predict with.")
    net = unet_from_spec(payload["model_spec"])
    try:
        net.load_state_dict(payload["modules"][key])
    except RuntimeError:
        raise CheckpointError(f"Checkpoint '{path}' weights do not match its model spec.") from None
    return with_harmonizer(net, payload.get("harmonizer")).eval(), payload


def predict_file(checkpoint: str | Path, input_path: str | Path, output: str | Path, *,
                 voxel_size: list[float] | None = None, key: str | None = None,
                 binary: bool = False, threshold: float = 0.5, device: str = "auto",
                 progress: bool = True, cpu_bf16: bool | None = None,
                 tta: str | None = None) -> Path:
    """Predict ``input_path`` into a uint8 tif, h5 or OME-Zarr (``domadapt predict``); see
    :meth:`domadapt.api.Model.predict_file`."""
    from domadapt.api import load_model

    refuse_unsafe_output(input_path, output)  # before the checkpoint is even read
    return load_model(checkpoint).predict_file(
        input_path, output, voxel_size=tuple(voxel_size) if voxel_size else None, key=key,
        binary=binary, threshold=threshold, device=device, progress=progress, cpu_bf16=cpu_bf16,
        tta=tta)


def refuse_unsafe_output(input_path: str | Path, output: str | Path) -> None:
    """The output may never replace the input, sit inside an input folder, or be a folder."""
    source, target = Path(input_path).resolve(), Path(output).resolve()
    if target.is_dir():
        raise DataError(f"Output {output} is a folder; give a file name such as "
                        f"{Path(output) / 'prediction.tif'}.")
    if target == source or (target.exists() and source.exists() and target.samefile(source)):
        raise DataError(f"Output {output} is the input volume; writing it would destroy the input, "
                        "give another file name.")
    if source.is_dir() and source in target.parents:
        raise DataError(f"Output {output} lies inside the input folder {input_path}, which is read "
                        "as the volume; write it elsewhere.")
