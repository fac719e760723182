"""Heatmap, bar charts and overlay montages, drawn with matplotlib's object API (Agg, no pyplot)."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import numpy as np

from domadapt.data.volume import IGNORE_LABEL
from domadapt.errors import DataError
from domadapt.reporting.common import (
    DASH,
    DEFAULT_METRIC,
    REFERENCES,
    _figure,
    _Grid,
    _half_width,
    _save,
)
from domadapt.reporting.published import (
    _published_for,
)


def heatmap(rows: list[dict], path: str | Path, metric: str = DEFAULT_METRIC) -> Path:
    """Pairs x (methods, references) of the mean metric on a fixed 0..1 scale; missing cells grey."""
    import matplotlib

    grid = _Grid(rows, metric)
    matrix = np.full((len(grid.pairs), len(grid.columns)), np.nan)
    for i, pair in enumerate(grid.pairs):
        for j, column in enumerate(grid.columns):
            if (stats := grid.cell(pair, column)) is not None:
                matrix[i, j] = stats["mean"]
    fig = _figure((1.6 + 1.3 * max(1, len(grid.columns)), 1.4 + 0.55 * max(1, len(grid.pairs))))
    ax = fig.add_subplot()
    if matrix.size == 0:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        stats = grid.cell(grid.pairs[i], grid.columns[j])
        half = _half_width(stats) if stats is not None else 0.0
        text = DASH if np.isnan(value) else f"{value:.3f}" + (f"\n±{half:.3f}" if half else "")
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="black" if np.isnan(value) or value > 0.6 else "white")
    ax.set_xticks(range(len(grid.columns)), [_tick_label(c) for c in grid.columns], fontsize=8)
    ax.set_yticks(range(len(grid.pairs)), grid.pairs, fontsize=8)
    if grid.methods and grid.references:
        ax.axvline(len(grid.methods) - 0.5, color="white", linewidth=3)
    ax.set_title(f"{metric} on the target test set, mean over seeds ± 95 % t-interval", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    return _save(fig, path)


def bar_charts(rows: list[dict], folder: str | Path, published: dict | None = None,
               metric: str = DEFAULT_METRIC) -> list[Path]:
    """One chart per pair: methods, reference rows and hatched published figures; error bars are
    the 95 % t-interval of the mean over seeds (published figures: their quoted std)."""
    grid = _Grid(rows, metric)
    sources = [s for s in _published_for(published, metric)  # only those with a figure here
               if any(pair in s["results"] for pair in grid.pairs)]
    return [_bar_chart(grid, pair, sources, metric, Path(folder) / f"bars_{_pair_slug(pair)}.png")
            for pair in grid.pairs]


def _bar_chart(grid: _Grid, pair: str, sources: list[dict], metric: str, path: Path) -> Path:
    bars = [(c, grid.cell(pair, c), "method" if c in grid.methods else "reference") for c in grid.columns]
    bars += [(s["name"], s["results"][pair], "published") for s in sources if pair in s["results"]]
    style = {"method": dict(color="tab:blue"), "reference": dict(color="0.6"),
             "published": dict(facecolor="white", edgecolor="0.3", hatch="//")}
    fig = _figure((1.2 + 0.9 * max(1, len(bars)), 3.6))
    ax = fig.add_subplot()
    labelled: set[str] = set()
    for x, (_, stats, kind) in enumerate(bars):
        if stats is None:
            ax.text(x, 0.02, "n/a", ha="center", fontsize=8)
            continue
        label = None if kind in labelled else {"method": "method", "reference": "reference (not used)",
                                               "published": "published"}[kind]
        labelled.add(kind)
        half = _half_width(stats)
        ax.bar(x, stats["mean"], yerr=half, capsize=3, label=label, **style[kind])
        ax.text(x, stats["mean"] + half + 0.02, f"{stats['mean']:.3f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(bars)), [_bar_label(name, stats, kind) for name, stats, kind in bars],
                  fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title(pair, fontsize=9)
    if labelled:
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _bar_label(name: str, stats: dict | None, kind: str) -> str:
    label = "\n".join(textwrap.wrap(name, 22))
    return f"{label}\n(n={stats['n']})" if kind != "published" and stats else label


def _tick_label(column: str) -> str:
    """A heatmap column is 1.3 inches wide: a variant goes on its own line, so names do not collide."""
    if column in REFERENCES:
        return f"{column}\n(ref.)"
    strategy, dash, variant = column.partition("-")
    return f"{strategy}\n{dash}{variant}" if variant else column


def _pair_slug(pair: str) -> str:
    source, _, target = pair.partition("->")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{source}-to-{target}")


def overlay_montage(image: np.ndarray, labels: np.ndarray | None, predictions: dict[str, np.ndarray],
                    path: str | Path, title: str = "") -> Path:
    """One target slice: the image, then each method's prediction (magenta) with the truth outline (green).

    Predictions are probabilities in [0, 1] or uint8 0..255 (as the predicted tifs
    store them), thresholded at 0.5; label pixels equal to 255 are ignored.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"The montage needs one 2-D slice, got an image of shape {image.shape}.")
    for name, array in [("labels", labels), *predictions.items()]:
        if array is not None and np.shape(array) != image.shape:
            raise DataError(f"The montage's {name} has shape {np.shape(array)}, the image {image.shape}.")
    truth = None if labels is None else (np.asarray(labels) > 0) & (np.asarray(labels) != IGNORE_LABEL)
    panels = [("image" if truth is None else "image + ground truth", None),
              *((name, _foreground(pred)) for name, pred in predictions.items())]
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    aspect = image.shape[0] / max(1, image.shape[1])
    fig = _figure((3.0 * ncols, 3.0 * aspect * nrows + 0.6))
    low, high = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    for k, (name, mask) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        _overlay_panel(ax, image, (low, max(high, low + 1e-6)), truth, mask)
        ax.set_title(name, fontsize=9)
    legend = "green: ground truth outline, magenta: prediction (p >= 0.5)"
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=9)
    return _save(fig, path)


def _foreground(prediction: np.ndarray) -> np.ndarray:
    prediction = np.asarray(prediction)
    if prediction.dtype == bool:
        return prediction
    if np.issubdtype(prediction.dtype, np.integer):
        return prediction >= 128  # round(p * 255) >= 128  <=>  p >= 0.5
    return prediction >= 0.5


def _overlay_panel(ax, image: np.ndarray, limits: tuple[float, float], truth: np.ndarray | None,
                   mask: np.ndarray | None) -> None:
    ax.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1], interpolation="nearest")
    if mask is not None:
        rgba = np.zeros((*mask.shape, 4))
        rgba[mask] = (1.0, 0.0, 1.0, 0.45)
        ax.imshow(rgba, interpolation="nearest")
    if truth is not None and truth.any() and not truth.all():
        ax.contour(truth.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    ax.set_axis_off()


