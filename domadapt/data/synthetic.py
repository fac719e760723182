"""Procedural EM-like domains with exact mitochondria masks.

Real EM datasets need downloads and their domain shift cannot be dialled; these
synthetic domains are the package's embedded default dataset and keep tests fast.
A volume is made in two independent stages with separate random streams:

* :class:`Geometry` (lengths in nm) decides *what is where*: cells with wobbly
  membranes, mitochondria (tubes with a double membrane and cristae), vesicle
  clusters at synapses, and look-alikes (dark ellipsoids, ER strands).
* :class:`Appearance` decides *how it looks*: polarity, contrast, gamma,
  texture, blur and noise.

So ``dataclasses.replace(domain, appearance=...)`` keeps the masks identical and
replacing only the geometry keeps the look.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from domadapt.data.synthetic_cache import cached, volume_key
from domadapt.data.synthetic_cell import CellGeometry
from domadapt.data.synthetic_geometry import Geometry, Scene, rng_stream, smooth_noise
from domadapt.data.synthetic_shift import farther
from domadapt.data.volume import Volume
from domadapt.errors import ConfigError, DataError

#: Default (z, y, x) shape of a synthetic volume in voxels.
DEFAULT_SHAPE = (24, 384, 384)  # for render(); make_volume uses default_shape()
#: Default synthetic volume: this many slices over a square field of view (nm).
DEFAULT_SLICES, DEFAULT_FIELD_NM = 20, 3200.0
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Appearance:
    """Imaging model mapping stain (0 = cytoplasm, 1 = heavily stained) to grey levels.

    ``polarity`` "dark" shows stained structures dark (TEM, most SEM); "bright"
    inverts the image so mitochondria are brighter than cytoplasm. A negative
    stain is lighter than cytoplasm. ``noise_level`` is the noise std at full
    brightness (for "poisson": 1/sqrt(photons)).
    """

    polarity: str = "dark"
    background: float = 0.68
    contrast: float = 0.6
    gamma: float = 1.0
    membrane_stain: float = 0.85
    mito_stain: float = 0.5
    mito_rim_stain: float = 0.8
    cristae_stain: float = -0.3
    blob_stain: float = 0.6
    er_stain: float = 0.45
    vesicle_stain: float = -0.1
    vesicle_rim_stain: float = 0.5
    cell_tone: float = 0.08
    nucleus_stain: float = 0.12  # nucleoplasm (euchromatin); only cultured-cell fields have one
    chromatin_stain: float = 0.5  # heterochromatin clumps and nucleoli, on top of nucleoplasm
    lipid_stain: float = 0.75
    texture: float = 0.1
    texture_scale_nm: float = 15.0
    noise: str = "gaussian"
    noise_level: float = 0.05
    blur_px: float = 0.8
    slice_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.polarity not in ("dark", "bright"):
            raise ConfigError(f"Polarity must be 'dark' or 'bright', got {self.polarity!r}.")
        if self.noise not in ("gaussian", "poisson"):
            raise ConfigError(f"Noise must be 'gaussian' or 'poisson', got {self.noise!r}.")


@dataclass(frozen=True)
class SyntheticDomain:
    """A named imaging domain: a geometry seen through an appearance."""

    name: str
    geometry: Geometry
    appearance: Appearance
    description: str = ""
    field_nm: float = DEFAULT_FIELD_NM  # y/x field of view of a default volume


def _over(stain: np.ndarray, value, alpha: np.ndarray) -> np.ndarray:
    """Composite a structure of stain ``value`` and coverage ``alpha`` over the stain so far."""
    return stain + alpha * (value - stain)


def _stain(scene: Scene, app: Appearance, rng) -> np.ndarray:
    """Stain density map: what the sample looks like before the microscope."""
    sigma = np.maximum(app.texture_scale_nm / np.array(scene.voxel_size_nm) / 2, 0.3)
    fine = smooth_noise(scene.mask.shape, sigma, rng)
    specks = np.clip(fine - 1.8, 0, None)  # sparse dark granules (ribosomes, glycogen)
    tex = 0.6 * fine + 0.4 * smooth_noise(scene.mask.shape, sigma * 8, rng) + 2 * specks
    s = app.texture * tex + app.cell_tone * scene.tone
    s = _over(s, app.membrane_stain, scene.membrane)
    s = _over(s, app.blob_stain + 0.5 * s, scene.blob)
    s = _over(s, app.er_stain, scene.er)
    s = _over(s, app.vesicle_stain, np.clip((scene.vesicle - 0.25) / 0.2, 0, 1))
    s = _over(s, app.vesicle_rim_stain, np.exp(-(((scene.vesicle - 0.12) / 0.12) ** 2)))
    if scene.nucleus is not None:
        nucleus = app.nucleus_stain + app.chromatin_stain * scene.chromatin + 0.5 * app.texture * tex
        s = _over(s, nucleus, scene.nucleus)
        s = _over(s, app.membrane_stain, scene.envelope)
        s = _over(s, app.lipid_stain + 0.2 * app.texture * tex, scene.lipid)
    mito = app.mito_stain + app.cristae_stain * scene.cristae + 0.6 * app.texture * tex
    return _over(np.where(scene.mask, mito, s), app.mito_rim_stain, scene.mito_rim)


def paint(scene: Scene, appearance: Appearance, seed: int = 0) -> np.ndarray:
    """Image a scene (stain, grey levels, gamma, blur, noise) as uint8; uses its own stream."""
    app, rng = appearance, rng_stream(seed, 2)
    img = app.background - app.contrast * _stain(scene, app, rng)
    img += app.slice_jitter * rng.standard_normal((img.shape[0], 1, 1), dtype=np.float32)
    if app.polarity == "bright":
        img = 1 - img
    img = np.clip(img, 0, 1) ** app.gamma
    if app.blur_px > 0:
        img = ndimage.gaussian_filter(img, (0, app.blur_px, app.blur_px))
    if app.noise == "poisson":
        photons = 1 / max(app.noise_level, 1e-3) ** 2
        img = rng.poisson(np.clip(img, 0, None) * photons) / photons
    else:
        img = img + app.noise_level * rng.standard_normal(img.shape, np.float32)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def render(domain: SyntheticDomain, shape: tuple[int, int, int] = DEFAULT_SHAPE,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render (image uint8, mask uint8 {0,1}); the mask depends on geometry, shape, seed only."""
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise DataError(f"A synthetic shape must be three positive ints z,y,x, got {shape!r}.")
    scene = domain.geometry.build(dims, seed)  # type: ignore[arg-type]
    return paint(scene, domain.appearance, seed), scene.mask.astype(np.uint8)


SYNTHETIC_DOMAINS: dict[str, SyntheticDomain] = {d.name: d for d in (
    SyntheticDomain(
        "synth-hippocampus", Geometry(), Appearance(),
        "Lucchi++-like FIB-SEM: 5 nm isotropic, large dark mitochondria often lying in the "
        "section, moderate Gaussian noise."),
    SyntheticDomain(
        "synth-cortex",
        Geometry(voxel_size_nm=(30.0, 3.0, 3.0), cell_diameter_nm=800.0, membrane_nm=20.0,
                 neurite_axis=(1.0, 0.4, 0.2),
                 mito_fraction=0.06, mito_width_nm=(150.0, 350.0),
                 mito_length_nm=(300.0, 1200.0), mito_rim_nm=12.0, cristae_period_nm=35.0,
                 vesicle_clusters_per_um3=25.0),
        Appearance(background=0.75, contrast=0.7, gamma=0.7, membrane_stain=0.9, mito_stain=0.45,
                   mito_rim_stain=0.7, cristae_stain=0.2, blob_stain=0.55, cell_tone=0.05,
                   texture=0.06, texture_scale_nm=30.0, noise_level=0.04, blur_px=1.0,
                   slice_jitter=0.02),
        "Kasthuri++-like ssSEM: 30x3x3 nm anisotropic, smaller mitochondria, smooth bright "
        "background, gamma < 1."),
    SyntheticDomain(
        "synth-vnc",
        Geometry(voxel_size_nm=(45.0, 4.6, 4.6), cell_diameter_nm=900.0, membrane_nm=22.0,
                 cell_elongation=3.0, neurite_axis=(1.0, 0.1, 0.1), mito_fraction=0.08,
                 mito_width_nm=(150.0, 350.0), mito_length_nm=(300.0, 1500.0),
                 vesicle_clusters_per_um3=25.0, vesicles_per_cluster=(40, 120),
                 blobs_per_um3=4.0, er_per_um3=50.0),
        Appearance(background=0.78, contrast=0.65, gamma=1.2, membrane_stain=0.95,
                   mito_stain=0.6, mito_rim_stain=0.9, cristae_stain=-0.35, blob_stain=0.65,
                   vesicle_stain=-0.3, vesicle_rim_stain=0.8, cell_tone=0.1, texture=0.16,
                   texture_scale_nm=12.0, noise="poisson", noise_level=0.08, blur_px=1.6,
                   slice_jitter=0.03),
        "Drosophila VNC-like ssTEM: 45x4.6x4.6 nm, neurites across the sections, Poisson "
        "noise, strong blur, light busy background, many vesicles."),
    SyntheticDomain(
        "synth-cell", CellGeometry(),
        Appearance(background=0.74, contrast=0.7, gamma=1.1, membrane_stain=0.8, mito_stain=0.55,
                   mito_rim_stain=0.85, cristae_stain=-0.25, blob_stain=0.6, er_stain=0.6,
                   vesicle_stain=0.05, vesicle_rim_stain=0.6, cell_tone=0.3, texture=0.12,
                   texture_scale_nm=25.0, nucleus_stain=0.3, chromatin_stain=0.45,
                   lipid_stain=0.8, noise_level=0.07, blur_px=0.9, slice_jitter=0.02),
        "Cultured-cell SBF-SEM: 40x10x10 nm, one flat cell over an 8 µm field with a large "
        "nucleus (chromatin clumps, nucleoli, envelope with pores), lipid droplets, lysosomes, "
        "ER sheets and Golgi stacks; only mitochondria are labeled.", field_nm=8000.0),
    SyntheticDomain(
        "synth-cell-tem",
        CellGeometry(voxel_size_nm=(50.0, 8.0, 8.0), cell_radius_nm=(3600.0, 4600.0),
                     nucleus_radius_nm=(1800.0, 2500.0), nucleus_height_nm=1600.0,
                     mito_width_nm=(180.0, 380.0), mito_length_nm=(500.0, 2500.0),
                     mito_fraction=0.06, lipid_per_um3=0.4, lipid_radius_nm=(120.0, 350.0),
                     blobs_per_um3=0.6, er_sheets_per_um3=0.7, golgi_per_um3=0.06),
        Appearance(background=0.8, contrast=0.75, gamma=0.85, membrane_stain=0.9, mito_stain=0.6,
                   mito_rim_stain=0.9, cristae_stain=-0.35, blob_stain=0.7, er_stain=0.7,
                   vesicle_stain=-0.1, vesicle_rim_stain=0.7, cell_tone=0.2, texture=0.08,
                   texture_scale_nm=20.0, nucleus_stain=0.08, chromatin_stain=0.7,
                   lipid_stain=0.45, noise="poisson", noise_level=0.09, blur_px=1.3,
                   slice_jitter=0.03),
        "Another cell and stain, TEM-like: 50x8x8 nm, smaller mitochondria with light "
        "cristae, a pale nucleus with dark heterochromatin, grey lipid droplets, Poisson "
        "noise; a labeled source with large look-alikes for cultured-cell targets.",
        field_nm=6400.0),
)}

#: The synthetic grid's pairs (configs/benchmarks/synthetic.yaml), one cycle of the three
#: tissue domains. Source-only sits near its ceiling on them (0.87-0.95), so each target also
#: comes moved twice as far from its grid source, ``<target>-x2`` (synthetic_shift.farther),
#: where source-only drops to about 0.56 and recipes and methods can differ
#: (docs/results/recipe/, thirteenth decision; configs/benchmarks/synthetic-harder.yaml).
GRID_PAIRS = (("synth-cortex", "synth-vnc"), ("synth-hippocampus", "synth-cortex"),
              ("synth-vnc", "synth-hippocampus"))
HARDER_DOMAINS = tuple(farther(SYNTHETIC_DOMAINS[s], SYNTHETIC_DOMAINS[t], 2) for s, t in GRID_PAIRS)
SYNTHETIC_DOMAINS.update({d.name: d for d in HARDER_DOMAINS})


def default_shape(domain: SyntheticDomain) -> tuple[int, int, int]:
    """DEFAULT_SLICES slices covering the domain's field of view in y and x at its voxel size.

    A fixed physical field of view (not a fixed pixel count) keeps the amount of
    tissue, and so the number of mitochondria, comparable across domains.
    """
    _, vy, vx = domain.geometry.voxel_size_nm
    return DEFAULT_SLICES, round(domain.field_nm / vy), round(domain.field_nm / vx)


def domain_names() -> list[str]:
    """Names accepted by :func:`get_domain` and :func:`make_volume`."""
    return list(SYNTHETIC_DOMAINS)


def get_domain(name: str) -> SyntheticDomain:
    """Look up a named domain; an unknown name is a one-sentence DataError listing valid ones."""
    try:
        return SYNTHETIC_DOMAINS[name]
    except (KeyError, TypeError):
        raise DataError(f"Unknown synthetic domain {name!r}; valid names are "
                        f"{', '.join(domain_names())}.") from None


def make_volume(name_or_domain: str | SyntheticDomain, split: str = "train",
                shape: tuple[int, int, int] | None = None, seed: int = 0) -> Volume:
    """A labeled synthetic volume, deterministic in (domain name, split, seed).

    The split enters the seed so train and test volumes never coincide; the
    domain's name (not its parameters) enters it so a domain modified with
    ``dataclasses.replace`` keeps its layout or its look.
    """
    domain = (name_or_domain if isinstance(name_or_domain, SyntheticDomain)
              else get_domain(name_or_domain))
    if split not in _SPLITS:
        raise DataError(f"Unknown split {split!r}; valid splits are {', '.join(_SPLITS)}.")
    digest = hashlib.sha256(f"{domain.name}|{split}|{int(seed)}".encode()).digest()
    shape = default_shape(domain) if shape is None else shape
    key = volume_key(domain, split, int(seed), shape)
    image, mask = cached(key, lambda: render(domain, shape, int.from_bytes(digest[:8], "little")))
    return Volume(image, mask, domain.geometry.voxel_size_nm, f"{domain.name}:{split}:{seed}")
