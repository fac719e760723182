"""Procedural EM-like domains with exact mitochondria masks.

Real EM datasets need downloads and their domain shift cannot be dialled up or
down; these synthetic domains are the package's embedded default dataset and
make tests fast. A volume is built in two independent stages:

* :class:`Geometry` (physical units, nm) decides *what is where*: Voronoi cells
  with wobbly membranes, mitochondria (tubes with a double membrane and
  cristae), vesicle clusters and mitochondria look-alikes (dark blobs, ER).
* :class:`Appearance` decides *how it looks*: polarity, contrast, gamma,
  texture, blur and noise.

Both stages draw from separate random streams of the same seed, so swapping
only the appearance of a domain (``dataclasses.replace(d, appearance=...)``)
keeps the masks identical and swapping only the geometry keeps the look.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from domadapt.data.volume import Volume, check_voxel_size
from domadapt.errors import ConfigError, DataError

#: Default (z, y, x) shape of a synthetic volume in voxels.
DEFAULT_SHAPE = (24, 384, 384)
_GAP_NM = 12.0  # minimum clearance between objects and from cell membranes
Range = tuple[float, float]


@dataclass(frozen=True)
class Geometry:
    """Physical layout of a domain; every length is in nm so pixel sizes follow the voxel size.

    Mitochondria are specified by a target volume fraction rather than a count
    density: the fraction is what sets class balance, and it stays stable on
    thin slabs where a count density would give wildly varying foreground.
    """

    voxel_size_nm: tuple[float, float, float] = (5.0, 5.0, 5.0)
    cell_diameter_nm: float = 800.0
    cell_elongation: float = 1.5
    membrane_nm: float = 16.0
    membrane_wobble_nm: float = 70.0
    mito_fraction: float = 0.07
    mito_width_nm: Range = (200.0, 500.0)
    mito_length_nm: Range = (400.0, 2000.0)
    mito_rim_nm: float = 14.0
    cristae_period_nm: float = 40.0
    vesicle_clusters_per_um3: float = 4.0
    vesicles_per_cluster: tuple[int, int] = (10, 40)
    vesicle_radius_nm: Range = (17.0, 23.0)
    blobs_per_um3: float = 3.0
    blob_radius_nm: Range = (90.0, 220.0)
    er_per_um3: float = 8.0
    er_radius_nm: float = 15.0


@dataclass(frozen=True)
class Appearance:
    """Imaging model: maps stain (0 = cytoplasm, 1 = heavily stained) to grey levels.

    ``polarity`` "dark" renders stained structures dark (TEM, most SEM);
    "bright" inverts the image so mitochondria are brighter than cytoplasm.
    Stains are relative; a negative stain is lighter than cytoplasm.
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


@dataclass
class Scene:
    """Appearance-free rendering of a geometry: per-voxel structure fields."""

    mask: np.ndarray  # bool, inside mitochondria
    membrane: np.ndarray  # 0..1 cell-membrane profile
    tone: np.ndarray  # -1..1 per-cell cytoplasm tone
    mito_rim: np.ndarray  # 0..1 mitochondrial double membrane
    cristae: np.ndarray  # 0..1 cristae stripes
    blob: np.ndarray  # 0..1 dark non-mitochondrial organelles
    er: np.ndarray  # 0..1 ER strands
    vesicle: np.ndarray  # 1 - distance/radius of the nearest vesicle (<0 outside)
    voxel_size_nm: tuple[float, float, float]


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**64, stream])


def _smooth_noise(shape: tuple[int, ...], sigma, rng) -> np.ndarray:
    """Unit-variance Gaussian-filtered 3D noise: a cheap stand-in for natural variability.

    Wide filters run on a grid subsampled in y/x and are interpolated back,
    which looks the same and costs a fraction of full-resolution filtering.
    """
    step = int(np.clip(min(sigma[1], sigma[2]) // 2, 1, 8))
    small = shape if step == 1 else (shape[0],) + tuple((n - 1) // step + 2 for n in shape[1:])
    sig = [min(s / k, n) for s, k, n in zip(sigma, (1, step, step), small)]
    a = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sig)
    if step > 1:
        a = _upsample(a, shape, (1, step, step))
    return a / max(float(a.std()), 1e-6)


def _axis(n: int, step: float, axis: int, start: int = 0, stride: int = 1) -> np.ndarray:
    """Physical coordinates (float32) of voxels along one axis, shaped to broadcast in 3D."""
    coords = np.arange(start, n, stride, dtype=np.float32) * np.float32(step)
    return coords.reshape([-1 if k == axis else 1 for k in range(3)])


def _upsample(a: np.ndarray, shape, steps, nearest: bool = False) -> np.ndarray:
    """Linear (or nearest) interpolation from a coarse grid with ``steps`` to full resolution."""
    for axis, (n, step) in enumerate(zip(shape, steps)):
        pos = np.arange(n) / step
        if step == 1 or nearest:
            a = np.take(a, np.rint(pos).astype(int), axis)
            continue
        i = pos.astype(int)
        w = (pos - i).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(3)])
        a0, a1 = np.take(a, i, axis), np.take(a, i + 1, axis)
        a = a0 + (a1 - a0) * w
    return a


def _walls(pos, pairs, seeds, weights) -> tuple[np.ndarray, np.ndarray]:
    """Exact distance to the weighted-Voronoi wall between each voxel's two candidate cells.

    The weighted distance difference e_b - e_a is divided by its gradient norm,
    which turns it into a distance in nm; also returns which cell owns the voxel.
    """
    e, u = [], []
    for lbl in pairs:
        vec = [pk - seeds[:, k][lbl] for k, pk in enumerate(pos)]
        d = np.sqrt(sum(v * v for v in vec)) + np.float32(1e-3)
        e.append(d - weights[lbl])
        u.append([v / d for v in vec])
    grad = np.sqrt(sum((ub - ua) ** 2 for ua, ub in zip(*u)))
    wall = np.abs(e[1] - e[0]) / np.maximum(grad, 0.2)
    return wall, np.where(e[0] <= e[1], pairs[0], pairs[1])


class _Builder:
    """Places objects into one volume; holds the shared fields so each step stays small."""

    def __init__(self, geo: Geometry, shape: tuple[int, int, int], rng) -> None:
        self.geo, self.shape, self.rng = geo, shape, rng
        self.vox = np.array(check_voxel_size(geo.voxel_size_nm), dtype=float)
        self.extent = self.vox * np.array(shape)
        self.um3 = float(np.prod(self.extent)) * 1e-9
        z = np.zeros(shape, np.float32)
        self.mask = np.zeros(shape, bool)
        self.occupied = np.zeros(shape, bool)
        self.rim, self.cristae, self.blob, self.er = z, z.copy(), z.copy(), z.copy()

    # -- cells --------------------------------------------------------------------------
    def cells(self) -> None:
        """Distance (nm) to the nearest cell wall, membranes and per-cell tone.

        Cells are an additively weighted Voronoi diagram (curved walls, mixed
        sizes like axons next to dendrites) under a smooth random warp, stretched
        along z like neurites. Walls are exact on a half-resolution grid (see
        :meth:`candidates` for the coarse pass) and linearly interpolated.
        """
        geo, rng = self.geo, self.rng
        mid = (max(1, round(2 * self.vox[1] / self.vox[0])), 2, 2)
        rel = (max(1, round(4 * self.vox[1] / self.vox[0] / mid[0])), 2, 2)
        mshape = tuple((n - 1) // m + 2 for n, m in zip(self.shape, mid))
        squash = np.array([1 / geo.cell_elongation, 1.0, 1.0])
        lo, hi = -geo.cell_diameter_nm * squash, self.extent * squash + geo.cell_diameter_nm
        n = rng.poisson(np.prod(hi - lo) / (np.pi / 6 * geo.cell_diameter_nm**3)) + 8
        seeds = rng.uniform(lo, hi, (n, 3)).astype(np.float32)
        weights = (geo.cell_diameter_nm * 0.5 * rng.random(n) ** 3).astype(np.float32)
        pairs, warp = self.candidates(seeds, weights, squash, mshape, mid, rel)
        pos = [(_axis(len_, float(v * m), k) + w) * float(q) for k, (len_, v, m, w, q)
               in enumerate(zip(mshape, self.vox, mid, warp, squash))]
        wall, owner = _walls(pos, pairs, seeds, weights)
        strength = 0.75 + 0.25 * _smooth_noise(mshape, (1.5, 6, 6), rng)
        tone = rng.uniform(-1, 1, n).astype(np.float32)[owner]
        self.memdist = _upsample(wall, self.shape, mid)
        self.tone = _upsample(tone, self.shape, mid)
        self.membrane = np.exp(-((self.memdist / (geo.membrane_nm / 2)) ** 2))
        self.membrane *= _upsample(strength, self.shape, mid)

    def candidates(self, seeds, weights, squash, mshape, mid, rel) -> tuple[list, list]:
        """The two nearest (weighted) cells per mid-grid voxel, from a coarse KD-tree pass.

        Also returns the random warp on the mid grid: the same warp must move both
        passes, or the candidate pairs would not match the walls they bound.
        """
        geo, cshape = self.geo, tuple((n - 1) // r + 2 for n, r in zip(mshape, rel))
        step = self.vox * mid * rel
        sigma = [geo.cell_diameter_nm / 3 / s for s in step]
        warp = [geo.membrane_wobble_nm * _smooth_noise(cshape, sigma, self.rng) for _ in range(3)]
        axes = [np.arange(c) * s for c, s in zip(cshape, step)]
        p = (np.stack(np.meshgrid(*axes, indexing="ij"), -1) + np.stack(warp, -1)) * squash
        _, idx = cKDTree(seeds).query(p.reshape(-1, 3), k=min(6, len(seeds)))
        e = np.sqrt(((p.reshape(-1, 1, 3) - seeds[idx]) ** 2).sum(-1)) - weights[idx]
        first = np.argmin(e, 1)
        e[np.arange(len(e)), first] = np.inf
        pairs = [np.take_along_axis(idx, k[:, None], 1).astype(np.int32).reshape(cshape)
                 for k in (first, np.argmin(e, 1))]
        return ([_upsample(k, mshape, rel, True) for k in pairs],
                [_upsample(w, mshape, rel) for w in warp])

    # -- geometry helpers ---------------------------------------------------------------
    def lookup(self, p: np.ndarray) -> float:
        """Membrane distance at a point; +inf outside the volume (no constraint there)."""
        i = np.floor(p / self.vox).astype(int)
        if np.any(i < 0) or np.any(i >= self.shape):
            return np.inf
        return float(self.memdist[tuple(i)])

    def site(self, clearance: float) -> np.ndarray | None:
        """A random free point at least ``clearance`` nm from any membrane, or None."""
        for _ in range(40):
            i = tuple(int(self.rng.integers(0, n)) for n in self.shape)
            if not self.occupied[i] and self.memdist[i] >= clearance:
                return (np.array(i) + self.rng.uniform(0, 1, 3)) * self.vox
        return None

    def box(self, pts: np.ndarray, reach: float, strides=(1, 1, 1)):
        """Slices and open physical coordinate grids of the voxels within ``reach`` of pts."""
        lo = np.maximum(np.floor((pts.min(0) - reach) / self.vox).astype(int), 0)
        hi = np.minimum(np.ceil((pts.max(0) + reach) / self.vox).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None, None
        sl = tuple(slice(a, b, s) for a, b, s in zip(lo, hi, strides))
        grids = [_axis(b, v, j, a, s) for j, (a, b, s, v) in enumerate(zip(lo, hi, strides, self.vox))]
        return sl, grids

    def clear(self, sl, region: np.ndarray) -> bool:
        """True when a region stays off occupied voxels and away from membranes."""
        if self.occupied[sl][region].any():
            return False
        return bool(self.memdist[sl][region].min(initial=np.inf) > self.geo.membrane_nm / 2)

    # -- objects ------------------------------------------------------------------------
    def mitochondria(self) -> None:
        """Add tubes grown inside cells until the target volume fraction is reached."""
        target, filled = self.geo.mito_fraction * self.mask.size, 0
        for _ in range(300):
            if filled >= target:
                break
            filled += self.one_mito()

    def one_mito(self) -> int:
        """Try one mitochondrion; returns its voxel count (0 when it did not fit)."""
        geo, rng = self.geo, self.rng
        c = self.site(geo.mito_width_nm[0] / 2 + geo.membrane_nm + 2 * _GAP_NM)
        if c is None:
            return 0
        r = min(rng.uniform(*geo.mito_width_nm) / 2, self.lookup(c) - geo.membrane_nm - 2 * _GAP_NM)
        u = _unit(rng.standard_normal(3))
        ends = [self.grow(c, s * u, rng.uniform(*geo.mito_length_nm) / 2 - r, r) for s in (1, -1)]
        bend = np.cross(u, _unit(rng.standard_normal(3))) * rng.uniform(0, 0.15)
        pts = np.array([ends[1], c + bend * np.linalg.norm(ends[0] - ends[1]), ends[0]])
        sl, g = self.box(pts, 1.1 * r + _GAP_NM, (max(1, round(4 * self.vox[1] / self.vox[0])), 4, 4))
        if sl is None or not self.clear(sl, _polyline(g, pts)[0] < 1.1 * r + _GAP_NM):
            return 0  # cheap strided pre-check before the full-resolution one
        sl, g = self.box(pts, 1.1 * r + _GAP_NM + geo.mito_rim_nm)
        dist, axial = _polyline(g, pts)
        r = r * (1 + 0.1 * np.sin(axial / (0.5 * r) + rng.uniform(0, 2 * np.pi)))
        if not self.clear(sl, dist < r + _GAP_NM):
            return 0
        return self.draw_mito(sl, g, dist, axial, r, pts[1], u)

    def draw_mito(self, sl, g, dist, axial, r, c, u) -> int:
        """Write mask, double membrane and cristae (tilted lamellae across the long axis)."""
        geo, rng = self.geo, self.rng
        inside, depth, w = dist < r, r - dist, geo.mito_rim_nm / 2
        np.maximum(self.rim[sl], np.exp(-(((depth - w) / w) ** 2)), out=self.rim[sl])
        v = _unit(np.cross(u, rng.standard_normal(3)))
        tilt = rng.uniform(0.15, 0.6)
        across = sum((gk - ck) * vk for gk, ck, vk in zip(g, c, v))
        phase = 2 * np.pi * (axial * np.cos(tilt) + across * np.sin(tilt)) / geo.cristae_period_nm
        stripes = np.clip((np.cos(phase + rng.uniform(0, 6.3)) - 0.5) / 0.5, 0, 1)
        stripes *= depth > 1.5 * geo.mito_rim_nm
        self.cristae[sl] = np.where(inside, stripes, self.cristae[sl])
        self.mask[sl] |= inside
        self.occupied[sl] |= dist < r + _GAP_NM
        return int(inside.sum())

    def grow(self, c: np.ndarray, u: np.ndarray, half: float, r: float) -> np.ndarray:
        """Extend an axis from c along u while the tube of radius r stays in its cell."""
        step, reach = max(r / 2, 10.0), 0.0
        while reach + step <= half:
            if self.lookup(c + (reach + step) * u) < 1.1 * r + self.geo.membrane_nm + 2 * _GAP_NM:
                break
            reach += step
        return c + reach * u

    def blobs(self) -> None:
        """Dark irregular organelles (lysosome-like): mitochondria look-alikes without cristae."""
        geo = self.geo
        for _ in range(self.rng.poisson(geo.blobs_per_um3 * self.um3)):
            c = self.site(geo.blob_radius_nm[0] + geo.membrane_nm + _GAP_NM)
            if c is None:
                continue
            r = min(self.rng.uniform(*geo.blob_radius_nm), self.lookup(c) - geo.membrane_nm)
            subs = c + self.rng.normal(0, 0.3 * r, (3, 3))
            radii = r * self.rng.uniform(0.55, 0.8, 3)
            sl, g = self.box(subs, r + _GAP_NM)
            if sl is None:
                continue
            sd = np.min([np.sqrt(sum((gk - pk) ** 2 for gk, pk in zip(g, p))) - rk
                         for p, rk in zip(subs, radii)], axis=0)
            if self.clear(sl, sd < _GAP_NM):
                np.maximum(self.blob[sl], np.clip(0.5 - sd / 8.0, 0, 1), out=self.blob[sl])
                self.occupied[sl] |= sd < _GAP_NM

    def endoplasmic_reticulum(self) -> None:
        """Thin dark strands (random walks) that add dark, non-mitochondrial texture."""
        geo, rng = self.geo, self.rng
        r = geo.er_radius_nm
        for _ in range(rng.poisson(geo.er_per_um3 * self.um3)):
            p = self.site(r + geo.membrane_nm + _GAP_NM)
            u = _unit(rng.standard_normal(3))
            for _seg in range(int(rng.integers(3, 9)) if p is not None else 0):
                u = _unit(u + rng.normal(0, 0.6, 3))
                q = p + u * rng.uniform(100, 250)
                sl, g = self.box(np.array([p, q]), r + 10)
                if sl is None or self.lookup(q) < r + geo.membrane_nm:
                    break
                dist, _ = _polyline(g, np.array([p, q]))
                if self.occupied[sl][dist < r].any():
                    break
                np.maximum(self.er[sl], np.clip((r - dist) / 6.0 + 0.5, 0, 1), out=self.er[sl])
                p = q

    def vesicles(self) -> np.ndarray:
        """Clusters of small round vesicles (synaptic boutons), rendered as stamps."""
        geo, rng, centers = self.geo, self.rng, []
        for _ in range(rng.poisson(geo.vesicle_clusters_per_um3 * self.um3)):
            c = self.site(150.0)
            if c is not None:
                n = int(rng.integers(*geo.vesicles_per_cluster))
                centers.append(c + rng.normal(0, 0.4 * self.lookup(c), (n, 3)))
        if not centers:
            return np.full(self.shape, -1.0, np.float32)
        pts = np.concatenate(centers)
        rmax = geo.vesicle_radius_nm[1]
        close = {j for _, j in cKDTree(pts).query_pairs(2 * rmax)}
        keep = [k for k, p in enumerate(pts) if k not in close
                and self.lookup(p) > rmax + geo.membrane_nm]
        pts = pts[keep]
        idx = np.clip(np.floor(pts / self.vox).astype(int), 0, np.array(self.shape) - 1)
        pts = pts[~self.occupied[tuple(idx.T)]] if len(pts) else pts
        radii = rng.uniform(*geo.vesicle_radius_nm, len(pts))
        return _stamp_spheres(pts, radii, self.shape, self.vox)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _polyline(g: list[np.ndarray], pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to a polyline and arc-length position of the nearest point, over a box."""
    best = axial = None
    offset = 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        length = max(float(np.linalg.norm(b - a)), 1e-6)
        u = (b - a) / length
        rel = [gk - ak for gk, ak in zip(g, a)]
        t = np.clip(sum(rk * uk for rk, uk in zip(rel, u)), 0, length)
        dist = np.sqrt(sum((rk - t * uk) ** 2 for rk, uk in zip(rel, u)))
        if best is None:
            best, axial = dist, t
        else:
            closer = dist < best
            best, axial = np.where(closer, dist, best), np.where(closer, t + offset, axial)
        offset += length
    return best, axial


def _stamp_spheres(centers, radii, shape, vox) -> np.ndarray:
    """Max over spheres of 1 - distance/radius, vectorised over all spheres at once."""
    out = np.full(int(np.prod(shape)), -1.0, np.float32)
    if len(centers):
        half = np.ceil(1.6 * radii.max() / vox).astype(int)
        base = np.floor(centers / vox).astype(int)
        idx = [base[:, k, None] + np.arange(-half[k], half[k] + 1) for k in range(3)]
        off = [idx[k] * vox[k] + vox[k] / 2 - centers[:, k, None] for k in range(3)]
        ok = [(i >= 0) & (i < n) for i, n in zip(idx, shape)]
        sh = [(-1, idx[0].shape[1], 1, 1), (-1, 1, idx[1].shape[1], 1),
              (-1, 1, 1, idx[2].shape[1])]
        d = np.sqrt(sum(o.reshape(s) ** 2 for o, s in zip(off, sh)))
        val = 1 - d / radii[:, None, None, None]
        valid = ok[0].reshape(sh[0]) & ok[1].reshape(sh[1]) & ok[2].reshape(sh[2]) & (val > -1)
        flat = sum(np.clip(i, 0, n - 1).reshape(s) * m for i, n, s, m in
                   zip(idx, shape, sh, (shape[1] * shape[2], shape[2], 1)))
        flat = np.broadcast_to(flat, val.shape)
        np.maximum.at(out, flat[valid], val[valid].astype(np.float32))
    return out.reshape(shape)


def build_scene(geometry: Geometry, shape: tuple[int, int, int], seed: int = 0) -> Scene:
    """Lay out cells and organelles; depends only on geometry, shape and seed."""
    b = _Builder(geometry, shape, _rng(seed, 1))
    b.cells()
    b.blobs()
    b.mitochondria()
    b.endoplasmic_reticulum()
    vesicle = b.vesicles()
    return Scene(b.mask, b.membrane, b.tone, b.rim, b.cristae, b.blob, b.er, vesicle,
                 tuple(b.vox))


def _over(stain: np.ndarray, value, alpha: np.ndarray) -> np.ndarray:
    """Composite a structure of given stain with coverage alpha over the current stain."""
    return stain + alpha * (value - stain)


def _stain(scene: Scene, app: Appearance, rng) -> np.ndarray:
    """Stain density map: what the sample looks like before the microscope."""
    vox = np.array(scene.voxel_size_nm)
    sigma = np.maximum(app.texture_scale_nm / vox / 2, 0.3)
    fine = _smooth_noise(scene.mask.shape, sigma, rng)
    specks = np.clip(fine - 1.8, 0, None)  # sparse dark granules (ribosomes, glycogen)
    tex = 0.6 * fine + 0.4 * _smooth_noise(scene.mask.shape, sigma * 8, rng) + 2 * specks
    s = app.texture * tex + app.cell_tone * scene.tone
    s = _over(s, app.membrane_stain, scene.membrane)
    s = _over(s, app.blob_stain + 0.5 * s, scene.blob)
    s = _over(s, app.er_stain, scene.er)
    v = scene.vesicle
    s = _over(s, app.vesicle_stain, np.clip((v - 0.25) / 0.2, 0, 1))
    s = _over(s, app.vesicle_rim_stain, np.exp(-((v - 0.12) / 0.12) ** 2))
    mito = app.mito_stain + app.cristae_stain * scene.cristae + 0.6 * app.texture * tex
    s = np.where(scene.mask, mito, s)
    return _over(s, app.mito_rim_stain, scene.mito_rim)


def paint(scene: Scene, appearance: Appearance, seed: int = 0) -> np.ndarray:
    """Image a scene: stain -> grey levels -> gamma -> blur -> noise -> uint8."""
    app, rng = appearance, _rng(seed, 2)
    img = app.background - app.contrast * _stain(scene, app, rng)
    img += app.slice_jitter * rng.standard_normal((img.shape[0], 1, 1))
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


def _check_shape(shape: object) -> tuple[int, int, int]:
    try:
        dims = tuple(int(n) for n in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise DataError(f"A synthetic shape must be three positive ints z,y,x, got {shape!r}.")
    return dims  # type: ignore[return-value]


def render(domain: SyntheticDomain, shape: tuple[int, int, int] = DEFAULT_SHAPE,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render (image uint8, mask uint8 {0,1}); masks depend only on geometry, shape and seed."""
    scene = build_scene(domain.geometry, _check_shape(shape), seed)
    return paint(scene, domain.appearance, seed), scene.mask.astype(np.uint8)


SYNTHETIC_DOMAINS: dict[str, SyntheticDomain] = {
    d.name: d
    for d in (
        SyntheticDomain(
            "synth-hippocampus",
            Geometry(),
            Appearance(),
            "Lucchi++-like FIB-SEM: 5 nm isotropic, large dark mitochondria, moderate noise.",
        ),
        SyntheticDomain(
            "synth-cortex",
            Geometry(voxel_size_nm=(30.0, 3.0, 3.0), cell_diameter_nm=900.0, membrane_nm=20.0,
                     mito_fraction=0.06, mito_width_nm=(150.0, 350.0),
                     mito_length_nm=(300.0, 1200.0), mito_rim_nm=12.0, cristae_period_nm=35.0,
                     vesicle_clusters_per_um3=6.0, blobs_per_um3=3.0, er_per_um3=10.0),
            Appearance(background=0.75, contrast=0.7, gamma=0.7, membrane_stain=0.9,
                       mito_stain=0.45, mito_rim_stain=0.7, cristae_stain=0.2, blob_stain=0.55,
                       cell_tone=0.05, texture=0.06, texture_scale_nm=30.0, noise_level=0.04,
                       blur_px=1.0, slice_jitter=0.02),
            "Kasthuri++-like ssSEM: 30x3x3 nm anisotropic, smaller denser mitochondria, "
            "smooth background, brighter gamma.",
        ),
        SyntheticDomain(
            "synth-vnc",
            Geometry(voxel_size_nm=(45.0, 4.6, 4.6), cell_diameter_nm=800.0, membrane_nm=22.0,
                     mito_fraction=0.08, mito_width_nm=(180.0, 450.0),
                     mito_length_nm=(300.0, 1500.0), vesicle_clusters_per_um3=12.0,
                     vesicles_per_cluster=(20, 60), blobs_per_um3=3.0, er_per_um3=12.0),
            Appearance(background=0.78, contrast=0.65, gamma=1.2, membrane_stain=0.95,
                       mito_stain=0.6, mito_rim_stain=0.9, cristae_stain=-0.35, blob_stain=0.65,
                       cell_tone=0.1, texture=0.16, texture_scale_nm=12.0, noise="poisson",
                       noise_level=0.08, blur_px=1.6, slice_jitter=0.03),
            "Drosophila VNC-like ssTEM: 45x4.6x4.6 nm, Poisson noise, strong blur, "
            "light busy background, many vesicles.",
        ),
    )
}


def domain_names() -> list[str]:
    """Names accepted by :func:`get_domain` and :func:`make_volume`."""
    return list(SYNTHETIC_DOMAINS)


def get_domain(name: str) -> SyntheticDomain:
    """Look up a named domain, raising a one-sentence DataError listing the valid names."""
    try:
        return SYNTHETIC_DOMAINS[name]
    except (KeyError, TypeError):
        raise DataError(
            f"Unknown synthetic domain {name!r}; valid names are {', '.join(domain_names())}."
        ) from None


_SPLIT_SEEDS = ("train", "val", "test")


def make_volume(name_or_domain: str | SyntheticDomain, split: str = "train",
                shape: tuple[int, int, int] | None = None, seed: int = 0) -> Volume:
    """A labeled synthetic volume, deterministic in (domain name, split, seed).

    The split enters the seed so train and test volumes of a domain never
    coincide; the domain's name (not its parameters) enters it so a domain
    modified with ``dataclasses.replace`` keeps its layout.
    """
    domain = (name_or_domain if isinstance(name_or_domain, SyntheticDomain)
              else get_domain(name_or_domain))
    if split not in _SPLIT_SEEDS:
        raise DataError(f"Unknown split {split!r}; valid splits are {', '.join(_SPLIT_SEEDS)}.")
    key = f"{domain.name}|{split}|{int(seed)}".encode()
    derived = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    image, mask = render(domain, DEFAULT_SHAPE if shape is None else shape, derived)
    return Volume(image, mask, domain.geometry.voxel_size_nm, f"{domain.name}:{split}:{seed}")
