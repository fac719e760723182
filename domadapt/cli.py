"""The ``domadapt`` command line: thin verbs over library functions.

Each verb parses its flags, builds what the library needs and calls one
function. Errors the user can fix are :class:`~domadapt.errors.DomadaptError`:
printed as one sentence on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from domadapt import __version__
from domadapt.cli_outputs import _voxel_size, export, measure, predict
from domadapt.errors import NO_SPACE_ERRNOS, DataError, DomadaptError, write_failure


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="domadapt")
def cli() -> None:
    """Domain adaptation of mitochondria segmentation in electron microscopy."""


for _verb in (predict, export, measure):
    cli.add_command(_verb)


@cli.command()
@click.option("--source", default="synth-hippocampus", show_default=True,
              help="Labeled source: a dataset name, a dataset YAML or a volume path.")
@click.option("--target", default="synth-cortex", show_default=True,
              help="Unlabeled target: a dataset name, a dataset YAML or a volume path.")
@click.option("--method", default="baseline", show_default=True,
              help="Adaptation method (configs/methods/), or auto: run the portfolio of "
                   "configs/auto.yaml and keep the model the selection criterion prefers.")
@click.option("--portfolio", help="With --method auto: the methods it compares, comma-separated "
              "(default: configs/auto.yaml), e.g. baseline,style_transfer,self_training-histogram.")
@click.option("--profile", default="cpu-quick", show_default=True,
              help="Size preset (configs/profiles/): cpu-quick, paper, smoke.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="A YAML file merged over the profile and method.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set train.steps=200 (repeatable).")
@click.option("--seed", type=int, help="Seed for sampling and initialisation.")
@click.option("--out", help="Root folder of run folders (default: runs).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Training device.")
@click.option("--threads", type=int, help="CPU threads (= --set train.threads=N; default: the "
              "usable cores minus busy ones).")
@click.option("--data-root", help="Folder holding the datasets (default: $DOMADAPT_DATA).")
@click.option("--source-voxel-size", help="z,y,x in nm, for a source given as a path.")
@click.option("--target-voxel-size", help="z,y,x in nm, for a target given as a path.")
@click.option("--source-mask", help="Mask volume of a source given as a path.")
@click.option("--target-mask", help="Target test labels, used only to score the result.")
@click.option("--pretrain", help="Labeled dataset(s) the U-Net is pretrained on first, e.g. "
              "synth-hippocampus or a mix synth-hippocampus,synth-cortex,synth-vnc "
              "(= --set pretrain.dataset=...).")
@click.option("--resume", is_flag=True, help="Continue a killed run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run folder first.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(source, target, method, portfolio, profile, config_file, overrides, seed, out, device,
        threads, data_root, source_voxel_size, target_voxel_size, source_mask, target_mask, pretrain,
        resume, overwrite, quiet) -> None:
    """Train on SOURCE, adapt to TARGET, choose a checkpoint label-free, score it."""
    from domadapt.config import build_config
    from domadapt.errors import ConfigError

    if portfolio is not None and method != "auto":
        raise ConfigError("--portfolio chooses the methods of --method auto; add --method auto "
                          "or leave --portfolio out.")
    from domadapt.pipeline import run as run_pipeline
    from domadapt.pipeline import run_dir_for

    flags = {"source": source, "target": target, "seed": seed, "out": out,
             "train": {k: v for k, v in {"device": device, "threads": threads}.items()
                       if v is not None},
             "data": {k: v for k, v in {
                 "data_root": data_root,
                 "source_voxel_size": _voxel_size(source_voxel_size),
                 "target_voxel_size": _voxel_size(target_voxel_size),
                 "source_mask": source_mask, "target_mask": target_mask}.items() if v is not None},
             "pretrain": {"dataset": pretrain} if pretrain else {}}
    if method == "auto":
        from dataclasses import replace

        from domadapt.auto import SOURCE_ONLY, run_auto

        def build(member: str, extra: list[str]):
            return build_config(profile=profile, method=member, config_file=config_file,
                                overrides=[*overrides, *extra], flags=flags)

        methods = [m.strip() for m in portfolio.split(",") if m.strip()] if portfolio else None
        metrics = run_auto(build, portfolio=methods, resume=resume, overwrite=overwrite,
                           progress=not quiet)
        auto = metrics["auto"]
        click.echo(f"auto: kept {auto['chosen_method']} (step {auto['chosen_step']}) of "
                   f"{len(auto['candidates'])} methods", err=True)
        _print_summary(metrics, run_dir_for(replace(build(SOURCE_ONLY, []), method="auto")))
        return
    cfg = build_config(profile=profile, method=method, config_file=config_file,
                       overrides=overrides, flags=flags)
    run_dir = run_dir_for(cfg)
    click.echo(f"domadapt run: {cfg.method} {cfg.source} -> {cfg.target} "
               f"(profile {cfg.profile}, seed {cfg.seed}) into {run_dir}", err=True)
    metrics = run_pipeline(cfg, resume=resume, overwrite=overwrite, progress=not quiet)
    if metrics:
        _print_summary(metrics, run_dir)


def _print_summary(metrics: dict, run_dir: Path) -> None:
    def fmt(key):
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    click.echo(f"target IoU {fmt('target_iou')}  Dice {fmt('target_dice')}  "
               f"slice-mean IoU {fmt('target_iou_slice_mean')}  "
               f"(checkpoint by {metrics['selection_criterion']} at step "
               f"{metrics['selected_step']}, {metrics['wall_time_s']:.0f} s)")
    for warning in metrics.get("trust", {}).get("warnings", []):
        click.echo(f"warning (trust panel, report.md): {warning}", err=True)
    click.echo(f"run folder: {run_dir}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--labels/--no-labels", default=None,
              help="Score every checkpoint on the target test labels (default: when they exist).")
@click.option("--max-slices", type=int, default=40, show_default=True,
              help="Target test slices predicted per checkpoint for the regret report.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def select(run_dir, labels, max_slices, quiet) -> None:
    """Replay label-free checkpoint choice for RUN_DIR; with labels, report regret."""
    from domadapt.selection import selection_report, target_has_labels, write_report

    with_labels = target_has_labels(run_dir) if labels is None else labels
    metrics = Path(run_dir) / "metrics.json"
    if metrics.is_file() and "auto" in json.loads(metrics.read_text()):
        from domadapt.auto import auto_selection_report, render_auto_selection

        text = render_auto_selection(auto_selection_report(run_dir, with_labels, max_slices,
                                                           progress=not quiet))
        (Path(run_dir) / "selection.md").write_text(text)
        click.echo(text)
        return
    report = selection_report(run_dir, with_labels=with_labels, max_slices=max_slices,
                              progress=not quiet)
    paths = write_report(report, run_dir)
    click.echo((Path(run_dir) / "selection.md").read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@cli.group()
def datasets() -> None:
    """List, describe and download datasets."""


@datasets.command("list")
def datasets_list() -> None:
    """All registered datasets with their voxel sizes."""
    from domadapt.data.registry import dataset_names, get_spec

    click.echo(f"{'name':<20} {'voxel z,y,x (nm)':<18} description")
    for name in dataset_names():
        spec = get_spec(name)
        voxel = ",".join(f"{v:g}" for v in spec.voxel_size_nm)
        click.echo(f"{name:<20} {voxel:<18} {spec.description}")


@datasets.command("info")
@click.argument("name")
@click.option("--data-root", help="Folder holding the datasets (default: $DOMADAPT_DATA).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def datasets_info(name, data_root, as_json) -> None:
    """Description, citation and (when present) shapes and foreground fractions."""
    from domadapt.data.registry import dataset_info

    info = dataset_info(name, data_root)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for sub, subvalue in value.items():
                click.echo(f"  {sub}: {subvalue}")
        else:
            click.echo(f"{key}: {value}")


@datasets.command("download")
@click.argument("name")
@click.option("--data-root", help="Folder holding the datasets (default: $DOMADAPT_DATA).")
def datasets_download(name, data_root) -> None:
    """Fetch a dataset archive (checksummed, atomic) and unpack it into the data root."""
    from domadapt.data.registry import download_dataset, get_spec

    if get_spec(name).synthetic:
        click.echo(f"{name} is synthetic: it is generated on the fly when used, nothing to download.")
        return
    click.echo(f"ready: {download_dataset(name, data_root)}")


def _csv(value: str | None, cast=str) -> list | None:
    if value is None:
        return None
    try:
        return [cast(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise DataError(f"Expected a comma-separated list of numbers, got '{value}'.") from None


@cli.command()
@click.option("--datasets", help="Comma-separated datasets; every ordered pair is run.")
@click.option("--methods", help="Comma-separated methods (configs/methods/).")
@click.option("--seeds", help="Comma-separated seeds (default 0).")
@click.option("--profile", help="Size preset of every run (default cpu-quick).")
@click.option("--executor", type=click.Choice(["local", "pool", "slurm"]),
              help="local: one run after another; pool: parallel local processes; "
                   "slurm: one job per run through submitit.")
@click.option("--workers", type=int, help="Parallel runs of the pool executor.")
@click.option("--out", help="Benchmark folder (runs/, results.csv, summary.md, figures).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="A benchmark YAML (configs/benchmarks/) holding the same keys.")
@click.option("--run-config", type=click.Path(dir_okay=False),
              help="A run YAML layered into every run, as `run --config` does (e.g. "
                   "configs/recipes/shift.yaml); use its own --out.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override applied to every run (repeatable).")
@click.option("--regret", is_flag=True, default=None,
              help="Also score every checkpoint on target labels: the selection-regret table.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark(datasets, methods, seeds, profile, executor, workers, out, config_file, run_config,
              overrides, regret, quiet) -> None:
    """Run every ordered source->target pair x method x seed; skip finished runs; aggregate."""
    from domadapt.benchmark import benchmark as run_benchmark
    from domadapt.benchmark import load_benchmark_config

    bc = load_benchmark_config(
        config_file, datasets=_csv(datasets), methods=_csv(methods), seeds=_csv(seeds, int),
        profile=profile, executor=executor, workers=workers, out=out, regret=regret,
        run_config=run_config, overrides=list(overrides) or None)
    written = run_benchmark(bc, progress=not quiet)
    for name in ("summary.md", "results.csv", "heatmap.png"):
        if name in written:
            click.echo(f"{name.split('.')[0]}: {written[name]}")


@cli.command()
@click.option("--from", "start", required=True, type=click.Path(),
              help="A finished run folder (its chosen checkpoint) or a checkpoint file.")
@click.option("--target", required=True, help="Target dataset with labeled training slices.")
@click.option("--n-labeled", default="0,1,5,10,20", show_default=True,
              help="Comma-separated numbers of labeled target training slices.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--steps", type=int, default=300, show_default=True, help="Training steps per fine-tune.")
@click.option("--patch", type=int, help="Patch size (default: the starting run's).")
@click.option("--lr", type=float, help="Learning rate (default: the starting run's).")
@click.option("--loss", type=click.Choice(["bce", "dice", "bce_dice"]), help="Default: the run's.")
@click.option("--no-scratch", is_flag=True, help="Skip the from-scratch comparison models.")
@click.option("--threads", type=int, default=0, help="CPU threads (0: torch's default).")
@click.option("--data-root", help="Folder holding the datasets (default: $DOMADAPT_DATA).")
@click.option("--out", required=True, help="Folder for the table, the curve and every fine-tune.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def finetune(start, target, n_labeled, seeds, steps, patch, lr, loss, no_scratch, threads, data_root,
             out, quiet) -> None:
    """Fine-tune a run's model on N labeled target slices: the label-efficiency curve."""
    from domadapt.finetune import FinetuneSettings
    from domadapt.finetune import finetune as run_finetune

    settings = FinetuneSettings(n_labeled=_csv(n_labeled, int), seeds=_csv(seeds, int), steps=steps,
                                patch_size=patch, lr=lr, loss=loss, scratch=not no_scratch,
                                threads=threads)
    folder = run_finetune(start, target, settings, out, data_root, progress=not quiet)
    click.echo((folder / "label_efficiency.md").read_text())
    click.echo(f"curve: {folder / 'label_efficiency.png'}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach a user as one line, not as a source location and a code excerpt."""
    click.echo(f"warning: {message}", err=True)


def main() -> None:
    """Console entry point: user errors become one sentence and exit code 2."""
    warnings.showwarning = _show_warning
    try:
        cli.main(standalone_mode=False)
    except DomadaptError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except PermissionError as exc:
        click.echo(f"error: Permission denied for {exc.filename or 'a file'}; choose a place "
                   "you may write to or read from.", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        click.echo(f"error: {write_failure(exc.filename or 'a file', exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; rerun with --resume to continue", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except SystemExit:
        raise


if __name__ == "__main__":
    main()
