"""The report's figures, drawn by matplotlib's Agg canvas (no pyplot) as embeddable PNGs."""

from __future__ import annotations

import base64
import io
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from cellclr.columns import BATCH, COMPOUND, MOA, PLATE
from cellclr.metadata import feature_columns, unit_rows
from cellclr.report.channels import PALETTE, colours
from cellclr.report.formatting import batch_label, natural_key

DPI = 150  # PNG resolution; images are shown at 96 CSS pixels per figure inch
PAGE_IN = 11.8  # the page's content width in figure inches (1136 CSS pixels)
CELLS_PER_MOA = 10  # example crops per MoA
CELL_SEED = 0
STRETCH_PCT = (1.0, 99.5)  # percentiles mapped to black and full colour in the composites
# shown channel i is drawn in colour i, additively (see cellclr.report.channels)
CHANNEL_COLOURS = np.array([rgb for _, rgb in PALETTE], dtype=np.float32)
LEGEND_PANEL_IN = 1.1  # width of one panel of the channel legend
GREY = "#b0b7c0"
MARKERS = ("o", "s", "^", "D", "v", "P")  # a new marker for each ten groups on the maps


class Png(NamedTuple):
    """A drawn figure: a ``data:image/png;base64,...`` URI and its width in CSS pixels."""

    uri: str
    width: int


def subplots(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def to_png(fig: Figure) -> Png:
    """The figure as a data URI, to be shown at its size in inches (96 CSS pixels each)."""
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return Png(f"data:image/png;base64,{data}", round(fig.get_figwidth() * 96))


LABEL_FREE = {  # train.select_every's measures: name, colour, line style
    "replicate_map": ("replicate mAP (signal)", "#1f77b4", "-"),
    "batch_retrieval_map": ("controls' same-batch mAP", "#d62728", "-"),
    "batch_retrieval_chance": ("its chance", "#d62728", ":"),
    "same_batch_neighbours": ("same-batch neighbours", "#9467bd", "-"),
    "label_free_score": ("label-free score", "#2ca02c", "--"),
}


def training_figure(log: pd.DataFrame) -> Png:
    """Loss and learning rate by epoch (left), the label-free measures of
    ``train.select_every`` where logged (middle), training throughput (right)."""
    measured = [m for m in LABEL_FREE if m in log and log[m].notna().any()]
    fig, axes = subplots(PAGE_IN, 3.6, 3 if measured else 2)
    ax, ax_speed = axes[0], axes[-1]
    if measured:
        ax_sel = axes[1]
        for m in measured:
            points = log.dropna(subset=[m])
            name, colour, style = LABEL_FREE[m]
            ax_sel.plot(points["epoch"], points[m], color=colour, ls=style, marker="o", label=name)
        ax_sel.set(xlabel="epoch", ylabel="label-free measure", title="Selection (no labels)")
        ax_sel.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False, fontsize=7
        )
    marker = "o" if len(log) < 30 else None
    ax.plot(log["epoch"], log["loss"], color="#1f77b4", marker=marker, label="loss")
    ax.set(xlabel="epoch", ylabel="contrastive loss", title="Loss and learning rate")
    ax_lr = ax.twinx()
    ax_lr.plot(log["epoch"], log["lr"], color="#ff7f0e", ls="--", marker=marker, label="lr")
    ax_lr.set_ylabel("learning rate", color="#ff7f0e")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(handles=[*ax.get_lines(), *ax_lr.get_lines()], loc="upper right", frameon=False)
    ax_speed.plot(log["epoch"], log["images_per_s"], color="#2ca02c", marker=marker)
    ax_speed.set(xlabel="epoch", ylabel="images / s", title="Training throughput")
    ax_speed.set_ylim(bottom=0)
    for a in axes:
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(log["epoch"].min() - 0.5, log["epoch"].max() + 0.5)
    return to_png(fig)


def _confusion_axes(ax: Axes, table: pd.DataFrame, moas: list[str], title: str) -> None:
    index = {m: i for i, m in enumerate(moas)}
    counts = np.zeros((len(moas), len(moas)), dtype=int)
    found = table.dropna(subset=["Neighbor_MoA"])
    for q, n in zip(found[MOA], found["Neighbor_MoA"], strict=True):
        counts[index[q], index[n]] += 1
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(counts.max(), 1))
    for i in range(len(moas)):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="#1a7f37", lw=1.2))
    for (i, j), c in np.ndenumerate(counts):
        if c:
            colour = "white" if c > counts.max() / 2 else "#1f2933"
            ax.text(j, i, str(c), ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(moas)), moas, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(moas)), moas)
    ax.set_xlabel("nearest neighbour's MoA")
    ax.set_title(title)


def confusion_figure(nsc: pd.DataFrame, nscb: pd.DataFrame, titles: tuple[str, str]) -> Png:
    """Query MoA x nearest neighbour's MoA counts for the NSC and NSCB neighbour tables."""
    names = pd.concat([nsc[MOA], nsc["Neighbor_MoA"]]).dropna().astype(str)
    moas = sorted(names.unique(), key=natural_key)
    fig, (ax_nsc, ax_nscb) = subplots(PAGE_IN, 2.4 + 0.36 * len(moas), 2)
    _confusion_axes(ax_nsc, nsc, moas, titles[0])
    _confusion_axes(ax_nscb, nscb, moas, titles[1])
    ax_nsc.set_ylabel("query treatment's MoA")
    ax_nscb.tick_params(labelleft=False)
    return to_png(fig)


def pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of the L2-normalised rows, and their variance
    fractions."""
    unit = unit_rows(x)
    centred = unit - unit.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(s))
    coords = np.zeros((len(x), 2))
    coords[:, :k] = u[:, :k] * s[:k]
    variance = np.zeros(2)
    variance[:k] = s[:k] ** 2 / max(float((s**2).sum()), 1e-24)
    return coords, variance


def _scatter(
    ax: Axes, xy: np.ndarray, labels: pd.Series, background: np.ndarray, title: str
) -> None:
    """Points coloured (then shaped, past ten groups) by label; ``background`` ones in grey."""
    if background.any():
        ax.scatter(*xy[background].T, s=26, c=GREY, label="control / unannotated", zorder=1)
    groups = sorted(labels[~background].astype(str).unique(), key=natural_key)
    palette = colormaps["tab10"]
    for i, group in enumerate(groups):
        sel = ~background & (labels.astype(str) == group).to_numpy()
        colour, marker = palette(i % 10), MARKERS[i // 10 % len(MARKERS)]
        ax.scatter(*xy[sel].T, s=38, color=colour, marker=marker, ec="white", lw=0.4, label=group)
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=9, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])


def _pca_of(profiles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return pca2(profiles[feature_columns(profiles)].select_dtypes("number").to_numpy(np.float64))


def _pc_labels(ax: Axes, variance: np.ndarray) -> None:
    ax.set_xlabel(f"PC1 ({100 * variance[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * variance[1]:.0f}%)")


def map_figure(t: pd.DataFrame, wells: pd.DataFrame | None, name: str, control: str) -> Png:
    """Treatments coloured by MoA; wells (each from one batch) coloured by batch, or the
    treatments by batch label when there are no well profiles."""
    xy, variance = _pca_of(t)
    background = ((t[COMPOUND].astype(str) == control) | t[MOA].isna()).to_numpy()
    fig, (ax_moa, ax_batch) = subplots(PAGE_IN, 7.0, 2)
    _scatter(ax_moa, xy, t[MOA], background, f"{name}: treatments by MoA")
    _pc_labels(ax_moa, variance)
    if wells is not None and BATCH in wells:
        xy, variance = _pca_of(wells)
        none = np.zeros(len(wells), dtype=bool)
        _scatter(ax_batch, xy, wells[BATCH], none, f"{name}: wells by batch")
    else:
        batches = t[BATCH].map(batch_label)
        _scatter(ax_batch, xy, batches, background, f"{name}: treatments by batch")
    _pc_labels(ax_batch, variance)
    return to_png(fig)


def top_labels(labels: pd.Series, keep: int, background: np.ndarray) -> pd.Series:
    """The labels, those past the ``keep`` most frequent (outside ``background``) as
    ``other (N)``, so that a map's legend stays readable."""
    labels = labels.astype(str)
    counts = labels[~background].value_counts()
    if len(counts) <= keep:
        return labels
    kept = sorted(counts.index, key=lambda v: (-counts[v], natural_key(v)))[: keep - 1]
    return labels.where(labels.isin(kept) | background, f"other ({len(counts) - len(kept)})")


def well_map_figure(wells: pd.DataFrame, name: str, control: str, treatment: str) -> Png:
    """The well profiles (no MoA known) by plate (by batch past 20 plates) and, when the
    treatment column is known, by compound (controls in grey; the 19 commonest named)."""
    xy, variance = _pca_of(wells)
    known = treatment in wells and bool(wells[treatment].notna().any())
    fig, axes = subplots(PAGE_IN if known else PAGE_IN / 2 + 0.5, 7.0, 2 if known else 1)
    none = np.zeros(len(wells), dtype=bool)
    by = PLATE if wells[PLATE].nunique() <= 20 else BATCH
    what = "plate" if by == PLATE else "batch"
    groups = top_labels(wells.get(by, wells[PLATE]), 20, none)
    _scatter(axes[0], xy, groups, none, f"{name}: wells by {what}")
    _pc_labels(axes[0], variance)
    if known:
        column = wells[treatment]
        background = ((column.astype(str) == control) | column.isna()).to_numpy()
        compounds = top_labels(wells[treatment], 20, background)
        _scatter(axes[1], xy, compounds, background, f"{name}: wells by {treatment[9:].lower()}")
        _pc_labels(axes[1], variance)
    return to_png(fig)


def channel_colours(n: int) -> np.ndarray:
    """The display colour (RGB in [0, 1]) of each of ``n`` shown channels (1 to 8)."""
    return colours(n)[0]


def stretch(crops: np.ndarray) -> np.ndarray:
    """(n, C, H, W) counts -> values in [0, 1], each channel stretched between percentiles of
    its values over all the given crops."""
    x = crops.astype(np.float32)
    low, high = np.percentile(x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1), STRETCH_PCT, axis=1)
    scaled = (x - low[None, :, None, None]) / np.maximum(high - low, 1e-6)[None, :, None, None]
    return np.clip(scaled, 0, 1)


def colourise(scaled: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(n, C, H, W) values in [0, 1] -> (n, H, W, 3): channel c drawn in ``rgb[c]``, added up
    and clipped (where stained structures overlap, their colours mix)."""
    return np.clip(np.einsum("nchw,ck->nhwk", scaled, rgb), 0, 1)


def composite(crops: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
    """(n, C, H, W) counts -> (n, H, W, 3) colour composites in [0, 1] (``rgb``: each channel's
    colour, by default ``channel_colours``)."""
    rgb = channel_colours(crops.shape[1]) if rgb is None else rgb
    return colourise(stretch(crops), rgb)


def sample_cells(cells: pd.DataFrame, control: str) -> dict[str, np.ndarray]:
    """Up to ``CELLS_PER_MOA`` random cells (seeded) per MoA, control first."""
    moa = cells[MOA].astype("object")
    moa = moa.where(cells[COMPOUND].astype(str) != control, control)
    groups = sorted(moa.dropna().astype(str).unique(), key=lambda m: (m != control, m.lower()))
    return sample_groups(moa, groups)


def sample_groups(labels: pd.Series, groups: list[str]) -> dict[str, np.ndarray]:
    """Up to ``CELLS_PER_MOA`` random cells (seeded) of each of ``groups`` of ``labels``."""
    rng = np.random.default_rng(CELL_SEED)
    return {
        g: np.sort(rng.choice(idx, min(CELLS_PER_MOA, len(idx)), replace=False))
        for g in groups
        for idx in [np.flatnonzero((labels == g).to_numpy())]
    }


def mosaic(rgb: np.ndarray, per_row: list[int], gap: int = 3) -> np.ndarray:
    """Lay out (n, H, W, 3) images in rows of the given lengths, on white."""
    h, w = rgb.shape[1:3]
    out = np.ones((len(per_row) * (h + gap) - gap, CELLS_PER_MOA * (w + gap) - gap, 3))
    start = 0
    for row, n in enumerate(per_row):
        for col in range(n):
            y, x = row * (h + gap), col * (w + gap)
            out[y : y + h, x : x + w] = rgb[start + col]
        start += n
    return out


def _mosaic_figure(image: np.ndarray, labels: list[str]) -> Figure:
    """The mosaic across the page, one row label per row at its left."""
    label_in = 0.3 + 0.075 * max(len(m) for m in labels)  # room for 10 pt names
    grid_w = PAGE_IN - label_in
    fig = Figure(figsize=(PAGE_IN, grid_w * image.shape[0] / image.shape[1]))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((label_in / PAGE_IN, 0, grid_w / PAGE_IN, 1))
    ax.imshow(image, interpolation="nearest")
    row_h = image.shape[0] / len(labels)
    ax.set_yticks([(r + 0.5) * row_h for r in range(len(labels))], labels, fontsize=10)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    return fig


def cells_figure(
    crops: np.ndarray, per_row: list[int], labels: list[str], rgb: np.ndarray | None = None
) -> Png:
    """Colour composites of (n, C, H, W) crops in labelled rows of ``per_row`` cells."""
    return to_png(_mosaic_figure(mosaic(composite(crops, rgb), per_row), labels))


def legend_figure(crops: np.ndarray, names: list[str], rgb: np.ndarray) -> Png:
    """The legend of the composites: the first of (n, C, H, W) crops, stretched as in the
    mosaic, one panel per channel in its colour with its name, then (for several channels)
    all of them together."""
    scaled = stretch(crops)[:1]
    panels = [colourise(scaled[:, [c]], rgb[[c]])[0] for c in range(len(names))]
    titles = list(names)
    if len(names) > 1:
        panels.append(colourise(scaled, rgb)[0])
        titles.append("composite")
    fig = Figure(figsize=(LEGEND_PANEL_IN * len(panels), LEGEND_PANEL_IN + 0.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel, title in zip(axes, panels, titles, strict=True):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.08)
    return to_png(fig)
