"""``cellclr report``: a finished run folder -> one self-contained HTML page.

The page opens with the headline numbers, then has one section each for the results (beside any
baselines in ``<run>/baselines/<name>``), training, per-treatment nearest neighbours, the MoA
confusion, a 2-D map of the treatment profiles, example cells, and the config with the stage
timings. Plots are PNGs drawn by matplotlib's Agg backend and embedded as base64, so the file
needs nothing else. Optional parts that are missing are skipped with a note.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from cellclr.errors import CellclrError
from cellclr.metadata import feature_columns, unit_rows
from cellclr.outputs import atomic_file, check_new_output, current_baselines
from cellclr.profiling.evaluate import variants
from cellclr.store import CropStore, StoreError

DPI = 150  # PNG resolution; images are shown at 96 CSS pixels per figure inch
PAGE_IN = 11.8  # the page's content width in figure inches (1136 CSS pixels)
CELLS_PER_MOA = 10  # example crops per MoA
CELL_SEED = 0
STRETCH_PCT = (1.0, 99.5)  # percentiles mapped to black and full colour in the composites
# channel i is drawn in colour i (DNA blue, Tubulin green, Actin red for BBBC021), additively
CHANNEL_COLOURS = np.array(
    [(0.1, 0.35, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 0)], dtype=np.float32
)
GREY = "#b0b7c0"
MARKERS = ("o", "s", "^", "D", "v", "P")  # a new marker for each ten groups on the maps
BASELINE_NOTES = {
    "random": "the same encoder with random weights",
    "classic": "CellProfiler-like features",
}
STAGE_FOLDERS = ("crops", "model", "embeddings", "profiles", "eval")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2933;margin:0;line-height:1.45;background:#fff}
main{max-width:1200px;margin:0 auto;padding:20px 32px 64px}
h1{font-size:1.7rem;margin:0 0 2px}
h2{font-size:1.3rem;border-bottom:2px solid #d9e2ec;padding-bottom:4px;margin:44px 0 12px}
h3{font-size:1.05rem;margin:20px 0 6px}
a{color:#2563eb;text-decoration:none}
nav{margin:14px 0 4px;font-size:.92rem}
nav a{margin-right:16px}
.meta,.muted{color:#616e7c}
.meta{font-size:.9rem}
.cards{display:flex;gap:16px;flex-wrap:wrap;margin:18px 0 10px}
.card{border:1px solid #d9e2ec;border-radius:8px;padding:10px 20px;min-width:170px}
.card .label{font-size:.78rem;color:#616e7c;text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:1.7rem;font-weight:600}
.card .sub{font-size:.85rem;color:#616e7c}
table{border-collapse:collapse;font-size:.88rem;margin:6px 0 10px}
th,td{padding:3px 12px;text-align:left;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f0f4f8;font-weight:600}
tbody tr:nth-child(even) td{background:#fafbfc}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.main td{font-weight:600}
tr.main td .muted{font-weight:400}
.ok{color:#1a7f37;font-weight:700}
.bad{color:#cf222e;font-weight:700}
.note{color:#5c4b00;background:#fff8e1;border-left:3px solid #e8b100;padding:6px 12px;
 margin:8px 0;font-size:.92rem}
img{max-width:100%;height:auto;display:block;margin:6px 0}
pre{background:#f5f7fa;border:1px solid #e4e7eb;border-radius:6px;padding:10px 14px;
 font-size:.8rem;column-count:3;column-gap:28px}
details{margin:8px 0}
details table{font-size:.82rem}
details td{white-space:nowrap}
summary{cursor:pointer;font-weight:600}
.swatch{font-weight:700}
"""


class ReportError(CellclrError, FileNotFoundError):
    """A folder that is not a finished cellclr run."""


@dataclass
class RunData:
    """What the report shows, read from a run folder; optional parts may be None or empty."""

    path: Path
    metrics: dict[str, Any]
    nsc: pd.DataFrame
    nscb: pd.DataFrame
    config: dict[str, Any]  # the parsed model/config.toml ({} when absent)
    train_log: pd.DataFrame | None
    profiles: dict[str, pd.DataFrame]  # treatment profiles: this run's, then each baseline's
    wells: dict[str, pd.DataFrame]  # well profiles, likewise (where present)
    baselines: dict[str, dict[str, Any]]  # baseline name -> its metrics.json
    store: CropStore | None
    notes: dict[str, str]  # section id -> why something is missing there

    @property
    def control(self) -> str:
        return str(self.config.get("evaluate", {}).get("control", "DMSO"))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _find_store(run: Path) -> tuple[CropStore | None, str]:
    """The run's crop store (``run/crops``, else the one ``model/stage.json`` names) or why not."""
    if (run / "crops" / "store.json").is_file():
        path = run / "crops"
    else:
        recorded = _read_json(run / "model" / "stage.json").get("crops")
        if not recorded:
            return None, "the run records no crop store, so no example cells are shown."
        path = Path(recorded)
    try:
        return CropStore(path), ""
    except (StoreError, OSError) as e:
        return None, f"the crop store could not be opened ({e}), so no example cells are shown."


def _load_baselines(run: Path, notes: dict[str, str]) -> dict[str, dict[str, Any]]:
    found, stale = current_baselines(run)
    baselines = {name: _read_json(folder / "eval" / "metrics.json") for name, folder in found}
    if stale:
        notes["results"] = (
            f"left out: baselines/{', baselines/'.join(stale)} (unfinished, or made from other "
            "crops than this run)."
        )
    elif not baselines:
        notes["results"] = "no baselines in this run (baselines/<name>/eval/metrics.json)."
    return baselines


def _load_config(run: Path) -> dict[str, Any]:
    for folder in ("model", "eval"):
        path = run / folder / "config.toml"
        if path.is_file():
            try:
                return tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError:
                return {}
    return {}


def _headline(table: pd.DataFrame, metrics: dict[str, Any]) -> pd.DataFrame:
    """The neighbour rows of the headline post-processing variant (all rows of older runs)."""
    if "Variant" not in table:
        return table
    return table[table["Variant"] == metrics.get("variant", "none")].reset_index(drop=True)


def load_run(run: Path) -> RunData:
    """Read a finished run; raise ``ReportError`` naming the first missing required file."""
    run = Path(run)
    for name in ("metrics.json", "nsc.parquet", "nscb.parquet"):
        if not (run / "eval" / name).is_file():
            raise ReportError(
                f"{run} is not a finished cellclr run: {run / 'eval' / name} is missing"
            )
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    notes: dict[str, str] = {}
    log_path = run / "model" / "train_log.jsonl"
    train_log = None
    if log_path.is_file() and log_path.stat().st_size:
        train_log = pd.read_json(log_path, lines=True)
    else:
        notes["training"] = f"no training log ({log_path} is missing or empty)."
    baselines = _load_baselines(run, notes)
    profiles, wells = {}, {}
    for name, folder in [("cellclr", run), *((n, run / "baselines" / n) for n in baselines)]:
        path = folder / "profiles" / "treatments.parquet"
        if path.is_file():
            profiles[name] = pd.read_parquet(path)
        if (folder / "profiles" / "wells.parquet").is_file():
            wells[name] = pd.read_parquet(folder / "profiles" / "wells.parquet")
    if "cellclr" not in profiles:
        notes["map"] = f"no treatment profiles ({run / 'profiles' / 'treatments.parquet'})."
    store, why = _find_store(run)
    if why:
        notes["cells"] = why
    return RunData(
        path=run,
        metrics=metrics,
        nsc=_headline(pd.read_parquet(run / "eval" / "nsc.parquet"), metrics),
        nscb=_headline(pd.read_parquet(run / "eval" / "nscb.parquet"), metrics),
        config=_load_config(run),
        train_log=train_log,
        profiles=profiles,
        wells=wells,
        baselines=baselines,
        store=store,
        notes=notes,
    )


# ---- small HTML and plotting helpers -------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(
    header: list[str],
    rows: list[list[str]],
    right: Collection[int] = (),
    main: Collection[int] = (),
) -> str:
    """An HTML table of already-escaped cells; ``right`` columns are right-aligned numbers,
    rows whose index is in ``main`` are bold."""

    def cls(i: int) -> str:
        return ' class="r"' if i in right else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        f"<tr{' class=main' if n in main else ''}>"
        + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for n, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _img(fig: Figure, alt: str) -> str:
    """The figure as an embedded PNG ``<img>``, shown at its size in inches (96 px each)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    width = round(fig.get_figwidth() * 96)
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" width="{width}">'


def _score(m: dict[str, Any]) -> str:
    """``34/103 (33.0%)``."""
    total = m.get("total", 0)
    pct = f"{100 * m['correct'] / total:.1f}%" if total else "n/a"
    return f"{m.get('correct', 0)}/{total} ({pct})"


def _drop(metrics: dict[str, Any]) -> str:
    drop = metrics.get("drop_pct")
    return "n/a" if drop is None or pd.isna(drop) else f"{drop:.1f} points"


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _natural_key(text: str) -> list[Any]:
    """Sort key putting Week2 before Week10."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text)]


def _batch(label: Any) -> str:
    """A batch label as shown: multi-week labels (``Week1,Week2``) become ``multi (2 weeks)``."""
    parts = str(label).split(",")
    return str(label) if len(parts) == 1 else f"multi ({len(parts)} weeks)"


def _batch_cell(label: Any) -> str:
    """A batch label for a table; multi-week labels are shortened, the full one in a tooltip."""
    if pd.isna(label):
        return "–"
    return f'<span title="{_e(label)}">{_e(_batch(label))}</span>'


def _treatment(compound: Any, concentration: Any) -> str:
    if pd.isna(compound):
        return "–"
    return f'{_e(compound)} <span class="muted">{float(concentration):g}</span>'


# ---- sections ----------------------------------------------------------------------------


def _cards(m: dict[str, Any]) -> str:
    cards = [
        ("NSC", _score(m["nsc"]), "nearest treatment of another compound has the same MoA"),
        ("NSCB", _score(m["nscb"]), "… and comes from another batch"),
        ("Drop", _drop(m), "NSC − NSCB accuracy"),
    ]
    return "".join(
        f'<div class="card"><div class="label">{_e(k)}</div><div class="value">{_e(v)}</div>'
        f'<div class="sub">{_e(s)}</div></div>'
        for k, v, s in cards
    )


def _facts(run: RunData) -> str:
    """One sentence on what was evaluated, and one on the model."""
    m = run.metrics
    text = (
        f"{m.get('n_treatments', '?')} treatments of {m.get('n_compounds', '?')} compounds "
        f"and {m.get('n_moas', '?')} MoAs, {m.get('distance', 'cosine')} distance"
    )
    if dropped := m.get("nscb_dropped_moas"):
        text += f"; NSCB leaves out the MoAs seen in one batch only: {', '.join(dropped)}"
    model, train = run.config.get("model", {}), run.config.get("train", {})
    if model and train:
        text += (
            f". Model {model.get('arch')} ({model.get('stem')} stem), "
            f"{_plural(train.get('epochs'), 'epoch')}, batch {train.get('batch_size')}, "
            f"{run.config.get('augment', {}).get('size')} px views"
        )
    return text + "."


def _header(run: RunData) -> str:
    finished = datetime.fromtimestamp((run.path / "eval" / "metrics.json").stat().st_mtime)
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in SECTIONS)
    return (
        f"<header><h1>cellclr run report</h1>"
        f'<div class="meta">Run folder <code>{_e(run.path.resolve())}</code> · evaluated '
        f"{finished:%Y-%m-%d %H:%M} · report written {datetime.now():%Y-%m-%d %H:%M}</div>"
        f'<div class="cards">{_cards(run.metrics)}</div><p>{_e(_facts(run))}</p>'
        f"<nav>{nav}</nav></header>"
    )


def _results(run: RunData) -> str:
    runs = [("cellclr (this run)", "SimCLR embeddings", run.metrics)]
    runs += [(name, BASELINE_NOTES.get(name, ""), m) for name, m in run.baselines.items()]
    rows = []
    for name, about, m in runs:
        for i, (variant, v) in enumerate(variants(m).items()):
            label = [_e(name), f'<span class="muted">{_e(about)}</span>'] if i == 0 else ["", ""]
            rows.append(
                [
                    *label,
                    _e(variant),
                    _score(v["nsc"]),
                    _ci(v["nsc"]),
                    _score(v["nscb"]),
                    _ci(v["nscb"]),
                    _e(_drop(v)),
                    _map(v["nsc"]),
                    _map(v["nscb"]),
                ]
            )
    table = _table(
        [
            "Profiles",
            "",
            "Post-processing",
            "NSC",
            "95% CI",
            "NSCB",
            "95% CI",
            "Drop",
            "mAP",
            "mAP (batch)",
        ],
        rows,
        right=set(range(3, 10)),
        main={0},
    )
    explain = (
        "<p class=muted>Post-processing of the well profiles: none; dmso = per-plate "
        "standardisation to the DMSO wells; tvn = typical variation normalisation (DMSO "
        "whitening, then CORAL per batch). 95% CI: bootstrap over treatments. mAP: mean "
        "average precision of MoA retrieval among the treatments of other compounds (and, for "
        "the batch column, other batches).</p>"
    )
    skipped = [
        _note(f"{name}: post-processing {v} not computed: {why}")
        for name, _, m in runs
        for v, why in m.get("skipped_variants", {}).items()
    ]
    note = _note(run.notes["results"]) if "results" in run.notes else ""
    return table + explain + "".join(skipped) + note


def _ci(m: dict[str, Any]) -> str:
    low, high = m.get("ci95", [None, None])
    if low is None or pd.isna(low):
        return "–"
    return f"{100 * low:.0f}–{100 * high:.0f}%"


def _map(m: dict[str, Any]) -> str:
    value = m.get("map")
    return "–" if value is None or pd.isna(value) else f"{value:.3f}"


def _training(run: RunData) -> str:
    log = run.train_log
    if log is None:
        return _note(run.notes["training"])
    fig, (ax, ax_speed) = _figure(PAGE_IN, 3.6, 2)
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
    for a in (ax, ax_speed):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(log["epoch"].min() - 0.5, log["epoch"].max() + 0.5)
    stage = _read_json(run.path / "model" / "stage.json")
    text = (
        f"{_plural(len(log), 'epoch')}, final loss {log['loss'].iloc[-1]:.4g}, "
        f"median {log['images_per_s'].median():.0f} images/s, "
        f"{log['seconds'].sum() / 60:.1f} min of training on {stage.get('device', '?')}."
    )
    return f"<p>{_e(text)}</p>" + _img(fig, "training loss, learning rate and throughput")


def _per_moa(run: RunData) -> str:
    dropped = set(run.metrics.get("nscb_dropped_moas") or [])
    nsc = run.nsc.groupby("Metadata_MoA")["Correct"].agg(["sum", "count"])
    nscb = run.nscb.groupby("Metadata_MoA")["Correct"].agg(["sum", "count"])
    rows = []
    for moa, (ok, n) in sorted(nsc.iterrows(), key=lambda kv: _natural_key(kv[0])):
        if moa in nscb.index:
            b = nscb.loc[moa]
            nscb_cell = _score({"correct": int(b["sum"]), "total": int(b["count"])})
        else:
            nscb_cell = '<span class="muted">left out (one batch)</span>' if moa in dropped else "–"
        rows.append([_e(moa), str(n), _score({"correct": int(ok), "total": int(n)}), nscb_cell])
    return _table(["MoA", "Treatments", "NSC", "NSCB"], rows, right={1, 2, 3})


def _neighbour_table(table: pd.DataFrame) -> str:
    t = table.assign(
        _moa=table["Metadata_MoA"].astype(str).str.lower(),
        _compound=table["Metadata_Compound"].astype(str).str.lower(),
    ).sort_values(["_moa", "_compound", "Metadata_Concentration"])
    rows = []
    for r in t.itertuples(index=False):
        mark = '<span class="ok">✓</span>' if r.Correct else '<span class="bad">✗</span>'
        distance = "–" if pd.isna(r.Distance) else f"{r.Distance:.3g}"
        rows.append(
            [
                _treatment(r.Metadata_Compound, r.Metadata_Concentration),
                _e(r.Metadata_MoA),
                _batch_cell(r.Metadata_Batch),
                _treatment(r.Neighbor_Compound, r.Neighbor_Concentration),
                "–" if pd.isna(r.Neighbor_MoA) else _e(r.Neighbor_MoA),
                _batch_cell(r.Neighbor_Batch),
                distance,
                mark,
            ]
        )
    header = ["Treatment", "MoA", "Batch", "Nearest neighbour", "Its MoA", "Its batch", "Distance"]
    return _table([*header, ""], rows, right={6})


def _neighbours(run: RunData) -> str:
    parts = [
        "<p>Per MoA: how many of its treatments have a nearest neighbour of the same MoA "
        "(concentrations are shown in grey after the compound).</p>",
        _per_moa(run),
    ]
    for name, table in (("NSC", run.nsc), ("NSCB", run.nscb)):
        score = _score({"correct": int(table["Correct"].sum()), "total": len(table)})
        parts.append(
            f"<details><summary>{name}: every treatment and its nearest neighbour "
            f"({score} correct)</summary>{_neighbour_table(table)}</details>"
        )
    return "".join(parts)


def _confusion_axes(ax: Axes, table: pd.DataFrame, moas: list[str], title: str) -> None:
    index = {m: i for i, m in enumerate(moas)}
    counts = np.zeros((len(moas), len(moas)), dtype=int)
    found = table.dropna(subset=["Neighbor_MoA"])
    for q, n in zip(found["Metadata_MoA"], found["Neighbor_MoA"], strict=True):
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


def _confusion(run: RunData) -> str:
    names = pd.concat([run.nsc["Metadata_MoA"], run.nsc["Neighbor_MoA"]]).dropna().astype(str)
    moas = sorted(names.unique(), key=_natural_key)
    fig, (ax_nsc, ax_nscb) = _figure(PAGE_IN, 2.4 + 0.36 * len(moas), 2)
    _confusion_axes(ax_nsc, run.nsc, moas, f"NSC: {_score(run.metrics['nsc'])}")
    _confusion_axes(ax_nscb, run.nscb, moas, f"NSCB: {_score(run.metrics['nscb'])}")
    ax_nsc.set_ylabel("query treatment's MoA")
    ax_nscb.tick_params(labelleft=False)
    return (
        "<p>Rows: the MoA of each query treatment; columns: the MoA of its nearest neighbour. "
        "The diagonal (outlined in green) holds the correct matches.</p>"
        + _img(fig, "MoA confusion matrices for NSC and NSCB")
    )


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    groups = sorted(labels[~background].astype(str).unique(), key=_natural_key)
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
    return _pca2(profiles[feature_columns(profiles)].select_dtypes("number").to_numpy(np.float64))


def _map_figure(t: pd.DataFrame, wells: pd.DataFrame | None, name: str, control: str) -> str:
    """Treatments coloured by MoA; wells (each from one batch) coloured by batch, or the
    treatments by batch label when there are no well profiles."""
    xy, variance = _pca_of(t)
    background = (
        (t["Metadata_Compound"].astype(str) == control) | t["Metadata_MoA"].isna()
    ).to_numpy()
    fig, (ax_moa, ax_batch) = _figure(PAGE_IN, 7.0, 2)
    _scatter(ax_moa, xy, t["Metadata_MoA"], background, f"{name}: treatments by MoA")
    ax_moa.set_xlabel(f"PC1 ({100 * variance[0]:.0f}% of variance)")
    ax_moa.set_ylabel(f"PC2 ({100 * variance[1]:.0f}%)")
    if wells is not None and "Metadata_Batch" in wells:
        xy, variance = _pca_of(wells)
        none = np.zeros(len(wells), dtype=bool)
        _scatter(ax_batch, xy, wells["Metadata_Batch"], none, f"{name}: wells by batch")
    else:
        _scatter(
            ax_batch,
            xy,
            t["Metadata_Batch"].map(_batch),
            background,
            f"{name}: treatments by batch",
        )
    ax_batch.set_xlabel(f"PC1 ({100 * variance[0]:.0f}% of variance)")
    ax_batch.set_ylabel(f"PC2 ({100 * variance[1]:.0f}%)")
    about = BASELINE_NOTES.get(name, "this run" if name == "cellclr" else "baseline")
    return f"<h3>{_e(name)} <span class=muted>({_e(about)})</span></h3>" + _img(
        fig, f"PCA map of {name} treatment profiles"
    )


def _profile_map(run: RunData) -> str:
    parts = [
        "<p>Left: PCA of the L2-normalised treatment profiles (one point per compound and "
        f"concentration; {_e(run.control)} and unannotated treatments in grey), coloured by MoA. "
        f"Right: PCA of the well profiles ({_e(run.control)} wells included), coloured by batch: "
        "wells that group by batch rather than by treatment show a batch effect, the part of "
        "NSC that NSCB takes away.</p>"
    ]
    if "map" in run.notes:
        parts.append(_note(run.notes["map"]))
    parts += [
        _map_figure(t, run.wells.get(name), name, run.control) for name, t in run.profiles.items()
    ]
    return "".join(parts)


def _channel_colours(n: int) -> np.ndarray:
    return CHANNEL_COLOURS[np.arange(n) % len(CHANNEL_COLOURS)]


def _composite(crops: np.ndarray) -> np.ndarray:
    """(n, C, H, W) counts -> (n, H, W, 3) colour composites in [0, 1], each channel stretched
    between percentiles of its values over all the given crops."""
    x = crops.astype(np.float32)
    low, high = np.percentile(x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1), STRETCH_PCT, axis=1)
    scaled = (x - low[None, :, None, None]) / np.maximum(high - low, 1e-6)[None, :, None, None]
    rgb = np.einsum("nchw,ck->nhwk", np.clip(scaled, 0, 1), _channel_colours(crops.shape[1]))
    return np.clip(rgb, 0, 1)


def _sample_cells(cells: pd.DataFrame, control: str) -> dict[str, np.ndarray]:
    """Up to ``CELLS_PER_MOA`` random cells (seeded) per MoA, control first."""
    rng = np.random.default_rng(CELL_SEED)
    moa = cells["Metadata_MoA"].astype("object")
    moa = moa.where(cells["Metadata_Compound"].astype(str) != control, control)
    groups = sorted(moa.dropna().astype(str).unique(), key=lambda m: (m != control, m.lower()))
    return {
        m: np.sort(rng.choice(idx, min(CELLS_PER_MOA, len(idx)), replace=False))
        for m in groups
        for idx in [np.flatnonzero((moa == m).to_numpy())]
    }


def _mosaic(rgb: np.ndarray, per_row: list[int], gap: int = 3) -> np.ndarray:
    """Lay out (n, H, W, 3) images in rows of the given lengths, on white."""
    h, w = rgb.shape[1:3]
    mosaic = np.ones((len(per_row) * (h + gap) - gap, CELLS_PER_MOA * (w + gap) - gap, 3))
    start = 0
    for row, n in enumerate(per_row):
        for col in range(n):
            y, x = row * (h + gap), col * (w + gap)
            mosaic[y : y + h, x : x + w] = rgb[start + col]
        start += n
    return mosaic


def _mosaic_figure(mosaic: np.ndarray, labels: list[str]) -> Figure:
    """The mosaic across the page, one row label per row at its left."""
    label_in = 0.3 + 0.075 * max(len(m) for m in labels)  # room for 10 pt names
    grid_w = PAGE_IN - label_in
    fig = Figure(figsize=(PAGE_IN, grid_w * mosaic.shape[0] / mosaic.shape[1]))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((label_in / PAGE_IN, 0, grid_w / PAGE_IN, 1))
    ax.imshow(mosaic, interpolation="nearest")
    row_h = mosaic.shape[0] / len(labels)
    ax.set_yticks([(r + 0.5) * row_h for r in range(len(labels))], labels, fontsize=10)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    return fig


def _example_cells(run: RunData) -> str:
    store = run.store
    if store is None:
        return _note(run.notes["cells"])
    if "Metadata_MoA" not in store.cells:
        return _note("the crop store has no Metadata_MoA column, so no example cells are shown.")
    picked = _sample_cells(store.cells, run.control)
    try:
        crops = store.read(np.concatenate(list(picked.values())))
    except (StoreError, OSError) as e:
        return _note(f"the crops could not be read ({e}).")
    mosaic = _mosaic(_composite(crops), [len(i) for i in picked.values()])
    labels = [f"{m} (control)" if m == run.control else m for m in picked]
    key = ", ".join(
        f'<span class="swatch" style="color:rgb({",".join(str(int(255 * v)) for v in c)})">'
        f"{_e(name)}</span>"
        for name, c in zip(store.channels, _channel_colours(len(store.channels)), strict=True)
    )
    return (
        f"<p>{CELLS_PER_MOA} random cells per MoA (seed {CELL_SEED}) from "
        f"<code>{_e(store.path)}</code>. Channels: {key}; each stretched between its "
        f"percentiles {STRETCH_PCT[0]:g} and {STRETCH_PCT[1]:g} over the cells shown.</p>"
        + _img(_mosaic_figure(mosaic, labels), "example cells per MoA")
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _toml_text(config: dict[str, Any]) -> str:
    """The config as compact TOML (lists inline)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, values in config.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    return "\n".join(lines).strip()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {sec} s"


def _timings(run: RunData) -> str:
    """A table of stage -> seconds from each stage.json of the run and its baselines."""
    folders = [run.path / f for f in STAGE_FOLDERS]
    for baseline in run.baselines:
        folders += sorted(
            p.parent for p in (run.path / "baselines" / baseline).glob("*/stage.json")
        )
    rows, total = [], 0.0
    for folder in folders:
        manifest = _read_json(folder / "stage.json")
        if "seconds" in manifest:
            total += float(manifest["seconds"])
            where = folder.relative_to(run.path)
            stage = manifest.get("stage", folder.name)
            rows.append([_e(stage), f"<code>{_e(where)}</code>", _duration(manifest["seconds"])])
    if not rows:
        return _note("no stage.json with timings found.")
    rows.append(["<b>total</b>", "", f"<b>{_duration(total)}</b>"])
    return _table(["Stage", "Folder", "Time"], rows, right={2})


def _config(run: RunData) -> str:
    if not run.config:
        return _timings(run) + _note("no readable config.toml in model/ or eval/.")
    return _timings(run) + f"<h3>Resolved config</h3><pre>{_e(_toml_text(run.config))}</pre>"


SECTIONS: tuple[tuple[str, str, Callable[[RunData], str]], ...] = (
    ("results", "Results", _results),
    ("training", "Training", _training),
    ("neighbours", "Nearest neighbours", _neighbours),
    ("confusion", "MoA confusion", _confusion),
    ("map", "Treatment profile map", _profile_map),
    ("cells", "Example cells", _example_cells),
    ("config", "Config and stage timings", _config),
)


def render(run: RunData) -> str:
    """The report page as one HTML string."""
    body = "".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>{make(run)}</section>'
        for sid, title, make in SECTIONS
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>cellclr report: {_e(run.path.resolve().name)}</title><style>{CSS}</style></head>"
        f"<body><main>{_header(run)}{body}</main></body></html>\n"
    )


def write_report(run: Path, out: Path | None = None, *, overwrite: bool = False) -> Path:
    """Write the HTML report of a finished run (default ``run/report.html``); return its path.
    An existing report is replaced only with ``overwrite``."""
    run = Path(run)
    out = Path(out) if out is not None else run / "report.html"
    check_new_output(out, overwrite)
    page = render(load_run(run))
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
