"""Geometry of the synthetic EM domains: what is where, independent of how it looks.

Cells with wobbly membranes, mitochondria (bent tubes with a double membrane and
cristae), vesicle clusters at synapses and look-alike organelles are built as
appearance-free structure fields (a :class:`Scene`), with their own random
stream, so that two domains sharing a geometry and a seed share exact masks.
See :mod:`domadapt.data.synthetic` for the named domains and their imaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from domadapt.data.volume import check_voxel_size

GAP_NM = 12.0  # clearance between objects and from cell membranes
Range = tuple[float, float]


@dataclass(frozen=True)
class Geometry:
    """Physical layout of a domain; lengths in nm, so pixel sizes follow the voxel size.

    Mitochondria are given as a target volume fraction rather than a count
    density: the fraction sets class balance and stays stable on thin slabs,
    where a count density would make the foreground swing wildly.
    """

    voxel_size_nm: tuple[float, float, float] = (5.0, 5.0, 5.0)
    cell_diameter_nm: float = 600.0
    cell_elongation: float = 2.0  # neurites are longer along neurite_axis
    neurite_axis: tuple[float, float, float] = (0.3, 0.5, 1.0)  # (z, y, x)
    membrane_nm: float = 16.0
    membrane_wobble_nm: float = 70.0
    mito_fraction: float = 0.07
    mito_width_nm: Range = (200.0, 500.0)
    mito_length_nm: Range = (500.0, 2000.0)
    mito_alignment: float = 2.0  # 0: random directions, large: along neurite_axis
    mito_rim_nm: float = 14.0
    cristae_period_nm: float = 40.0
    vesicle_clusters_per_um3: float = 30.0
    vesicles_per_cluster: tuple[int, int] = (40, 150)
    vesicle_radius_nm: Range = (17.0, 23.0)
    blobs_per_um3: float = 8.0
    blob_radius_nm: Range = (60.0, 160.0)
    er_per_um3: float = 40.0
    er_radius_nm: float = 15.0

    def build(self, shape: tuple[int, int, int], seed: int) -> Scene:
        """Lay out this geometry; a subclass with another tissue layout overrides this."""
        return build_scene(self, shape, seed)


@dataclass
class Scene:
    """Appearance-free rendering of a geometry: per-voxel structure fields (float32 0..1)."""

    mask: np.ndarray  # bool, inside mitochondria
    membrane: np.ndarray  # cell membranes, thickened at synapses
    tone: np.ndarray  # -1..1 per-cell cytoplasm tone
    mito_rim: np.ndarray  # mitochondrial double membrane
    cristae: np.ndarray
    blob: np.ndarray  # dark non-mitochondrial organelles
    er: np.ndarray
    vesicle: np.ndarray  # 1 - distance/radius to the nearest vesicle (< 0 outside)
    voxel_size_nm: tuple[float, float, float]
    # Only in cultured-cell fields (domadapt.data.synthetic_cell); None elsewhere.
    nucleus: np.ndarray | None = None  # inside the nucleus
    chromatin: np.ndarray | None = None  # chromatin density inside the nucleus
    envelope: np.ndarray | None = None  # nuclear envelope, a double membrane with pores
    lipid: np.ndarray | None = None  # lipid droplets


def rng_stream(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**64, stream])


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def axis_coords(n: int, step: float, axis: int, start: int = 0, stride: int = 1) -> np.ndarray:
    """Physical coordinates (float32) of voxels along one axis, shaped to broadcast in 3D."""
    coords = np.arange(start, n, stride, dtype=np.float32) * np.float32(step)
    return coords.reshape([-1 if k == axis else 1 for k in range(3)])


def _upsample(a: np.ndarray, shape, steps, nearest: bool = False) -> np.ndarray:
    """Linear (or nearest) interpolation from a grid with ``steps`` to full resolution."""
    for axis, (n, step) in enumerate(zip(shape, steps)):
        pos = np.arange(n) / step
        if step == 1 or nearest:
            a = np.take(a, np.rint(pos).astype(int), axis)
            continue
        i = pos.astype(int)
        w = (pos - i).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(3)])
        a0 = np.take(a, i, axis)
        a = a0 + (np.take(a, i + 1, axis) - a0) * w
    return a


def smooth_noise(shape: tuple[int, ...], sigma, rng) -> np.ndarray:
    """Unit-variance Gaussian-filtered 3D noise, a cheap stand-in for natural variability.

    Wide filters run on a grid subsampled in y/x and are interpolated back:
    this looks the same and costs a fraction of full-resolution filtering.
    """
    step = int(np.clip(min(sigma[1], sigma[2]) // 2, 1, 8))
    small = shape if step == 1 else (shape[0],) + tuple((n - 1) // step + 2 for n in shape[1:])
    sig = [min(s / k, n) for s, k, n in zip(sigma, (1, step, step), small)]
    a = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sig)
    if step > 1:
        a = _upsample(a, shape, (1, step, step))
    return a / max(float(a.std()), 1e-6)


def _walls(pos, labels, seeds, weights) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest weighted-Voronoi wall among a few candidate cells, and owner.

    A weighted distance difference e_j - e_own divided by its gradient norm is
    the distance in nm to the wall between the two cells.
    """
    e, u = [], []
    for lbl in labels:
        vec = [pk - seeds[:, k][lbl] for k, pk in enumerate(pos)]
        d = np.sqrt(sum(v * v for v in vec)) + np.float32(1e-3)
        e.append(d - weights[lbl])
        u.append(np.stack([v / d for v in vec]))
    e, u = np.stack(e), np.stack(u)
    own = e.argmin(0)[None]
    grad = np.sqrt(((u - np.take_along_axis(u, own[:, None], 0)) ** 2).sum(1))
    wall = (e - np.take_along_axis(e, own, 0)) / np.maximum(grad, 0.2)
    wall[np.arange(len(e)).reshape(-1, 1, 1, 1) == own] = np.inf
    return wall.min(0), np.take_along_axis(np.stack(labels), own, 0)[0]


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


def stamp_spheres(centers: np.ndarray, radii: np.ndarray, shape, vox) -> np.ndarray:
    """Max over spheres of 1 - distance/radius, vectorised over all spheres at once."""
    out = np.full(int(np.prod(shape)), -1.0, np.float32)
    if len(centers):
        half = np.ceil(1.6 * radii.max() / vox).astype(int)
        base = np.rint(centers / vox).astype(int)
        idx, off, ok = [], [], []
        for k in range(3):
            i = base[:, k, None] + np.arange(-half[k], half[k] + 1)
            shape4 = [len(i), 1, 1, 1]
            shape4[k + 1] = i.shape[1]
            off.append((i * vox[k] - centers[:, k, None]).astype(np.float32).reshape(shape4))
            ok.append(((i >= 0) & (i < shape[k])).reshape(shape4))
            idx.append(np.clip(i, 0, shape[k] - 1).reshape(shape4))
        val = 1 - np.sqrt(sum(o * o for o in off)) / radii.astype(np.float32)[:, None, None, None]
        valid = ok[0] & ok[1] & ok[2] & (val > -1)
        flat = np.broadcast_to((idx[0] * shape[1] + idx[1]) * shape[2] + idx[2], val.shape)
        np.maximum.at(out, flat[valid], val[valid])
    return out.reshape(shape)


class Builder:
    """Places objects into one volume; holds the shared fields so each step stays small."""

    def __init__(self, geo: Geometry, shape: tuple[int, int, int], rng) -> None:
        self.geo, self.shape, self.rng = geo, shape, rng
        self.vox = np.array(check_voxel_size(geo.voxel_size_nm), dtype=float)
        self.extent = self.vox * np.array(shape)
        self.um3 = float(np.prod(self.extent)) * 1e-9
        self.mask, self.occupied = np.zeros(shape, bool), np.zeros(shape, bool)
        self.rim, self.cristae, self.blob, self.er = (np.zeros(shape, np.float32) for _ in "abcd")

    def cells(self) -> None:
        """Wall distance (nm), membranes and per-cell tone of the cells.

        Cells form an additively weighted Voronoi diagram (curved walls, mixed
        sizes like axons beside dendrites) under a smooth warp, stretched along
        ``neurite_axis``. Walls are exact on a half-resolution grid, then upsampled.
        """
        geo, rng = self.geo, self.rng
        mid = (max(1, round(2 * self.vox[1] / self.vox[0])), 2, 2)
        mshape = tuple((n - 1) // m + 2 for n, m in zip(self.shape, mid))
        axis = unit(np.array(geo.neurite_axis, float))[:, None]
        squash = np.eye(3) - (1 - 1 / geo.cell_elongation) * axis @ axis.T
        corners = np.array(np.meshgrid(*[[0, e] for e in self.extent])).reshape(3, -1).T @ squash
        lo, hi = corners.min(0) - geo.cell_diameter_nm, corners.max(0) + geo.cell_diameter_nm
        n = rng.poisson(np.prod(hi - lo) / (np.pi / 6 * geo.cell_diameter_nm**3)) + 8
        seeds = rng.uniform(lo, hi, (n, 3)).astype(np.float32)
        weights = (geo.cell_diameter_nm * 0.4 * rng.random(n) ** 3).astype(np.float32)
        labels, warp = self.candidates(seeds, weights, squash, mshape, mid)
        pos = [axis_coords(m, float(v * s), k) + w
               for k, (m, v, s, w) in enumerate(zip(mshape, self.vox, mid, warp))]
        pos = [sum(np.float32(q) * pk for q, pk in zip(row, pos)) for row in squash]
        wall, owner = _walls(pos, labels, seeds, weights)
        strength = 0.75 + 0.25 * smooth_noise(mshape, (1.5, 6, 6), rng)
        tone = rng.uniform(-1, 1, n).astype(np.float32)[owner]
        self.memdist = _upsample(wall, self.shape, mid)
        self.tone = _upsample(tone, self.shape, mid)
        self.membrane = np.exp(-((self.memdist / (geo.membrane_nm / 2)) ** 2))
        self.membrane *= _upsample(strength, self.shape, mid)

    def candidates(self, seeds, weights, squash, mshape, mid) -> tuple[list, list]:
        """The three nearest weighted cells per mid-grid voxel, from a coarse KD-tree pass.

        Also returns the warp on the mid grid: both passes must use the same warp
        or the candidates would not match the walls they bound.
        """
        rel = (max(1, round(8 * self.vox[1] / self.vox[0] / mid[0])), 4, 4)
        cshape = tuple((n - 1) // r + 2 for n, r in zip(mshape, rel))
        step = self.vox * mid * rel
        sigma = [self.geo.cell_diameter_nm / 3 / s for s in step]
        warp = [self.geo.membrane_wobble_nm * smooth_noise(cshape, sigma, self.rng)
                for _ in range(3)]
        axes = [np.arange(c) * s for c, s in zip(cshape, step)]
        p = (np.stack(np.meshgrid(*axes, indexing="ij"), -1) + np.stack(warp, -1)) @ squash
        p = p.astype(np.float32).reshape(-1, 1, 3)
        _, idx = cKDTree(seeds).query(p[:, 0], k=min(12, len(seeds)))
        e = np.sqrt(((p - seeds[idx]) ** 2).sum(-1)) - weights[idx]
        best = np.take_along_axis(idx, np.argpartition(e, 2, axis=1)[:, :3], 1).astype(np.int32)
        return ([_upsample(k.reshape(cshape), mshape, rel, True) for k in best.T],
                [_upsample(w, mshape, rel) for w in warp])

    def lookup(self, p: np.ndarray) -> float:
        """Membrane distance at a point; +inf outside the volume (no constraint there)."""
        i = np.rint(p / self.vox).astype(int)
        if np.any(i < 0) or np.any(i >= self.shape):
            return np.inf
        return float(self.memdist[tuple(i)])

    def site(self, clearance: float) -> np.ndarray | None:
        """A random free point at least ``clearance`` nm from any membrane, or None."""
        for _ in range(40):
            i = tuple(int(self.rng.integers(0, n)) for n in self.shape)
            if not self.occupied[i] and self.memdist[i] >= clearance:
                return (np.array(i) + self.rng.uniform(-0.5, 0.5, 3)) * self.vox
        return None

    def box(self, pts: np.ndarray, reach: float, coarse: bool = False):
        """Slices and coordinate grids of the voxels within ``reach`` nm of pts' bounding box.

        ``coarse`` takes every 4th voxel (in nm-equivalent steps along z) for cheap pre-checks.
        """
        strides = (max(1, round(4 * self.vox[1] / self.vox[0])), 4, 4) if coarse else (1, 1, 1)
        lo = np.maximum(np.floor((pts.min(0) - reach) / self.vox).astype(int), 0)
        hi = np.minimum(np.ceil((pts.max(0) + reach) / self.vox).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None, None
        sl = tuple(slice(a, b, s) for a, b, s in zip(lo, hi, strides))
        return sl, [axis_coords(b, v, k, a, s)
                    for k, (a, b, s, v) in enumerate(zip(lo, hi, strides, self.vox))]

    def clear(self, sl, region: np.ndarray) -> bool:
        """True when a region stays off occupied voxels and off cell membranes."""
        if self.occupied[sl][region].any():
            return False
        return bool(self.memdist[sl][region].min(initial=np.inf) > self.geo.membrane_nm / 2)

    def mitochondria(self) -> None:
        """Add tubes grown inside cells until the target volume fraction is reached.

        A candidate that would overshoot the target by half is dropped, so small
        volumes are not dominated by one huge mitochondrion.
        """
        target, filled = self.geo.mito_fraction * self.mask.size, 0
        for _ in range(300):
            if filled >= target:
                break
            filled += self.one_mito(1.5 * target - filled)

    def one_mito(self, budget: float) -> int:
        """Try one mitochondrion; returns its voxel count (0 when it did not fit)."""
        geo, rng = self.geo, self.rng
        margin = geo.membrane_nm + 2 * GAP_NM
        c = self.site(geo.mito_width_nm[0] / 2 + margin)
        if c is None:
            return 0
        r = min(rng.uniform(*geo.mito_width_nm) / 2, self.lookup(c) - margin)
        u = self.direction()
        ends = [self.grow(c, s * u, rng.uniform(*geo.mito_length_nm) / 2 - r, r) for s in (1, -1)]
        bend = np.cross(u, unit(rng.standard_normal(3))) * rng.uniform(0, 0.15)
        pts = np.array([ends[1], (ends[0] + ends[1]) / 2
                        + bend * np.linalg.norm(ends[0] - ends[1]), ends[0]])
        sl, g = self.box(pts, 1.1 * r + GAP_NM, coarse=True)
        if sl is None or not self.clear(sl, _polyline(g, pts)[0] < 1.1 * r + GAP_NM):
            return 0  # cheap strided pre-check before the full-resolution one
        sl, g = self.box(pts, 1.1 * r + GAP_NM + geo.mito_rim_nm)
        dist, axial = _polyline(g, pts)
        r = r * (1 + 0.06 * np.sin(axial / (0.5 * r) + rng.uniform(0, 2 * np.pi)))
        if not self.clear(sl, dist < r + GAP_NM) or np.count_nonzero(dist < r) > budget:
            return 0
        return self.draw_mito(sl, g, dist, axial, r, pts[1], u)

    def scene(self, vesicle: np.ndarray, **extra: np.ndarray) -> Scene:
        """The fields laid out so far as a Scene (``extra``: a subclass's own fields)."""
        return Scene(self.mask, self.membrane, self.tone, self.rim, self.cristae, self.blob,
                     self.er, vesicle, tuple(float(v) for v in self.vox), **extra)

    def direction(self) -> np.ndarray:
        """Long axis of a new mitochondrion: tilted towards the neurite axis."""
        geo = self.geo
        return unit(self.rng.standard_normal(3)
                     + geo.mito_alignment * unit(np.array(geo.neurite_axis)))

    def draw_mito(self, sl, g, dist, axial, r, c, u) -> int:
        """Write mask, double membrane and cristae (wavy lamellae across the long axis)."""
        geo, rng = self.geo, self.rng
        inside, depth, w = dist < r, r - dist, geo.mito_rim_nm / 2
        np.maximum(self.rim[sl], np.exp(-(((depth - w) / w) ** 2)), out=self.rim[sl])
        v, tilt = unit(np.cross(u, rng.standard_normal(3))), rng.uniform(0.15, 0.6)
        across = sum((gk - ck) * vk for gk, ck, vk in zip(g, c, v))
        wave = 0.25 * geo.cristae_period_nm * np.sin(across / (0.3 * r.max()) + rng.uniform(0, 7))
        phase = (axial * np.cos(tilt) + across * np.sin(tilt) + wave) / geo.cristae_period_nm
        stripes = np.clip((np.cos(2 * np.pi * phase + rng.uniform(0, 7)) - 0.5) / 0.5, 0, 1)
        stripes *= depth > 1.5 * geo.mito_rim_nm
        self.cristae[sl] = np.where(inside, stripes, self.cristae[sl])
        self.mask[sl] |= inside
        self.occupied[sl] |= dist < r + GAP_NM
        return int(inside.sum())

    def grow(self, c: np.ndarray, u: np.ndarray, half: float, r: float) -> np.ndarray:
        """Extend an axis from c along u while a tube of radius r stays inside its cell."""
        step, reach = max(r / 2, 10.0), 0.0
        while reach + step <= half:
            if self.lookup(c + (reach + step) * u) < 1.1 * r + self.geo.membrane_nm + 2 * GAP_NM:
                break
            reach += step
        return c + reach * u

    def blobs(self) -> None:
        """Dark ellipsoids (lysosome-like): mitochondria look-alikes without rim or cristae."""
        geo, rng = self.geo, self.rng
        for _ in range(rng.poisson(geo.blobs_per_um3 * self.um3)):
            c = self.site(geo.blob_radius_nm[0] + geo.membrane_nm + GAP_NM)
            if c is None:
                continue
            r = min(rng.uniform(*geo.blob_radius_nm), self.lookup(c) - geo.membrane_nm - GAP_NM)
            rot = np.linalg.qr(rng.standard_normal((3, 3)))[0] / (r * rng.uniform(0.5, 1, 3))
            sl, g = self.box(c[None], r + GAP_NM)
            if sl is None:
                continue
            rel = [gk - ck for gk, ck in zip(g, c)]
            q = np.sqrt(sum(sum(rel[k] * rot[k, j] for k in range(3)) ** 2 for j in range(3)))
            sd = (q - 1) * r / 2  # roughly the distance (nm) outside the surface
            if self.clear(sl, sd < GAP_NM):
                np.maximum(self.blob[sl], np.clip(0.5 - sd / 6.0, 0, 1), out=self.blob[sl])
                self.occupied[sl] |= sd < GAP_NM

    def endoplasmic_reticulum(self) -> None:
        """Thin dark random-walk strands: dark, non-mitochondrial texture."""
        geo, rng, r = self.geo, self.rng, self.geo.er_radius_nm
        for _ in range(rng.poisson(geo.er_per_um3 * self.um3)):
            p, u = self.site(r + geo.membrane_nm + GAP_NM), unit(rng.standard_normal(3))
            for _seg in range(int(rng.integers(3, 9)) if p is not None else 0):
                u = unit(u + rng.normal(0, 0.6, 3))
                q = p + u * rng.uniform(100, 250)
                sl, g = self.box(np.array([p, q]), r + 10)
                if sl is None or self.lookup(q) < r + geo.membrane_nm:
                    break
                dist = _polyline(g, np.array([p, q]))[0]
                if self.occupied[sl][dist < r].any():
                    break
                np.maximum(self.er[sl], np.clip((r - dist) / 6.0 + 0.5, 0, 1), out=self.er[sl])
                p = q

    def vesicles(self) -> np.ndarray:
        """Clusters of small round vesicles beside a thickened membrane (synapses)."""
        geo, rng, centers = self.geo, self.rng, [np.zeros((0, 3))]
        for _ in range(rng.poisson(geo.vesicle_clusters_per_um3 * self.um3)):
            c = self.site(60.0)
            if c is not None:
                spread = min(self.lookup(c), 200.0)
                n = int(rng.integers(*geo.vesicles_per_cluster))
                centers.append(c + rng.normal(0, 0.5 * spread, (n, 3)))
                self.synapse(c, spread)
        pts = np.concatenate(centers)
        close = {j for _, j in cKDTree(pts).query_pairs(2 * geo.vesicle_radius_nm[1])}
        idx = np.clip(np.rint(pts / self.vox).astype(int), 0, np.array(self.shape) - 1)
        keep = [k for k, p in enumerate(pts) if k not in close and not self.occupied[tuple(idx[k])]
                and self.lookup(p) > geo.vesicle_radius_nm[1] + geo.membrane_nm]
        radii = rng.uniform(*geo.vesicle_radius_nm, len(keep))
        return stamp_spheres(pts[keep], radii, self.shape, self.vox)

    def synapse(self, c: np.ndarray, spread: float) -> None:
        """Thicken the membrane next to a vesicle cluster (a synaptic density)."""
        sl, g = self.box(c[None], spread + 140)
        if sl is not None:
            near = np.clip((spread + 100 - np.sqrt(sum((gk - ck) ** 2 for gk, ck in zip(g, c))))
                           / 40, 0, 1)
            psd = np.exp(-((self.memdist[sl] / self.geo.membrane_nm) ** 2)) * near
            np.maximum(self.membrane[sl], psd, out=self.membrane[sl])


def build_scene(geometry: Geometry, shape: tuple[int, int, int], seed: int = 0) -> Scene:
    """Lay out cells and organelles; depends only on geometry, shape and seed."""
    b = Builder(geometry, shape, rng_stream(seed, 1))
    b.cells()
    b.blobs()
    b.mitochondria()
    b.endoplasmic_reticulum()
    return b.scene(b.vesicles())
