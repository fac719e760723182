"""A label-free trust panel: does the chosen model's target prediction look like mitochondria?

No target label is needed, so every run gets one. The prediction of the target test
volume is compared with what the labeled source says mitochondria look like: the
share of the image they cover, how many there are per area, and how large they are
(areas of 2-D connected components, in µm², so different pixel sizes compare).
A model that calls a nucleus or a whole cytoplasm mitochondria covers several times
the source's share with objects far larger than any source mitochondrion; a model
that has learned nothing covers almost nothing. Either gets a plain warning.

The thresholds are deliberately wide (x3 in coverage; half of the foreground in
objects over twice the source's 95th-percentile area; a median object under half the
source's 5th-percentile area), because tissues differ: a warning says "look before you use
this", not "this is wrong". The selected checkpoint's label-free criteria are shown
beside, for the same reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage.measure import label, regionprops_table

from domadapt.markdown import table

#: Coverage ratio (target / source) beyond which the panel warns, either way.
COVERAGE_FACTOR = 3.0
#: Objects larger than OVERSIZE x the source's 95th-percentile area count as oversized (a correct
#: synth-cell prediction, long mitochondria lying in the section, holds 50-60 % of its foreground
#: in objects over 2x a hippocampus p95; a nucleus is over 50x); the panel
#: warns when they hold more than OVERSIZED_SHARE of the predicted foreground.
OVERSIZE = 4.0
OVERSIZED_SHARE = 0.5
#: The median predicted object must be under 1 / UNDERSIZE of the source's 5th-percentile area
#: for a "fragments" warning (a correct synth-vnc prediction sits just under the p5 itself).
UNDERSIZE = 2.0
#: Criteria of the selected checkpoint shown in the panel, when the run monitored them.
SHOWN_CRITERIA = ("morph_paper", "morph_ours", "target_consistency", "target_entropy")


@dataclass
class Morphology:
    """Coverage, density and object areas of a binary (Z, Y, X) volume."""

    foreground_fraction: float
    objects_per_um2: float
    area_um2_p5: float
    area_um2_median: float
    area_um2_p95: float
    n_objects: int


def object_areas(binary: np.ndarray, pixel_nm: tuple[float, float]) -> np.ndarray:
    """Areas (µm²) of the 2-D connected components, slice by slice (sections are thin)."""
    um2 = pixel_nm[0] * pixel_nm[1] / 1e6
    areas = [regionprops_table(label(plane, connectivity=2), properties=("area",))["area"]
             for plane in binary if plane.any()]
    return np.concatenate(areas) * um2 if areas else np.zeros(0)


def morphology(binary: np.ndarray, pixel_nm: tuple[float, float]) -> Morphology:
    """Coverage, objects per µm² of section and the object-area quantiles of a binary volume."""
    area = object_areas(binary, pixel_nm)
    total_um2 = binary.size * pixel_nm[0] * pixel_nm[1] / 1e6
    quantiles = np.percentile(area, [5, 50, 95]) if len(area) else [0.0, 0.0, 0.0]
    return Morphology(float(binary.mean()), len(area) / total_um2, *map(float, quantiles), len(area))


def oversized_share(binary: np.ndarray, pixel_nm: tuple[float, float], limit_um2: float) -> float:
    """Share of the foreground held by objects larger than ``limit_um2``."""
    area = object_areas(binary, pixel_nm)
    return float(area[area > limit_um2].sum() / area.sum()) if area.sum() else 0.0


def trust_panel(prediction: np.ndarray, threshold: float, pixel_nm: tuple[float, float],
                source_mask: np.ndarray, source_pixel_nm: float,
                criteria: dict[str, float] | None = None) -> dict:
    """Target morphology beside the source's, the selected checkpoint's criteria, and warnings.

    ``prediction`` holds probabilities in [0, 1] or the uint8 0-255 scale of the
    written prediction; ``source_mask`` the labeled source training masks (1 =
    mitochondrion; other values, e.g. ignored pixels, count as background).
    """
    scale = 255.0 if prediction.dtype == np.uint8 else 1.0
    binary = prediction >= threshold * scale
    target = morphology(binary, pixel_nm)
    source = morphology(source_mask == 1, (source_pixel_nm, source_pixel_nm))
    panel = {"target": asdict(target), "source": asdict(source),
             "coverage_ratio": target.foreground_fraction / max(source.foreground_fraction, 1e-9),
             "oversized_share": oversized_share(binary, pixel_nm, OVERSIZE * source.area_um2_p95),
             "criteria": {k: v for k, v in (criteria or {}).items() if k in SHOWN_CRITERIA}}
    panel["warnings"] = warnings_for(target, source, panel)
    return panel


def warnings_for(target: Morphology, source: Morphology, panel: dict) -> list[str]:
    """Plain sentences for a prediction that does not look like the source's mitochondria."""
    out, ratio = [], panel["coverage_ratio"]
    if ratio > COVERAGE_FACTOR:
        out.append(f"The prediction covers {100 * target.foreground_fraction:.1f} % of the target, "
                   f"{ratio:.1f}x the source's {100 * source.foreground_fraction:.1f} %: it may "
                   "be labeling other structures (e.g. a nucleus, a whole cell region) as "
                   "mitochondria.")
    elif ratio < 1 / COVERAGE_FACTOR:
        out.append(f"The prediction covers {100 * target.foreground_fraction:.2f} % of the target, "
                   f"under a third of the source's {100 * source.foreground_fraction:.1f} %: it may "
                   "miss most mitochondria.")
    if target.n_objects and source.n_objects:
        if panel["oversized_share"] > OVERSIZED_SHARE:
            out.append(f"{100 * panel['oversized_share']:.0f} % of the predicted foreground lies in "
                       f"objects over {OVERSIZE:g}x the area of the source's 95th-percentile "
                       f"mitochondrion ({source.area_um2_p95:.3f} µm² per section).")
        if target.area_um2_median < source.area_um2_p5 / UNDERSIZE:
            out.append(f"The median predicted object ({target.area_um2_median:.4f} µm² per section) "
                       f"is under half the area of the source's 5th-percentile mitochondrion "
                       f"({source.area_um2_p5:.4f} µm²): fragments or noise.")
    return out


def render_panel(panel: dict) -> list[str]:
    """Markdown lines for report.md."""
    t, s = panel["target"], panel["source"]
    rows = [["foreground fraction", f"{t['foreground_fraction']:.4f}", f"{s['foreground_fraction']:.4f}"],
            ["objects per µm² (per section)", f"{t['objects_per_um2']:.3f}", f"{s['objects_per_um2']:.3f}"],
            ["object area µm², median [5 %, 95 %]",
             f"{t['area_um2_median']:.3f} [{t['area_um2_p5']:.3f}, {t['area_um2_p95']:.3f}]",
             f"{s['area_um2_median']:.3f} [{s['area_um2_p5']:.3f}, {s['area_um2_p95']:.3f}]"]]
    rows += [[f"`{name}` at the chosen step", f"{value:.4f}", ""]
             for name, value in panel["criteria"].items()]
    lines = ["## Trust panel (label-free)", "",
             *table(["", "target prediction", "source labels"], rows, "lrr").split("\n"), ""]
    if panel["warnings"]:
        lines += [f"**Warning:** {w}" for w in panel["warnings"]]
    else:
        lines.append("No warning: coverage and object sizes are within the source's range.")
    return lines
