"""The Python API: load a chosen model, segment arrays and files.

    from domadapt import load_model
    model = load_model("runs/lucchi-to-vnc/baseline/seed0")   # or a checkpoint file
    probs = model.predict(volume, voxel_size=(50, 6, 6))        # float32, the input's grid

``domadapt predict`` goes through the same calls. A model carries its pixel size,
its tiling and, when it was trained on harmonized images, its harmonizer: the
input is resampled to the model's pixel size, harmonized, predicted in blended
tiles and resampled back, exactly as the run predicted its target test volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from domadapt.training.checkpoint import checkpoint_of

__all__ = ["Model", "checkpoint_of", "load_model"]


class Model:
    """A segmentation model as a run chose it, ready to predict volumes of any size."""

    def __init__(self, net: nn.Module, payload: dict, source: Path) -> None:
        self.net, self.source = net, source
        self.pixel_size_nm = float(payload["pixel_size_nm"])
        inference = payload.get("config", {}).get("inference", {})
        self.settings = {k: inference[k] for k in ("tile", "overlap", "cpu_bf16", "tta")
                         if k in inference}
        self.threshold = float(inference.get("threshold", 0.5))
        self.harmonized = "harmonizer" in payload

    def __repr__(self) -> str:
        return (f"Model({self.source}, pixel {self.pixel_size_nm:g} nm"
                f"{', behind its harmonizer' if self.harmonized else ''})")

    def _voxel(self, voxel_size) -> tuple[float, float, float]:
        px = self.pixel_size_nm
        return tuple(float(v) for v in voxel_size) if voxel_size else (px, px, px)

    def predict(self, image: np.ndarray, voxel_size: tuple[float, float, float] | None = None, *,
                device: str = "auto", progress: bool = False) -> np.ndarray:
        """Foreground probabilities (float32, the input's (Z, Y, X) grid) of a 2D or 3D array.

        ``voxel_size`` is the input's (z, y, x) in nm; by default the model's own pixel
        size (no resampling). Intensities are normalised by the volume's own statistics.
        """
        from domadapt.inference import predict_to_array
        from domadapt.pipeline import resolve_device

        dev = resolve_device(device)
        return predict_to_array(self.net, image, voxel_size_nm=self._voxel(voxel_size),
                                model_pixel_nm=self.pixel_size_nm, device=dev,
                                amp=dev.type == "cuda", progress=progress, **self.settings)

    def predict_file(self, input_path: str | Path, output: str | Path, *,
                     voxel_size: tuple[float, float, float] | None = None, key: str | None = None,
                     binary: bool = False, threshold: float | None = None, device: str = "auto",
                     progress: bool = True, cpu_bf16: bool | None = None,
                     tta: str | None = None) -> Path:
        """Predict a volume file (tif, folder of slices, h5, zarr, OME-Zarr) into uint8
        (0-255 probability, or 0/255 with ``binary``), slice by slice in bounded memory.

        The output's suffix picks its format: ``.tif``, ``.h5`` or ``.ome.zarr``; the last
        two resume after a kill (finished slices are kept). ``voxel_size`` defaults to the
        input's own (OME-Zarr scale, HDF5 ``element_size_um``), else the model's pixel
        size. An output that would overwrite the input is refused. ``cpu_bf16`` and ``tta``
        (:mod:`domadapt.tta`) default to the checkpoint's ``inference`` settings.
        """
        from domadapt.data.io import lazy_image, stored_voxel_size
        from domadapt.data.writers import open_writer, output_kind
        from domadapt.inference import predict_to_tif, predict_to_writer
        from domadapt.pipeline import resolve_device
        from domadapt.predict import refuse_unsafe_output

        refuse_unsafe_output(input_path, output)
        kind = output_kind(output)
        dev = resolve_device(device)
        settings = dict(self.settings)
        if cpu_bf16 is not None:
            settings["cpu_bf16"] = cpu_bf16
        if tta is not None:
            settings["tta"] = tta
        voxel = self._voxel(voxel_size or stored_voxel_size(input_path, key))
        image = lazy_image(input_path, key=key)
        threshold = self.threshold if threshold is None else threshold
        options = dict(voxel_size_nm=voxel, model_pixel_nm=self.pixel_size_nm, device=dev,
                       amp=dev.type == "cuda", progress=progress, name=Path(input_path).name,
                       **settings)
        if kind == "tif":
            return predict_to_tif(self.net, image, output, binary=binary, threshold=threshold,
                                  **options)
        shape = (image.shape[0] if len(image.shape) == 3 else 1, *image.shape[-2:])
        fingerprint = {"model": self._identity(), "input": str(Path(input_path).resolve()),
                       "key": key, "voxel_size_nm": list(voxel), "binary": binary,
                       "threshold": threshold, "settings": {k: str(v) for k, v in settings.items()}}
        writer = open_writer(output, shape, np.uint8, voxel, fingerprint)
        return predict_to_writer(self.net, image, writer, binary=binary, threshold=threshold,
                                 **options)

    def _identity(self) -> str:
        """The checkpoint file as it is now: a retrained model never resumes an old output."""
        stat = self.source.stat()
        return f"{self.source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

    def predict_instances(self, input_path: str | Path, output: str | Path, *,
                          voxel_size: tuple[float, float, float] | None = None,
                          key: str | None = None, measure: str | Path | None = None,
                          threshold: float | None = None, device: str = "auto",
                          progress: bool = True, tta: str | None = None,
                          **instance_options) -> Path:
        """Predict ``input_path``, split the binary prediction into mitochondria instances
        (uint32 with its voxel size, tif, h5 or OME-Zarr by suffix; the whole volume is held in
        memory for this step) and, with ``measure``, write one CSV row per mitochondrion there
        plus a summary."""
        import tifffile

        from domadapt.data.io import stored_voxel_size
        from domadapt.data.writers import output_kind
        from domadapt.instances import instances
        from domadapt.morphometrics import measure_to_files, write_labels
        from domadapt.predict import refuse_unsafe_output

        refuse_unsafe_output(input_path, output)  # the temporary binary file is checked on its own
        output_kind(output)
        output = Path(output)
        binary = output.with_name(output.name + ".binary.tif")
        voxel = self._voxel(voxel_size or stored_voxel_size(input_path, key))
        try:
            self.predict_file(input_path, binary, voxel_size=voxel, key=key, binary=True,
                              threshold=threshold, device=device, progress=progress, tta=tta)
            labels = instances(tifffile.imread(binary) > 0, voxel, **instance_options)
        finally:
            binary.unlink(missing_ok=True)
        write_labels(labels, output, voxel)
        if measure is not None:
            measure_to_files(labels, voxel, measure)
        return output


def load_model(ref: str | Path) -> Model:
    """The model a run folder selected (label-free), or the one a checkpoint file holds."""
    from domadapt.predict import model_from_checkpoint

    path = checkpoint_of(ref)
    net, payload = model_from_checkpoint(path)
    return Model(net, payload, path)
