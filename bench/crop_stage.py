"""Speed of the crop stage against plain TIFF reading of the same files.

Renders BBBC021-sized fields (1280x1024, 3 channels, ~150 nuclei each) into a temporary folder,
then prints sites/s and the ratio of the whole crop stage (illumination, nuclei, crops, store) to
reading the same TIFFs with tifffile (goal: at most 2x), with nucleus detection and with nucleus
centres given as CSV files (as DeepProfiler takes them).

    python bench/crop_stage.py [--sites 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from cellclr.config import load_config
from cellclr.cropping.stage import crop_sites
from cellclr.tables.image_table import read_image_table

CHANNELS = ["DNA", "Tubulin", "Actin"]


def render(
    rng: np.random.Generator, shape=(1024, 1280), n=150
) -> tuple[list[np.ndarray], np.ndarray]:
    """A field of ``n`` nuclei (radius 12-18 px) with soft cytoplasm, and their centres."""
    h, w = shape
    centres = np.column_stack([rng.uniform(20, w - 20, n), rng.uniform(20, h - 20, n)])
    dna = np.zeros(shape, np.float32)
    cyto = np.zeros(shape, np.float32)
    for x, y in centres:
        r = rng.uniform(12, 18)
        y0, y1, x0, x1 = (
            int(max(y - 3 * r, 0)),
            int(min(y + 3 * r, h)),
            int(max(x - 3 * r, 0)),
            int(min(x + 3 * r, w)),
        )
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        dna[y0:y1, x0:x1] += 2500 * (d2 <= r * r)
        cyto[y0:y1, x0:x1] += 800 * np.exp(-d2 / (2 * (2 * r) ** 2))
    images = [dna + 300, cyto + 200, 0.8 * cyto + 250]
    return [np.clip(rng.normal(im, 25), 0, 65535).astype(np.uint16) for im in images], centres


def write_sites(folder: Path, n_sites: int) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_sites):
        well, site = f"B{2 + i // 4:02d}", 1 + i % 4
        images, centres = render(rng)
        row = {
            "Metadata_Plate": "Week1_1",
            "Metadata_Well": well,
            "Metadata_Site": site,
            "Metadata_Compound": "DMSO",
            "Metadata_Concentration": 0.0,
        }
        for name, image in zip(CHANNELS, images, strict=True):
            row[name] = f"{well}_s{site}_{name}.tif"
            tifffile.imwrite(folder / row[name], image)
        loc = folder / "locations" / "Week1_1"
        loc.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            centres, columns=["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]
        ).to_csv(loc / f"{well}-{site}-Nuclei.csv", index=False)
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "sites.csv", index=False)
    return folder / "sites.csv"


def drop_caches() -> bool:
    """Empty the page cache (needs root), so that reads come from the disk; False if refused."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_all(files: list[str]) -> float:
    t0 = time.perf_counter()
    for f in files:
        tifffile.imread(f)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sites", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table = read_image_table(write_sites(folder, args.sites), CHANNELS)
        files = [p for c in CHANNELS for p in table[c]]
        cold = drop_caches()
        reads = {"cold": read_all(files)} if cold else {}
        reads["warm"] = read_all(files)
        print(f"{args.sites} sites of 3 x 1280x1024 uint16, crop stage with {args.workers} workers")
        for kind, seconds in reads.items():
            print(
                f"plain TIFF reading, {kind} cache (1 process): {seconds:7.2f} s  "
                f"{args.sites / seconds:8.1f} sites/s"
            )
        if not cold:
            print("(cold-cache reading not measured: dropping the page cache needs root)")
        runs = {"detection": [], "CSV locations": [f"crop.locations='{folder / 'locations'}'"]}
        for name, extra in runs.items():
            cfg = load_config(None, [f"crop.workers={args.workers}", *extra])
            if cold:
                drop_caches()
            t0 = time.perf_counter()
            summary = crop_sites(table, CHANNELS, folder / f"crops-{len(extra)}", cfg)
            seconds = time.perf_counter() - t0
            ratios = "  ".join(f"{seconds / r:6.1f}x {k}" for k, r in reads.items())
            print(
                f"crop stage, {name:13s}: {seconds:7.2f} s  {args.sites / seconds:6.1f} sites/s "
                f" {summary['cells']} cells  vs reading: {ratios} (goal <= 2x)"
            )


if __name__ == "__main__":
    main()
