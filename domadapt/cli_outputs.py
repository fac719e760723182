"""The verbs that turn a chosen model into a biologist's files: ``predict``, ``export``,
``measure`` (registered on the ``domadapt`` group in :mod:`domadapt.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from domadapt.errors import DataError


def _voxel_size(value: str | None) -> list[float] | None:
    """Parse ``z,y,x`` in nm; the plausible range is the library's, so flags and YAMLs agree."""
    from domadapt.data.volume import check_voxel_size

    if value is None:
        return None
    parts = [p for p in value.replace(" ", "").split(",") if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 3 or any(n <= 0 for n in numbers):
        raise DataError(f"A voxel size must be three positive numbers z,y,x in nm, got '{value}'.")
    return list(check_voxel_size(numbers))



@click.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="A domadapt checkpoint.")
@click.option("--input", "input_path", required=True, type=click.Path(),
              help="Volume to segment: tif, folder of slices, h5, zarr or OME-Zarr.")
@click.option("--output", required=True, type=click.Path(),
              help="Output .tif, .h5 or .ome.zarr (the last two resume after a kill): uint8 "
                   "probabilities (or 0/255 masks); uint32 labels with --instances.")
@click.option("--voxel-size", help="z,y,x in nm of the input (default: an OME-Zarr's scale or an "
                                   "h5's element_size_um, else the model's pixel size).")
@click.option("--key", help="Dataset key inside an h5/zarr input.")
@click.option("--binary", is_flag=True, help="Write 0/255 masks instead of probabilities.")
@click.option("--threshold", type=float, default=0.5, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--bf16", is_flag=True, default=None,
              help="bfloat16 on a CPU with AMX/AVX512-BF16: ~3x faster, a few voxels per 100 000 "
                   "off by more than 1/255 (default: the checkpoint's inference.cpu_bf16).")
@click.option("--tta", type=click.Choice(["none", "flips", "d4"]),
              help="Average each tile's prediction over its mirror images (flips, 4x the time) or "
                   "all flips and right-angle turns (d4, 8x) (default: the checkpoint's "
                   "inference.tta).")
@click.option("--instances", is_flag=True,
              help="Write uint32 mitochondria instances (3-D watershed split) instead of probabilities.")
@click.option("--measure", "measure_csv", type=click.Path(),
              help="With --instances: one CSV row per mitochondrion here, plus a summary JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(checkpoint, input_path, output, voxel_size, key, binary, threshold, device, bf16,
            tta, instances, measure_csv, quiet) -> None:
    """Segment a volume with a checkpoint (tiled, bounded memory)."""
    from domadapt.predict import predict_file

    if measure_csv and not instances:
        raise DataError("--measure needs --instances: measurements are per mitochondrion.")
    if instances:
        from domadapt.api import load_model

        out = load_model(checkpoint).predict_instances(
            input_path, output, voxel_size=_voxel_size(voxel_size), key=key, measure=measure_csv,
            threshold=threshold, device=device, progress=not quiet, tta=tta)
    else:
        out = predict_file(checkpoint, input_path, output, voxel_size=_voxel_size(voxel_size),
                           key=key, binary=binary, threshold=threshold, device=device,
                           progress=not quiet, cpu_bf16=bf16, tta=tta)
    click.echo(f"wrote {out}" + (f" and {measure_csv}" if measure_csv else ""))


@click.command()
@click.argument("run_dir", type=click.Path())
@click.argument("out_zip", type=click.Path())
@click.option("--sample", type=click.Path(), help="Volume whose middle slice becomes the test input "
              "(default: the run's target test volume).")
@click.option("--sample-voxel-size", help="z,y,x in nm of --sample (default: its stored scale).")
@click.option("--license", "license_id", default="CC-BY-4.0", show_default=True,
              help="SPDX licence of the weights (mind the training data's licences).")
@click.option("--author", "authors", multiple=True, help="Author name (repeatable).")
def export(run_dir, out_zip, sample, sample_voxel_size, license_id, authors) -> None:
    """Write RUN_DIR's chosen model (or a checkpoint) as a bioimage.io model package (.zip)."""
    import importlib.util

    if importlib.util.find_spec("bioimageio") is None:
        raise DataError("Export needs the optional package bioimageio.spec: "
                        "pip install 'domadapt[bioimageio]'.")
    from domadapt.export import export_bioimageio

    voxel = _voxel_size(sample_voxel_size)
    out = export_bioimageio(run_dir, out_zip, sample=sample, license_id=license_id,
                            sample_voxel_size=tuple(voxel) if voxel else None,
                            authors=list(authors) or None)
    click.echo(f"wrote {out}")


@click.command()
@click.argument("labels", type=click.Path())
@click.option("--voxel-size", help="z,y,x in nm of the label volume (default: an OME-Zarr's "
                                   "scale or an h5's element_size_um).")
@click.option("--key", help="Dataset key inside an h5/zarr input.")
@click.option("--out", "out_csv", type=click.Path(), help="CSV path (default: <labels>_mito.csv).")
@click.option("--from-mask", is_flag=True,
              help="LABELS is a binary mask (any value > 0): split it into instances first.")
def measure(labels, voxel_size, key, out_csv, from_mask) -> None:
    """One CSV row per mitochondrion (volume, surface, diameter, box, centroid, solidity,
    elongation) and a summary (count, density, volume fraction). Labels in an h5, zarr or
    uncompressed tif are read one object at a time, so they may exceed memory."""
    import numpy as np

    from domadapt.data.io import lazy_image, stored_voxel_size
    from domadapt.instances import instances as split
    from domadapt.morphometrics import measure_to_files

    voxel = _voxel_size(voxel_size) or stored_voxel_size(labels, key)
    if voxel is None:
        raise DataError(f"{labels} declares no voxel size; give --voxel-size z,y,x in nm.")
    voxel = tuple(voxel)
    volume = lazy_image(labels, key=key)
    if from_mask:
        volume = split(np.asarray(volume[:]) > 0, voxel)
    elif not np.issubdtype(volume.dtype, np.integer):
        raise DataError(f"{labels} holds {volume.dtype} values, not integer labels; for a "
                        "probability or binary volume add --from-mask (values > 0 are foreground).")
    out_csv = out_csv or str(Path(labels).with_name(Path(labels).name.split(".")[0] + "_mito.csv"))
    result = measure_to_files(volume, voxel, out_csv)
    click.echo(f"{result['count']} mitochondria, {result['density_per_um3']:.3f} per µm³, "
               f"volume fraction {result['volume_fraction']:.4f}; wrote {out_csv}")
