"""A synthetic BBBC021-like screen, so that the whole pipeline runs without the real data.

``simulate_screen`` renders MCF-7-like cells in three channels (DNA, tubulin, actin) as 16-bit
TIFFs, one file per channel and site, with BBBC021's folders, file names and metadata CSVs, so
that ``cellclr.datasets.bbbc021.bbbc021_image_table`` reads it unchanged. Each MoA has a
phenotype, a deviation from the DMSO cell whose strength grows with the concentration (Hill
curve; the compounds of an MoA differ in potency) and varies from cell to cell. Each week
(batch) has its own illumination pattern, channel gains, camera offset and focus, and its cells
differ a little in size and staining. ``truth/cells.parquet`` holds every cell's nucleus
centre, treatment and phenotype strength.

At the default scale nuclei cover about 110-330 px² (fragments under 20 px²) and rarely touch:
the default ``NucleusParams`` find them all; a 48-px crop holds a typical cell whole.

Every site draws from its own random stream (``SeedSequence(seed, spawn_key=...)``), so a seed
gives byte-identical files whatever the order of rendering.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi

from cellclr.columns import BATCH, COMPOUND, CONCENTRATION, MOA, PLATE, SITE, WELL
from cellclr.datasets.bbbc021 import (
    IMAGE_COMPOUND,
    IMAGE_CONCENTRATION,
    IMAGE_CSV,
    IMAGE_PLATE,
    IMAGE_WELL,
    MOA_CSV,
    WAVELENGTHS,
    file_column,
    path_column,
)
from cellclr.datasets.phenotypes import (
    PHENOTYPES,
    WEEK_SPREAD,
    cell_responses,
    cell_traits,
    draw_cell,
)
from cellclr.errors import CellclrError
from cellclr.outputs import staged_dir, write_json, write_manifest, write_parquet

CHANNEL_FILES = tuple(WAVELENGTHS.items())  # BBBC021's DAPI w1, tubulin w2, actin w4
PLATE_ROWS, PLATE_COLUMNS = "ABCDEFGH", range(1, 13)  # a 96-well plate
TRIES = 64  # candidate positions per cell when placing cells
MEDIUM = np.array([120.0, 250.0, 180.0], np.float32)  # unbound stain, before illumination
READ_NOISE = 8.0  # camera read noise in counts


class SimulationError(CellclrError, ValueError):
    """A screen specification or output folder that cannot be used."""


@dataclass(frozen=True)
class ScreenSpec:
    """The size and layout of a simulated screen; the defaults make the demo's screen.

    Every compound (at each concentration) fills one well on every plate of
    ``weeks_per_compound`` weeks; every plate also has ``dmso_wells`` DMSO wells. The
    compounds of an MoA go two by two to a set of weeks, the next two to the next set: NSCB
    finds a same-MoA neighbour of another compound in other weeks, while NSC can also take
    one from the same weeks, so that batch effects show as a drop from NSC to NSCB. (With 3
    weeks there are only 3 sets of 2 weeks, each shared by 4 MoAs: the drop vanishes.)
    Nucleus centres keep ``edge_margin`` pixels from the border, so that 48-px crops fit.
    """

    weeks: int = 4
    plates_per_week: int = 2
    field_shape: tuple[int, int] = (256, 256)  # (height, width)
    sites_per_well: int = 2
    cells_per_field: tuple[int, int] = (16, 24)  # drawn uniformly, fewer if they do not fit
    moas: tuple[str, ...] = tuple(PHENOTYPES)
    compounds_per_moa: int = 3
    concentrations: tuple[float, ...] = (0.3, 3.0)
    ec50: float = 0.5  # of the median compound; the others are 1.5x apart
    weeks_per_compound: int = 2
    dmso_wells: int = 4
    edge_margin: int = 26

    def __post_init__(self) -> None:
        unknown = sorted(set(self.moas) - set(PHENOTYPES))
        if unknown or not self.moas or len(set(self.moas)) < len(self.moas):
            raise SimulationError(f"moas must be distinct names from {sorted(PHENOTYPES)}")
        counts = (self.weeks, self.plates_per_week, self.sites_per_well, self.compounds_per_moa)
        if min(counts) < 1 or not 1 <= self.weeks_per_compound <= self.weeks:
            raise SimulationError(
                "weeks, plates_per_week, sites_per_well and compounds_per_moa must be >= 1, "
                "and 1 <= weeks_per_compound <= weeks"
            )
        if not 1 <= self.cells_per_field[0] <= self.cells_per_field[1]:
            raise SimulationError(f"cells_per_field must be 1 <= low <= high: {self}")
        if min(self.concentrations, default=0) <= 0 or self.ec50 <= 0 or self.dmso_wells < 0:
            raise SimulationError("concentrations and ec50 must be > 0, dmso_wells >= 0")
        if min(self.field_shape) < 2 * self.edge_margin + 32:
            raise SimulationError(
                f"field_shape {self.field_shape} must exceed 2 * edge_margin + 32 pixels"
            )
        wells = max(len(wells) for wells in _week_treatments(self))
        if wells > len(PLATE_ROWS) * len(PLATE_COLUMNS):
            raise SimulationError(f"{wells} wells per plate do not fit on a 96-well plate")


@dataclass(frozen=True)
class Treatment:
    compound: str
    concentration: float
    moa: str
    strength: float  # response of a typical cell, 0..1


@dataclass
class WeekEffect:
    """A week's microscope (illumination pattern, channel gains, camera offset, blur) and its
    cells' culture and staining (factors on some traits)."""

    illumination: np.ndarray  # (height, width), mean 1
    gain: np.ndarray  # (3,)
    offset: np.ndarray  # (3,)
    blur: float
    traits: dict[str, float]


@dataclass
class Site:
    """Where one field of view goes and what is in it."""

    week: int
    plate: str
    replicate: int
    well: str
    site: int
    treatment: Treatment
    key: tuple[int, ...]  # its random streams: (plate, well, site) indices


def simulate_screen(
    out: str | Path, seed: int = 0, spec: ScreenSpec | None = None, *, overwrite: bool = False
) -> dict:
    """Write a simulated BBBC021-like screen to ``out`` (``images/``, ``metadata/``,
    ``truth/``) and return its counts. ``out`` must not exist, or be empty, unless
    ``overwrite``."""
    spec = spec or ScreenSpec()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SimulationError(f"{out} exists and is not a folder")
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    sites = _sites(spec, seed)
    effects = {w: _week_effect(spec, seed, w) for w in range(1, spec.weeks + 1)}
    with staged_dir(out, overwrite=overwrite) as work:
        truth, rows = [], []
        for site in sites:
            images, cells = _render_site(site, spec, effects[site.week], seed)
            rows.append(_write_site(work, site, images, _rng(seed, 3, *site.key)))
            truth.append(cells)
        cells = pd.concat(truth, ignore_index=True)
        _write_metadata(work / "metadata", rows, spec)
        (work / "truth").mkdir()
        write_parquet(cells, work / "truth" / "cells.parquet")
        summary = _summary(sites, cells, spec)
        write_json({**summary, "seed": seed, "spec": asdict(spec)}, work / "truth" / "screen.json")
        write_manifest(work, "simulate", "", seed=seed, **summary)
    return summary


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _treatments(spec: ScreenSpec) -> list[tuple[Treatment, tuple[int, ...]]]:
    """Every (compound, concentration) and the weeks it is on, DMSO first (every week)."""
    combos = list(itertools.combinations(range(1, spec.weeks + 1), spec.weeks_per_compound))
    found = [(Treatment("DMSO", 0.0, "DMSO", 0.0), tuple(range(1, spec.weeks + 1)))]
    middle = (spec.compounds_per_moa - 1) / 2
    for m, moa in enumerate(spec.moas):
        for k in range(spec.compounds_per_moa):
            ec50 = spec.ec50 * 1.5 ** (k - middle)
            name = f"{PHENOTYPES[moa].prefix}-{k + 1}"
            for c in spec.concentrations:
                strength = c / (c + ec50)
                found.append(
                    (Treatment(name, c, moa, strength), combos[(m + k // 2) % len(combos)])
                )
    return found


def _week_treatments(spec: ScreenSpec) -> list[list[Treatment]]:
    """Per week, the treatment of each well of its plates (before shuffling)."""
    treatments = _treatments(spec)
    dmso = treatments[0][0]
    return [
        [dmso] * spec.dmso_wells + [t for t, weeks in treatments[1:] if week in weeks]
        for week in range(1, spec.weeks + 1)
    ]


def _well_names() -> list[str]:
    """The wells of a 96-well plate, inner wells first (as BBBC021 leaves the edge empty)."""

    def edge(name: str) -> bool:
        return name[0] in "AH" or name[1:] in ("01", "12")

    names = [f"{r}{c:02d}" for r in PLATE_ROWS for c in PLATE_COLUMNS]
    return sorted(names, key=edge)


def _sites(spec: ScreenSpec, seed: int) -> list[Site]:
    """All sites, plate by plate, the wells of each plate placed at random."""
    sites, names = [], _well_names()
    for index, week_wells in enumerate(_week_treatments(spec)):
        week = index + 1
        for p in range(spec.plates_per_week):
            plate_index = index * spec.plates_per_week + p
            plate = f"Week{week}_{week}{p + 1:04d}"
            order = _rng(seed, 0, plate_index).permutation(len(week_wells))
            for w, i in enumerate(order):
                for s in range(1, spec.sites_per_well + 1):
                    key = (plate_index, w, s)
                    sites.append(Site(week, plate, p + 1, names[w], s, week_wells[i], key))
    return sorted(sites, key=lambda x: (x.plate, x.well, x.site))


def _week_effect(spec: ScreenSpec, seed: int, week: int) -> WeekEffect:
    """A vignette off-centre times a linear gradient, gains, offsets, blur and trait factors
    of one week."""
    rng = _rng(seed, 1, week)
    height, width = spec.field_shape
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    cx, cy = rng.uniform(-0.4, 0.4, 2)
    vignette = 1 - rng.uniform(0.15, 0.4) * ((x - cx) ** 2 + (y - cy) ** 2) / 2
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0.05, 0.2) * (x * np.cos(angle) + y * np.sin(angle))
    illumination = vignette * gradient
    return WeekEffect(
        illumination=(illumination / illumination.mean()).astype(np.float32),
        gain=rng.lognormal(0.0, 0.25, 3).astype(np.float32),
        offset=rng.uniform(200, 900, 3).astype(np.float32),
        blur=float(rng.uniform(0.3, 1.8)),
        traits={name: float(rng.lognormal(0.0, s)) for name, s in WEEK_SPREAD.items()},
    )


def _place(
    radii: np.ndarray, nuclei: np.ndarray, spec: ScreenSpec, rng: np.random.Generator
) -> np.ndarray:
    """Nucleus centres (x, y), biggest cells first, each at the first random candidate far
    enough from those placed; NaN where none was."""
    height, width = spec.field_shape
    low, high = spec.edge_margin, np.array([width, height]) - spec.edge_margin
    centres = np.full((len(radii), 2), np.nan)
    placed: list[int] = []
    for i in np.argsort(-radii, kind="stable"):
        candidates = rng.uniform(low, high, (TRIES, 2))
        if placed:
            need = np.maximum(0.85 * (radii[i] + radii[placed]), nuclei[i] + nuclei[placed] + 6)
            gaps = np.linalg.norm(candidates[:, None] - centres[placed][None], axis=2)
            fits = (gaps >= need).all(axis=1)
            if not fits.any():
                continue
            candidates = candidates[fits]
        centres[i] = candidates[0]
        placed.append(int(i))
    return centres


def _render_site(
    site: Site, spec: ScreenSpec, effect: WeekEffect, seed: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """The site's uint16 images (3, height, width) and its cells' truth table."""
    rng = _rng(seed, 2, *site.key)
    n = int(rng.integers(spec.cells_per_field[0], spec.cells_per_field[1] + 1))
    response = cell_responses(site.treatment.strength, n, rng)
    traits = cell_traits(site.treatment.moa, response, effect.traits, rng)
    centres = _place(traits["cell_radius"], traits["nucleus_radius"], spec, rng)
    texture = ndi.gaussian_filter(rng.standard_normal(spec.field_shape, np.float32), 1.2)
    texture /= texture.std()
    canvas = np.zeros((3, *spec.field_shape), np.float32)
    kept = np.flatnonzero(~np.isnan(centres[:, 0]))
    for i in kept:
        cell = {name: float(values[i]) for name, values in traits.items()}
        draw_cell(canvas, texture, centres[i], cell, rng)
    plate_gain = _rng(seed, 4, site.key[0]).lognormal(0.0, 0.05, 3).astype(np.float32)
    images = _acquire(canvas, effect, plate_gain, rng)
    t = site.treatment
    cells = pd.DataFrame(
        {
            PLATE: site.plate,
            WELL: site.well,
            SITE: site.site,
            BATCH: f"Week{site.week}",
            COMPOUND: t.compound,
            CONCENTRATION: t.concentration,
            MOA: t.moa,
            "Nuclei_Location_Center_X": centres[kept, 0],
            "Nuclei_Location_Center_Y": centres[kept, 1],
            "Phenotype_Strength": response[kept],
        }
    )
    return images, cells


def _acquire(
    canvas: np.ndarray, effect: WeekEffect, plate_gain: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Blur, illumination, gain, shot noise, camera offset and read noise -> uint16."""
    light = ndi.gaussian_filter(canvas + MEDIUM[:, None, None], (0, effect.blur, effect.blur))
    light *= effect.illumination * (effect.gain * plate_gain)[:, None, None]
    counts = rng.poisson(light) + effect.offset[:, None, None]
    counts += rng.normal(0.0, READ_NOISE, counts.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def _uuid(rng: np.random.Generator) -> str:
    """A random GUID like those in BBBC021's file names (``BEDC2073-A983-...``)."""
    text = rng.bytes(16).hex().upper()
    return "-".join((text[:8], text[8:12], text[12:16], text[16:20], text[20:]))


def _write_site(work: Path, site: Site, images: np.ndarray, rng: np.random.Generator) -> dict:
    """Write the site's three TIFFs; return its row of the image CSV."""
    folder = f"Week{site.week}/{site.plate}"
    (work / "images" / folder).mkdir(parents=True, exist_ok=True)
    t = site.treatment
    row: dict = {"TableNumber": site.week}
    for (name, number), image in zip(CHANNEL_FILES, images, strict=True):
        filename = f"{site.well}_s{site.site}_w{number}{_uuid(rng)}.tif"
        tifffile.imwrite(work / "images" / folder / filename, image, photometric="minisblack")
        row[file_column(name)] = filename
        row[path_column(name)] = folder
    row.update(
        {
            IMAGE_PLATE: site.plate,
            IMAGE_WELL: site.well,
            "Replicate": site.replicate,
            IMAGE_COMPOUND: t.compound,
            IMAGE_CONCENTRATION: f"{t.concentration:.6f}",
        }
    )
    return row


IMAGE_COLUMNS = (  # (name, quoted) as in BBBC021_v1_image.csv
    ("TableNumber", False),
    ("ImageNumber", False),
    *((column(c), True) for c, _ in CHANNEL_FILES for column in (file_column, path_column)),
    (IMAGE_PLATE, True),
    (IMAGE_WELL, True),
    ("Replicate", False),
    (IMAGE_COMPOUND, True),
    (IMAGE_CONCENTRATION, False),
)


def _write_metadata(folder: Path, rows: list[dict], spec: ScreenSpec) -> None:
    """``BBBC021_v1_image.csv`` (strings quoted, LF) and ``BBBC021_v1_moa.csv`` (CR only)."""
    folder.mkdir()
    numbers: dict[int, int] = {}
    lines = [",".join(f'"{n}"' if quoted else n for n, quoted in IMAGE_COLUMNS)]
    for row in rows:
        numbers[row["TableNumber"]] = row["ImageNumber"] = numbers.get(row["TableNumber"], 0) + 1
        values = (f'"{row[n]}"' if quoted else str(row[n]) for n, quoted in IMAGE_COLUMNS)
        lines.append(",".join(values))
    (folder / IMAGE_CSV).write_bytes(("\n".join(lines) + "\n").encode())
    moa = ["compound,concentration,moa"]
    moa += [f"{t.compound},{t.concentration!r},{t.moa}" for t, _ in _treatments(spec)]
    (folder / MOA_CSV).write_bytes("\r".join(moa).encode())


def _summary(sites: list[Site], cells: pd.DataFrame, spec: ScreenSpec) -> dict:
    treatments = _treatments(spec)[1:]
    return {
        "weeks": spec.weeks,
        "plates": len({s.plate for s in sites}),
        "wells": len({(s.plate, s.well) for s in sites}),
        "sites": len(sites),
        "images": 3 * len(sites),
        "cells": len(cells),
        "treatments": len(treatments),
        "compounds": len({t.compound for t, _ in treatments}),
        "moas": len(spec.moas),
    }
