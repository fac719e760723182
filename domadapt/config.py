"""Run configuration: typed dataclasses, YAML presets and ``--set`` overrides.

A run's configuration is merged in a fixed order, later winning:
dataclass defaults <- profile YAML <- method YAML <- ``--config`` file <-
``--set key=value`` <- explicit CLI flags. The merged mapping is validated
into :class:`RunConfig`: an unknown key or a value of the wrong type is a
:class:`~domadapt.errors.ConfigError` that names the key, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from domadapt.augment_options import AugmentConfig as AugmentConfig
from domadapt.augment_options import validate_augment
from domadapt.criteria import directions
from domadapt.errors import ConfigError
from domadapt.stage_options import RENAMED, renamed_to, upgrade_renamed
from domadapt.yaml_config import config_differences as config_differences
from domadapt.yaml_config import from_dict as from_dict
from domadapt.yaml_config import load_yaml as load_yaml
from domadapt.yaml_config import merge as merge
from domadapt.yaml_config import parse_set as parse_set


@dataclass
class DataConfig:
    """Where data comes from and how it is cut into training patches."""

    pixel_size_nm: float = 10.0  # every volume is resampled in y/x to this pixel size
    patch_size: int = 128  # square training patches, in pixels at pixel_size_nm
    batch_size: int = 8
    foreground_patch_prob: float = 0.5  # share of patches centred on a mitochondrion pixel
    source_val_fraction: float = 0.1  # last z-slices of source train held out as source_val
    vnc_split: Literal["half", "sections"] = "half"
    data_root: str | None = None  # else $DOMADAPT_DATA, else the user cache
    source_voxel_size: list[float] | None = None  # z,y,x nm, for a source given as a path
    target_voxel_size: list[float] | None = None
    source_mask: str | None = None  # mask of a source given as a path
    target_mask: str | None = None  # optional target test labels, for scoring only
    synthetic_shape: list[int] | None = None  # Z,Y,X override for synthetic domains
    max_slices: int | None = None  # keep at most this many z-slices per split (quick tests)
    # Labeled splits of the SOURCE used for training: [train] (default) or [train, test]: a
    # source's test split is not needed by a run on another target, so it can add labels.
    source_splits: list[Literal["train", "test"]] = field(default_factory=lambda: ["train"])


@dataclass
class ModelConfig:
    """The 2D segmentation network."""

    arch: Literal["unet", "attention_unet"] = "unet"
    depth: int = 4  # number of down-sampling steps
    width: int = 16  # channels of the first level; doubles at each level
    norm: Literal["batch", "group", "instance", "ibn", "none"] = "ibn"


@dataclass
class TrainConfig:
    """One stage of optimisation through the shared trainer."""

    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 50
    loss: Literal["bce", "dice", "bce_dice"] = "bce_dice"
    eval_every: int = 100  # steps between evaluations (one "epoch" of the run)
    log_every: int = 10
    patience: int = 0  # evaluations without improvement before stopping; 0 disables
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    # Evaluate and save an exponential moving average of the predictor's weights with this
    # decay (0 disables; 0.99 averages over about 100 steps). See training/weight_average.py.
    weight_average: float = 0.0
    amp: bool = True  # mixed precision (float16), used on CUDA only
    # On the CPU: bfloat16 autocast where the CPU computes it natively (AMX/AVX512-BF16), and
    # channels-last tensors, which oneDNN's convolutions prefer (docs/results/performance.md).
    cpu_bf16: bool = False
    channels_last: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch CPU threads; 0: the usable cores minus busy ones (domadapt/threads.py)
    image_every: int = 1  # log image grids every N evaluations; 0 disables


@dataclass
class SelectionConfig:
    """How the trainer's evaluations choose the final checkpoint, without target labels."""

    # A monitor metric or a combined criterion of them; its direction is declared in the
    # criterion registry. The default was chosen on 63 held-out labeled runs by the rule in
    # docs/results/selection/rule-rank.md (docs/results/selection/README.md).
    criterion: str = "rank_morph_consistency"
    # An in-domain run (source = target) holds labeled validation slices of the domain it is
    # scored on; this criterion chooses its checkpoint unless a profile, method, file or --set
    # names selection.criterion. Empty: selection.criterion everywhere. The default is set by
    # the rule in docs/results/selection/in-domain-rule.md.
    in_domain_criterion: str = "source_val_iou"
    monitors: list[str] = field(default_factory=lambda: ["source_val", "target"])
    target_slices: int = 8  # fixed, seeded sample of unlabeled target slices to monitor
    # Side (pixels at data.pixel_size_nm) of the fixed crop scored in each of those slices,
    # so an evaluation costs the same on any slice size; smaller slices are used whole; 0: whole.
    target_crop: int = 512
    # Which unlabeled target images the target monitor predicts: the training images
    # (inductive, default) or the test images (transductive, as the reference paper).
    target_split: Literal["target_train", "target_test"] = "target_train"


@dataclass
class InferenceConfig:
    """Tiled prediction of large volumes."""

    tile: int = 256
    overlap: int = 32
    batch_size: int = 8
    threshold: float = 0.5
    # Predict (evaluations and volumes) in bfloat16 on CPUs with AMX or AVX512-BF16: 3x faster,
    # but 0.006 % of voxels differ from float32 by more than 1/255; other CPUs use float32.
    cpu_bf16: bool = False
    # bfloat16 for the evaluations during training only (label-free criteria, source
    # validation); the final prediction and `domadapt predict` keep cpu_bf16's precision.
    eval_cpu_bf16: bool = False
    # Test-time augmentation of the final prediction and `domadapt predict` (not of the
    # evaluations during training): probabilities averaged over the tile's mirror images
    # (flips, 4 passes) or all eight flips and turns (d4); see domadapt/tta.py.
    tta: Literal["none", "flips", "d4"] = "none"


@dataclass
class PretrainConfig:
    """Segmentation pretraining on another labeled dataset before the method trains.

    Every segmentation network of the method (whatever the method) starts from
    ``weights``: a checkpoint given here, or the one the ``pretrain`` stage
    trains on ``dataset`` (e.g. a synthetic domain) and records here.
    """

    dataset: str | None = None  # a labeled dataset (name, YAML or path), e.g. synth-hippocampus
    steps: int | None = None  # pretraining steps; null: train.steps // 2
    weights: str | None = None  # a checkpoint to start from (set by the pretrain stage)


@dataclass
class RunConfig:
    """Everything a ``domadapt run`` needs; written resolved into the run folder."""

    source: str = "synth-hippocampus"
    target: str = "synth-cortex"
    method: str = "baseline"
    # The strategy module that runs the method: the method YAML's ``strategy:`` key.
    strategy: str = ""
    profile: str = "cpu-quick"
    seed: int = 0
    out: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # The strategy's own settings (its Options dataclass), None if it takes none. In YAML,
    # config.yaml and checkpoints they sit under the strategy's section name, e.g. ``ssl:``.
    options: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The plain form (config.yaml, checkpoints), the options under their section name."""
        plain = dataclasses.asdict(self)
        options = plain.pop("options")
        if self.options is not None:
            plain[type(self.options).section] = options
        return plain


# --------------------------------------------------------------------------- presets


def dataset_refs(value: str | None) -> list[str]:
    """The datasets a ``source`` or ``pretrain.dataset`` value names: several, comma-separated."""
    return [ref.strip() for ref in (value or "").split(",") if ref.strip()]


def configs_dir() -> Path:
    """The folder of YAML presets: $DOMADAPT_CONFIGS if set; the ``domadapt/configs`` an
    installed wheel carries; else (a source checkout) the repository's configs/."""
    env = os.environ.get("DOMADAPT_CONFIGS")
    if env:
        return Path(env)
    packaged = importlib.resources.files("domadapt").joinpath("configs")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "configs"


def preset_names(kind: str) -> list[str]:
    """Names of the YAML presets of one kind (``profiles`` or ``methods``)."""
    return sorted(p.stem for p in (configs_dir() / kind).glob("*.yaml"))


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """Read ``configs/<kind>/<name>.yaml``; an unknown name lists the valid ones."""
    path = configs_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        singular = kind.rstrip("s")
        valid = ", ".join(preset_names(kind)) or "none found"
        raise ConfigError(f"Unknown {singular} '{name}'; valid {kind}: {valid}.")
    return load_yaml(path)


# --------------------------------------------------------------------------- validation


def build_config(
    *,
    profile: str = "cpu-quick",
    method: str = "baseline",
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge defaults <- profile <- method <- file <- --set <- flags, and validate."""
    layers = [load_preset("profiles", profile), load_preset("methods", method)]
    if config_file is not None:
        layers.append(load_yaml(config_file))
    layers.append(parse_set(list(overrides)))
    layers.append({k: v for k, v in (flags or {}).items() if v is not None})
    variants = {cross: _named(merge_layers(layers, cross), profile, method) for cross in (False, True)}
    cross = is_cross_domain(variants[False])
    merged = variants[cross]
    for variant in variants.values():
        refuse_renamed(variant)
    if not cross:
        config_from_plain(variants[True])  # a wrong cross-domain key is an error here too
    cfg = config_from_plain(merged)
    validate(cfg)
    return with_in_domain_criterion(cfg, "criterion" in merged.get("selection", {}))


#: A layer's section of keys that apply only to cross-domain runs (the target is not the source).
CROSS_DOMAIN = "cross_domain"


def is_cross_domain(merged: dict[str, Any]) -> bool:
    """Whether the run adapts to another domain: an in-domain run has no shift to bridge."""
    return merged.get("source", RunConfig.source) != merged.get("target", RunConfig.target)


def merge_layers(layers: list[dict[str, Any]], cross_domain: bool) -> dict[str, Any]:
    """Merge the layers in order. A layer's ``cross_domain:`` section is merged over that same
    layer in a cross-domain run and left out otherwise, so a later layer (a method, a file,
    ``--set``) still wins over an earlier layer's cross-domain keys."""
    merged: dict[str, Any] = {}
    for layer in layers:
        own = dict(layer)
        section = own.pop(CROSS_DOMAIN, None) or {}
        if not isinstance(section, dict) or CROSS_DOMAIN in section:
            raise ConfigError(f"Config key '{CROSS_DOMAIN}' must be a mapping of config keys "
                              f"(not itself holding '{CROSS_DOMAIN}'), got {section!r}.")
        merged = merge(merged, own)
        if cross_domain:
            merged = merge(merged, section)
    return merged


def _named(merged: dict[str, Any], profile: str, method: str) -> dict[str, Any]:
    """The merged keys with the run's profile, method and (unless a layer named it) strategy."""
    return {**merged, "profile": profile, "method": method,
            "strategy": merged.get("strategy", method)}


def with_in_domain_criterion(cfg: RunConfig, criterion_named: bool) -> RunConfig:
    """The run's criterion: the in-domain one when the source is the target and nothing named
    ``selection.criterion``, since there the held-out validation slices are labeled slices of
    the very domain the run is scored on."""
    chosen = cfg.selection.in_domain_criterion
    if criterion_named or not chosen or cfg.source != cfg.target:
        return cfg
    return dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection, criterion=chosen))


def validate(cfg: RunConfig) -> None:
    """Value checks that types alone cannot express."""
    positive = {
        "data.pixel_size_nm": cfg.data.pixel_size_nm,
        "data.patch_size": cfg.data.patch_size,
        "data.batch_size": cfg.data.batch_size,
        "train.steps": cfg.train.steps,
        "train.eval_every": cfg.train.eval_every,
        "train.lr": cfg.train.lr,
        "inference.tile": cfg.inference.tile,
        "model.depth": cfg.model.depth,
        "model.width": cfg.model.width,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"Config key '{key}' must be positive, got {value}.")
    if cfg.selection.target_crop < 0 or cfg.selection.target_slices <= 0:
        raise ConfigError("Config keys 'selection.target_crop' (0: whole slices) and "
                          "'selection.target_slices' must be >= 0 and positive.")
    known = directions()
    if cfg.selection.in_domain_criterion not in ("", *known):
        raise ConfigError(f"Config key 'selection.in_domain_criterion' names no criterion: "
                          f"'{cfg.selection.in_domain_criterion}'; valid: {', '.join(known)}, "
                          "or empty.")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"Config key 'seed' must be an integer in [0, 2**32), got {cfg.seed}.")
    multiple = 2 ** cfg.model.depth
    if cfg.data.patch_size % multiple:
        raise ConfigError(
            f"Config key 'data.patch_size' must be a multiple of {multiple} "
            f"(2**model.depth), got {cfg.data.patch_size}."
        )
    if not 0 <= cfg.inference.overlap < cfg.inference.tile:
        raise ConfigError("Config key 'inference.overlap' must be in [0, inference.tile).")
    if not 0.0 <= cfg.train.weight_average < 1.0:
        raise ConfigError("Config key 'train.weight_average' must be in [0, 1) (0 disables), "
                          f"got {cfg.train.weight_average}.")
    if not 0.0 <= cfg.data.source_val_fraction < 1.0:
        raise ConfigError("Config key 'data.source_val_fraction' must be in [0, 1).")
    if cfg.pretrain.steps is not None and cfg.pretrain.steps <= 0:
        raise ConfigError(f"Config key 'pretrain.steps' must be positive, got {cfg.pretrain.steps}.")
    if cfg.target in dataset_refs(cfg.pretrain.dataset):
        raise ConfigError("Config key 'pretrain.dataset' names the target: pretraining on its "
                          "labels would not be unsupervised adaptation.")
    sources = [ref.strip() for ref in cfg.source.split(",")]
    if len(sources) > 1 and cfg.target in sources:
        raise ConfigError(f"The target '{cfg.target}' is also one of the sources ({cfg.source}): "
                          "its labels would be trained on.")
    splits = cfg.data.source_splits
    if not splits or len(set(splits)) != len(splits):
        raise ConfigError("Config key 'data.source_splits' must list train and/or test once each.")
    if "test" in splits and cfg.source == cfg.target:
        raise ConfigError("Config key 'data.source_splits' includes test, but the source is the "
                          "target: its test split would be trained on and then scored.")
    validate_augment(cfg.augment)
    if hasattr(cfg.options, "validate"):
        cfg.options.validate()


def record(data: RunConfig | dict[str, Any], section: str | None) -> dict[str, Any]:
    """A config as a run folder records it: the run's keys and its strategy's ``section``,
    without sections of other strategies (which configs of earlier versions carried)."""
    if isinstance(data, RunConfig):
        return data.to_dict()
    own = {f.name for f in dataclasses.fields(RunConfig)} | {section}
    return {k: v for k, v in data.items() if k in own}


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (the run folder's config.yaml): the run's keys
    and its strategy's own section."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


#: Keys of earlier versions that had no effect; a run folder that records them still resumes.
REMOVED_KEYS = ("inference.save_probabilities",)


def refuse_renamed(merged: dict[str, Any]) -> None:
    """A key of an earlier version in the user's settings gets its new name (or the news that it
    is gone), not only 'unknown key'; stored configs are read in today's keys instead."""
    for old in (*RENAMED, *REMOVED_KEYS):
        section, key = old.split(".", 1)
        if isinstance(merged.get(section), dict) and key in merged[section]:
            if old in REMOVED_KEYS:
                raise ConfigError(f"Config key '{old}' was removed: it had no effect.")
            raise ConfigError(f"Config key '{old}' is now '{renamed_to(old)}' (README, Stages).")


def saved_record(plain: dict[str, Any], section: str | None) -> dict[str, Any]:
    """A run folder's config.yaml in today's keys and defaults, for comparing with a resume.

    A folder written before a key was renamed or added compares equal to a
    resume with the same settings; one too old to read is compared as it is.
    """
    try:
        return record(config_from_plain(plain, stored=True), section)
    except ConfigError:
        return record(plain, section)


def config_from_plain(data: dict[str, Any], stored: bool = False) -> RunConfig:
    """A RunConfig from its plain form: merged presets, a config.yaml or a checkpoint's config
    (also one written by an earlier version: renamed keys are read under their new names).

    The running strategy's section is validated into its Options dataclass; sections of
    the package's other strategies (a profile may tune them for every method, and configs
    of earlier versions recorded them all) are set aside, and any other key is an error.
    ``stored``: a config a run wrote; if its strategy's module cannot be imported here (a
    lab's own strategy), the run's settings are read without its options.
    """
    from domadapt.strategies import option_sections, strategy_of

    plain = upgrade_renamed({k: ({n: v for n, v in body.items() if f"{k}.{n}" not in REMOVED_KEYS}
                                 if isinstance(body, dict) else body) for k, body in data.items()})
    try:
        options_type = strategy_of(plain).Options
    except ConfigError:
        if not stored:
            raise
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        plain, options_type = {k: v for k, v in plain.items() if k in fields}, None
    section = options_type.section if options_type is not None else None
    own = plain.pop(section, None) if section else None
    for name in option_sections():
        plain.pop(name, None)
    known = [f.name for f in dataclasses.fields(RunConfig) if f.name != "options"]
    for key in plain:
        if key not in known:
            raise ConfigError(f"Unknown config key '{key}'; valid keys here: "
                              f"{', '.join(known + ([section] if section else []))}.")
    cfg = from_dict(RunConfig, plain)
    if options_type is not None:
        cfg.options = from_dict(options_type, own or {}, f"{section}.")
    return cfg
