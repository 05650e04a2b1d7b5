"""The simulated cells: a DMSO cell's traits, each MoA's phenotype as a deviation from it, the
cell-to-cell and week-to-week spread of the traits, and the drawing of one cell into the DNA,
tubulin and actin channels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

AGGREGATE_LEVEL = 6000.0  # peak of an actin aggregate
FIBRES, BUNDLES = 40, 12  # microtubules per cell, and bundles per fully bundled cell

# A DMSO cell: sizes in pixels, intensities in photons before gain.
BASE = {
    "cell_radius": 14.0,
    "nucleus_radius": 7.0,
    "irregularity": 0.12,  # amplitude of the outline's harmonics
    "lobes": 0.0,  # amplitude of the nucleus's lobes
    "micronuclei": 0.0,  # expected number of nuclear fragments
    "dna": 6000.0,
    "dna_texture": 0.15,
    "tubulin": 1000.0,  # diffuse tubulin
    "fibres": 2200.0,  # microtubules
    "bundling": 0.0,  # 0: fine radial microtubules, 1: thick curled bundles
    "actin": 500.0,  # diffuse actin
    "stress_fibres": 900.0,
    "cortex": 2500.0,
    "aggregates": 0.0,  # expected number of actin aggregates
}
# Cell-to-cell spread of the traits: the sigma of a log-normal factor.
JITTER = {
    "cell_radius": 0.1,
    "nucleus_radius": 0.08,
    "dna": 0.12,
    "tubulin": 0.2,
    "fibres": 0.2,
    "actin": 0.2,
    "stress_fibres": 0.3,
    "cortex": 0.2,
}
# Week-to-week spread of the traits (culture and staining): the sigma of a log-normal factor.
WEEK_SPREAD = {
    "cell_radius": 0.06,
    "dna_texture": 0.3,
    "tubulin": 0.3,
    "stress_fibres": 0.3,
    "cortex": 0.25,
}


@dataclass(frozen=True)
class Phenotype:
    """An MoA's compound-name prefix and the traits of a fully responding cell."""

    prefix: str
    targets: dict[str, float]


PHENOTYPES = {
    "Microtubule stabilizers": Phenotype(
        "stab", {"bundling": 1.0, "fibres": 4500.0, "tubulin": 700.0}
    ),
    "Microtubule destabilizers": Phenotype(
        "destab",
        {
            "fibres": 150.0,
            "tubulin": 2600.0,
            "irregularity": 0.02,
            "cell_radius": 11.5,
            "dna": 7500.0,
        },
    ),
    "Actin disruptors": Phenotype(
        "actdis",
        {"cortex": 400.0, "stress_fibres": 80.0, "aggregates": 7.0, "irregularity": 0.26},
    ),
    "DNA damage": Phenotype(
        "dnadam",
        {"nucleus_radius": 9.5, "dna": 10000.0, "dna_texture": 0.3, "cell_radius": 16.5},
    ),
    "Aurora kinase inhibitors": Phenotype(
        "aurora",
        {
            "nucleus_radius": 10.0,
            "lobes": 0.3,
            "micronuclei": 3.0,
            "cell_radius": 19.0,
            "dna": 7000.0,
        },
    ),
    "Protein synthesis": Phenotype(
        "protsyn",
        {
            "cell_radius": 10.5,
            "nucleus_radius": 6.0,
            "dna": 3800.0,
            "tubulin": 600.0,
            "fibres": 1100.0,
            "actin": 300.0,
            "stress_fibres": 400.0,
            "cortex": 1300.0,
        },
    ),
}


def cell_traits(
    moa: str, response: np.ndarray, week: dict[str, float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per cell, each trait moved from DMSO towards the MoA's by the cell's response, times
    the week's factor, with log-normal cell-to-cell spread."""
    targets = PHENOTYPES[moa].targets if moa in PHENOTYPES else {}
    traits = {}
    for name, base in BASE.items():
        value = (base + response * (targets.get(name, base) - base)) * week.get(name, 1.0)
        if name in JITTER:
            value = value * rng.lognormal(0.0, JITTER[name], len(response))
        traits[name] = value
    return traits


def cell_responses(strength: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Cell responses: about a tenth do not respond, the rest spread below the strength."""
    responds = rng.uniform(size=n) >= 0.1
    return np.where(responds, strength * rng.beta(5.0, 1.5, n), 0.0)


def draw_cell(
    canvas: np.ndarray,
    texture: np.ndarray,
    centre: np.ndarray,
    t: dict[str, float],
    rng: np.random.Generator,
) -> None:
    """Add one cell, centred on its nucleus at ``centre`` (x, y), to the three channels."""
    radius = t["cell_radius"]
    amplitudes = t["irregularity"] * rng.standard_normal(4) / np.arange(1, 5)  # harmonics 2-5
    phases = rng.uniform(0, 2 * np.pi, 4)
    shift = rng.normal(0.0, 0.12 * radius, 2)  # the cell body around the nucleus
    half = int(np.ceil(radius * (1 + np.abs(amplitudes).sum()) + np.abs(shift).max() + 3))
    height, width = canvas.shape[1:]
    x, y = centre
    r0, r1 = max(int(y) - half, 0), min(int(y) + half + 1, height)
    c0, c1 = max(int(x) - half, 0), min(int(x) + half + 1, width)
    dy = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(y)
    dx = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(x)

    by, bx = dy - np.float32(shift[1]), dx - np.float32(shift[0])
    distance = np.hypot(bx, by)
    angle = np.arctan2(by, bx)
    outline = np.full_like(distance, radius)
    for k in range(4):
        outline += radius * amplitudes[k] * np.cos((k + 2) * angle + phases[k])
    outline = np.maximum(outline, 0.5 * radius)
    body = np.clip(outline - distance + 0.5, 0, 1)

    patch = (slice(r0, r1), slice(c0, c1))
    nucleus = _nucleus(dx, dy, t, rng)
    canvas[0][patch] += nucleus * t["dna"] * np.exp(t["dna_texture"] * texture[patch])
    canvas[0][patch] += _micronuclei(dx, dy, t, rng)
    fibres = _fibres(distance, angle, radius, t["bundling"], rng)
    tubulin = body * (t["tubulin"] + t["fibres"] * fibres) * (1 - 0.4 * nucleus)
    canvas[1][patch] += tubulin
    canvas[2][patch] += _actin(dx, dy, distance, outline, body, texture[patch], t, rng)


def _nucleus(
    dx: np.ndarray, dy: np.ndarray, t: dict[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Anti-aliased mask of an elliptical nucleus, with lobes of amplitude ``t['lobes']``."""
    elongation = rng.uniform(1.0, 1.3)
    a = np.float32(t["nucleus_radius"] * np.sqrt(elongation))
    b = np.float32(t["nucleus_radius"] / np.sqrt(elongation))
    turn = rng.uniform(0, np.pi)
    u = (dx * np.float32(np.cos(turn)) + dy * np.float32(np.sin(turn))) / a
    v = (dy * np.float32(np.cos(turn)) - dx * np.float32(np.sin(turn))) / b
    rho = np.hypot(u, v)
    lobes = int(rng.integers(3, 6))
    edge = 1 + t["lobes"] * np.cos(lobes * np.arctan2(v, u) + rng.uniform(0, 2 * np.pi))
    return np.clip((edge - rho) * t["nucleus_radius"] + 0.5, 0, 1)


def _micronuclei(
    dx: np.ndarray, dy: np.ndarray, t: dict[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Small DNA fragments just outside the nucleus."""
    dna = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), np.float32)
    for _ in range(rng.poisson(t["micronuclei"])):
        angle = rng.uniform(0, 2 * np.pi)
        reach = t["nucleus_radius"] * (1 + t["lobes"]) + rng.uniform(1.5, 4.0)
        mx, my = reach * np.cos(angle), reach * np.sin(angle)
        disc = np.clip(rng.uniform(1.2, 2.2) - np.hypot(dx - mx, dy - my) + 0.5, 0, 1)
        dna += disc * np.float32(1.2 * t["dna"])
    return dna


def _fibres(
    distance: np.ndarray,
    angle: np.ndarray,
    radius: float,
    bundling: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Microtubules: lines of constant width radiating from the nucleus and curling with the
    distance; each pixel sums its two angular neighbours. Bundling makes them fewer, thicker
    and more curled."""
    count = round(FIBRES - (FIBRES - BUNDLES) * bundling)
    width = np.float32(0.6 + 1.0 * bundling)
    theta = np.sort(rng.uniform(0, 2 * np.pi, count)).astype(np.float32)
    reach = rng.uniform(0.5, 1.2, count).astype(np.float32) * np.float32(radius)
    bright = rng.lognormal(0.0, 0.3, count).astype(np.float32)
    curl = rng.normal(0.0, 0.3) + bundling * rng.choice([-1.5, 1.5])
    turned = (angle - np.float32(curl / radius) * distance) % np.float32(2 * np.pi)
    after = np.searchsorted(theta, turned) % count
    fibres = np.zeros_like(distance)
    for k in (after - 1, after):
        gap = (turned - theta[k] + np.float32(np.pi)) % np.float32(2 * np.pi) - np.float32(np.pi)
        line = np.exp(-0.5 * (distance * gap / width) ** 2)
        fibres += bright[k] * line * (distance < reach[k])
    return fibres


def _actin(
    dx: np.ndarray,
    dy: np.ndarray,
    distance: np.ndarray,
    outline: np.ndarray,
    body: np.ndarray,
    grain: np.ndarray,
    t: dict[str, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Diffuse actin, parallel stress fibres, a grainy cortex ring just inside the outline and
    bright aggregates."""
    turn = rng.uniform(0, np.pi)
    across = dy * np.float32(np.cos(turn)) - dx * np.float32(np.sin(turn))
    grid = np.arange(-len(body) - 2, len(body) + 3, dtype=np.float32)
    profile = ndi.gaussian_filter1d(rng.standard_normal(len(grid)), 0.7)
    profile = np.clip(profile / profile.std() - 0.5, 0, None)
    stress = np.interp(across, grid, profile).astype(np.float32)
    ring = np.exp(-0.5 * ((outline - distance - 1.0) / 1.2) ** 2)
    actin = body * (t["actin"] + t["stress_fibres"] * stress)
    ring *= np.clip(outline - distance + 1.5, 0, 1) * np.exp(0.3 * grain)
    actin += t["cortex"] * ring
    for _ in range(rng.poisson(t["aggregates"])):
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8) * t["cell_radius"]
        gx, gy = reach * np.cos(angle), reach * np.sin(angle)
        spot = np.exp(-((dx - gx) ** 2 + (dy - gy) ** 2) / (2 * 1.3**2))
        actin += spot * np.float32(AGGREGATE_LEVEL * rng.uniform(0.6, 1.4))
    return actin
