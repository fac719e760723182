"""Cultured-cell fields: one flat cell with a large nucleus, for targets from other tissues.

A model trained on brain neuropil has rarely seen a nucleus, yet a cultured cell imaged
by SBF-SEM shows one in the middle of the field, with lipid droplets, lysosomes, ER
sheets and Golgi stacks around it: large or dark or round, none of them a
mitochondrion. This layout reuses the neuropil builder's placement rules (clearance,
occupancy, mitochondria tubes) inside one cell instead of a tiling of neurites, so the
exact mask still marks mitochondria only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domadapt.data.synthetic_geometry import (
    GAP_NM,
    Builder,
    Geometry,
    Range,
    Scene,
    axis_coords,
    rng_stream,
    smooth_noise,
    stamp_spheres,
    unit,
)


@dataclass(frozen=True)
class CellGeometry(Geometry):
    """A cultured-cell field; lengths in nm. Defaults: SBF-SEM of a flat cell at 10 nm pixels."""

    voxel_size_nm: tuple[float, float, float] = (40.0, 10.0, 10.0)
    membrane_nm: float = 16.0
    membrane_wobble_nm: float = 120.0
    cell_radius_nm: Range = (4200.0, 5200.0)  # in-plane semi-axes of the cell outline
    nucleus_radius_nm: Range = (2300.0, 3000.0)  # in-plane semi-axes
    nucleus_height_nm: float = 2000.0  # semi-axis along z
    nucleus_offset: float = 0.08  # centre jitter, fraction of the field
    envelope_gap_nm: float = 35.0  # between the inner and outer nuclear membrane
    pores_per_um2: float = 10.0
    pore_radius_nm: float = 45.0
    nucleoli: tuple[int, int] = (1, 3)
    nucleolus_radius_nm: Range = (350.0, 700.0)
    mito_fraction: float = 0.05
    mito_width_nm: Range = (220.0, 450.0)
    mito_length_nm: Range = (700.0, 3500.0)
    mito_flatness: float = 0.15  # z share of a mitochondrion's direction: flat cells, flat network
    lipid_per_um3: float = 0.25
    lipid_radius_nm: Range = (150.0, 450.0)
    blobs_per_um3: float = 0.35  # lysosomes and late endosomes
    blob_radius_nm: Range = (120.0, 320.0)
    vesicle_clusters_per_um3: float = 0.8
    vesicles_per_cluster: tuple[int, int] = (5, 25)
    vesicle_radius_nm: Range = (25.0, 55.0)
    er_per_um3: float = 1.5
    er_radius_nm: float = 18.0
    er_sheets_per_um3: float = 0.4
    er_sheet_length_nm: Range = (600.0, 2000.0)
    er_lumen_nm: float = 45.0
    golgi_per_um3: float = 0.04
    golgi_cisternae: tuple[int, int] = (4, 7)
    golgi_length_nm: Range = (500.0, 1100.0)
    golgi_spacing_nm: float = 55.0
    golgi_lumen_nm: float = 22.0

    def build(self, shape: tuple[int, int, int], seed: int) -> Scene:
        return build_cell_scene(self, shape, seed)


def _ellipsoid_distance(pos, centre, radii, rot) -> np.ndarray:
    """Approximate signed distance (nm, < 0 inside) to an ellipsoid, first order in (q - 1).

    Exact near the surface, where the membranes are drawn; far from it only its sign
    and growth matter.
    """
    rel = [p - np.float32(c) for p, c in zip(pos, centre)]
    loc = [sum(np.float32(rot[k, j]) * rel[k] for k in range(3)) for j in range(3)]
    q2 = sum((lj / np.float32(r)) ** 2 for lj, r in zip(loc, radii))
    grad = np.sqrt(sum((lj / np.float32(r * r)) ** 2 for lj, r in zip(loc, radii)))
    q = np.sqrt(q2)
    return (q - 1) * q / np.maximum(grad, np.float32(1e-9))


def _in_plane_rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=float)


def _ellipsoid_area_um2(radii) -> float:
    """Surface area (Knud Thomsen's approximation), to turn a pore density into a count."""
    a, b, c = (r * 1e-3 for r in radii)
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


class _CellBuilder(Builder):
    """One cell with a nucleus; organelles are placed in the cytoplasm only."""

    def cells(self) -> None:
        """Cell outline (plasma membrane, extracellular space) and the nucleus with its envelope."""
        geo, rng, shape = self.geo, self.rng, self.shape
        pos = [axis_coords(n, float(v), k) for k, (n, v) in enumerate(zip(shape, self.vox))]
        centre = self.extent / 2
        centre[1:] += rng.uniform(-1, 1, 2) * geo.nucleus_offset * self.extent[1:]
        wobble_sigma = [max(400.0 / v, 0.5) for v in self.vox]
        radii = (1e7, *rng.uniform(*geo.cell_radius_nm, 2))
        cell = _ellipsoid_distance(pos, centre, radii, _in_plane_rotation(rng.uniform(0, np.pi)))
        self.cell_sd = cell + 2 * geo.membrane_wobble_nm * smooth_noise(shape, wobble_sigma, rng)
        radii = (geo.nucleus_height_nm, *rng.uniform(*geo.nucleus_radius_nm, 2))
        rot = _in_plane_rotation(rng.uniform(0, np.pi))
        nuc = _ellipsoid_distance(pos, centre, radii, rot)
        self.nuc_sd = nuc + geo.membrane_wobble_nm * smooth_noise(shape, wobble_sigma, rng)
        self.memdist = np.minimum(np.abs(self.cell_sd), np.abs(self.nuc_sd))
        self.membrane = np.exp(-((self.cell_sd / (geo.membrane_nm / 2)) ** 2))
        outside = self.cell_sd > 0
        self.tone = np.where(outside, -1.0, 0.15 * smooth_noise(shape, wobble_sigma, rng))
        self.tone = self.tone.astype(np.float32)
        self.occupied |= (self.cell_sd > -GAP_NM) | (self.nuc_sd < geo.envelope_gap_nm + GAP_NM)
        self.nucleus_fields(centre, radii, rot)

    def nucleus_fields(self, centre, radii, rot) -> None:
        """Nucleoplasm, chromatin (clumps, a patchy peripheral band, nucleoli) and the envelope."""
        geo, rng, shape, sd = self.geo, self.rng, self.shape, self.nuc_sd
        self.nucleus = np.clip(0.5 - sd / float(self.vox[1]), 0, 1).astype(np.float32)
        fine = smooth_noise(shape, [max(60.0 / v, 0.5) for v in self.vox], rng)
        patchy = smooth_noise(shape, [max(250.0 / v, 0.5) for v in self.vox], rng)
        clumps = np.clip((fine + 0.3 * patchy - 0.7) / 0.5, 0, 1)
        band = np.clip((100 + sd) / 40, 0, 1) * np.clip(0.6 + 0.6 * patchy, 0, 1)
        n = int(rng.integers(geo.nucleoli[0], geo.nucleoli[1] + 1))
        local = rng.uniform(-0.45, 0.45, (n, 3)) * np.array(radii)
        centres = np.array(centre) + local @ rot.T
        nucleolus = stamp_spheres(centres, rng.uniform(*geo.nucleolus_radius_nm, n), shape, self.vox)
        nucleolus = np.clip(4 * nucleolus, 0, 1) * (0.75 + 0.25 * np.clip(fine, -1, 1))
        self.chromatin = (np.maximum(np.maximum(clumps, band), nucleolus) * (sd < 0)).astype(np.float32)
        w, gap = geo.membrane_nm / 2, geo.envelope_gap_nm
        self.envelope = np.maximum(np.exp(-((sd / w) ** 2)), np.exp(-(((sd - gap) / w) ** 2)))
        self.envelope *= 1 - self.pores(centre, radii, rot)

    def pores(self, centre, radii, rot) -> np.ndarray:
        """Nuclear pores: gaps through both membranes at random points of the envelope."""
        geo, rng = self.geo, self.rng
        n = rng.poisson(geo.pores_per_um2 * _ellipsoid_area_um2(radii))
        d = rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        surface = d * np.array(radii)
        surface *= (1 + geo.envelope_gap_nm / 2 / np.linalg.norm(surface, axis=1, keepdims=True))
        pts = np.array(centre) + surface @ rot.T
        keep = np.all((pts > -geo.pore_radius_nm) & (pts < self.extent + geo.pore_radius_nm), axis=1)
        stamp = stamp_spheres(pts[keep], np.full(int(keep.sum()), geo.pore_radius_nm),
                               self.shape, self.vox)
        return np.clip(3 * stamp, 0, 1)

    def direction(self) -> np.ndarray:
        """Mitochondria of a flat cell lie nearly in the section plane, in any in-plane direction."""
        u = self.rng.standard_normal(3)
        u[0] *= self.geo.mito_flatness
        return unit(u)

    def synapse(self, c: np.ndarray, spread: float) -> None:
        """A cultured cell's vesicle clusters are not synapses: no membrane thickening."""

    def lipid_droplets(self) -> None:
        """Homogeneous dark spheres without a membrane: round, dark, large look-alikes."""
        geo, rng = self.geo, self.rng
        self.lipid = np.zeros(self.shape, np.float32)
        for _ in range(rng.poisson(geo.lipid_per_um3 * self.um3)):
            c = self.site(geo.lipid_radius_nm[0] + GAP_NM)
            if c is None:
                continue
            r = min(rng.uniform(*geo.lipid_radius_nm), self.lookup(c) - GAP_NM)
            sl, g = self.box(c[None], r + GAP_NM)
            if sl is None:
                continue
            sd = np.sqrt(sum((gk - ck) ** 2 for gk, ck in zip(g, c))) - r
            if self.clear(sl, sd < GAP_NM):
                np.maximum(self.lipid[sl], np.clip(0.5 - sd / 6.0, 0, 1), out=self.lipid[sl])
                self.occupied[sl] |= sd < GAP_NM

    def cisterna(self, c, normal, along, length: float, lumen: float, offset: float = 0.0,
                 curvature: float = 0.0) -> bool:
        """Draw one flattened membrane sac (two dark membranes around a light lumen) if it fits.

        Seen across, ER sheets and Golgi cisternae are pairs of parallel dark lines.
        """
        width = self.geo.membrane_nm / 2
        reach = length / 2 + lumen + abs(offset) + 3 * width
        sl, g = self.box(c[None], reach)
        if sl is None:
            return False
        rel = [gk - ck for gk, ck in zip(g, c)]
        t = sum(rk * a for rk, a in zip(rel, along))
        h = sum(rk * nk for rk, nk in zip(rel, normal)) - offset - curvature * t * t
        inside = np.abs(t) < length / 2
        region = inside & (np.abs(h) < lumen / 2 + 2 * width)
        if not region.any() or not self.clear(sl, region):
            return False
        lines = np.exp(-(((np.abs(h) - lumen / 2) / width) ** 2)) * inside
        np.maximum(self.er[sl], lines.astype(np.float32), out=self.er[sl])
        self.occupied[sl] |= region
        return True

    def plane_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """A normal nearly in the section plane (so sheets cut across show as lines) and an axis
        along the sheet, also in the plane."""
        n = self.rng.standard_normal(3)
        n[0] *= 0.15
        n = unit(n)
        return n, unit(np.cross(n, np.array([1.0, 0.0, 0.0])))

    def er_sheets(self) -> None:
        geo, rng = self.geo, self.rng
        for _ in range(rng.poisson(geo.er_sheets_per_um3 * self.um3)):
            c = self.site(geo.er_lumen_nm + geo.membrane_nm + GAP_NM)
            if c is not None:
                n, a = self.plane_frame()
                self.cisterna(c, n, a, rng.uniform(*geo.er_sheet_length_nm), geo.er_lumen_nm,
                              curvature=rng.uniform(-1, 1) * 2e-4)

    def golgi(self) -> None:
        """Stacks of curved, parallel, shortening cisternae."""
        geo, rng = self.geo, self.rng
        for _ in range(rng.poisson(geo.golgi_per_um3 * self.um3)):
            c = self.site(geo.golgi_length_nm[1] / 2)
            if c is None:
                continue
            n, a = self.plane_frame()
            k = int(rng.integers(geo.golgi_cisternae[0], geo.golgi_cisternae[1] + 1))
            length, curvature = rng.uniform(*geo.golgi_length_nm), rng.uniform(2e-4, 8e-4)
            for i in range(k):
                shrink = 1 - 0.5 * abs(i - (k - 1) / 2) / max(k, 1)
                self.cisterna(c, n, a, length * shrink, geo.golgi_lumen_nm,
                              offset=(i - (k - 1) / 2) * geo.golgi_spacing_nm, curvature=curvature)


def build_cell_scene(geometry: CellGeometry, shape: tuple[int, int, int], seed: int = 0) -> Scene:
    """Lay out one cultured-cell field; depends only on geometry, shape and seed."""
    b = _CellBuilder(geometry, shape, rng_stream(seed, 1))
    b.cells()
    b.lipid_droplets()
    b.golgi()
    b.blobs()
    b.mitochondria()
    b.er_sheets()
    b.endoplasmic_reticulum()
    return b.scene(b.vesicles(), nucleus=b.nucleus, chromatin=b.chromatin, envelope=b.envelope,
                   lipid=b.lipid)
