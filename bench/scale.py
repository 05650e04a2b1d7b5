"""Peak memory as the screen grows: synthetic embeddings of N cells (55 plates x 60 wells,
Metadata_Plate/Well/Site/Compound/Concentration/MoA/Batch) are written through
``EmbeddingWriter`` with block metadata, then profiled by ``cellclr.profile``, each in a fresh
process whose peak RSS (VmHWM) is reported; the goal is a largest/smallest peak of at most 1.5.
``--in-memory-upto`` also measures the old in-memory path (``well_profiles(pd.read_parquet)``)
up to that size, for comparison. Each size's files are deleted before the next.

    python bench/scale.py [--sizes 100000 400000 1600000] [--features 512] [--tmp DIR]
        [--in-memory-upto 400000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

PLATES, WELLS_PER_PLATE, SITES = 55, 60, 4
COMPOUNDS = ["DMSO", *(f"cmpd{i:02d}" for i in range(1, 39))]
MOAS = ["DMSO", *(f"moa{i:02d}" for i in range(1, 13))]
CONCENTRATIONS = [0.1, 0.3, 1.0, 3.0]
META_BLOCK = 10_000  # metadata rows per block handed to the writer (unrelated to row groups)
APPEND = 4096  # feature rows per append, as embed's batches


def metadata_block(start: int, stop: int, n: int) -> pd.DataFrame:
    """Metadata of cells ``start:stop`` of ``n``: wells contiguous, as a crop store orders
    them; a well's compound, concentration and MoA follow from its plate and position."""
    cell = np.arange(start, stop)
    well = cell * (PLATES * WELLS_PER_PLATE) // n
    plate, position = np.divmod(well, WELLS_PER_PLATE)
    compound = np.where(position < 6, 0, 1 + (position * 7 + plate * 3) % (len(COMPOUNDS) - 1))
    batch = plate // 5 + 1
    moa = np.where(compound == 0, 0, 1 + compound % (len(MOAS) - 1))
    concentration = np.where(compound == 0, 0.0, np.take(CONCENTRATIONS, (position + plate) % 4))
    return pd.DataFrame(
        {
            "Metadata_Plate": [f"Week{b}_{27000 + p}" for b, p in zip(batch, plate, strict=True)],
            "Metadata_Well": [f"{'BCDEFG'[p // 10]}{p % 10 + 2:02d}" for p in position],
            "Metadata_Site": 1 + cell % SITES,
            "Metadata_Compound": np.take(COMPOUNDS, compound),
            "Metadata_Concentration": concentration,
            "Metadata_MoA": np.take(MOAS, moa),
            "Metadata_Batch": [f"Week{b}" for b in batch],
        }
    )


def metadata_blocks(n: int) -> Iterator[pd.DataFrame]:
    for start in range(0, n, META_BLOCK):
        yield metadata_block(start, min(start + META_BLOCK, n), n)


def write(folder: Path, n: int, features: int) -> None:
    """An ``embed`` output folder of ``n`` cells with random features, metadata in blocks."""
    from cellclr.embeddings import EMBEDDINGS, FEATURE_PREFIX, EmbeddingWriter
    from cellclr.outputs import write_manifest

    folder.mkdir(parents=True)
    names = [f"{FEATURE_PREFIX}{i:04d}" for i in range(features)]
    rng = np.random.default_rng(0)
    with EmbeddingWriter(folder / EMBEDDINGS, metadata_blocks(n), names) as writer:
        for start in range(0, n, APPEND):
            rows = min(APPEND, n - start)
            writer.append(rng.standard_normal((rows, features), dtype=np.float32))
    write_manifest(folder, "embed", f"bench-{n}-{features}")


def profile(folder: Path) -> None:
    import cellclr

    cellclr.profile(folder, folder.parent / "profiles", cellclr.load_config(), overwrite=True)


def in_memory(folder: Path) -> None:
    from cellclr.embeddings import EMBEDDINGS
    from cellclr.profiling.profiles import well_profiles

    well_profiles(pd.read_parquet(folder / EMBEDDINGS))


def peak_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(task: str, folder: Path, n: int, features: int) -> None:
    """One measured task, in this (fresh) process; prints its peak memory and seconds."""
    t0 = time.perf_counter()
    if task == "write":
        write(folder, n, features)
    elif task == "profile":
        profile(folder)
    else:
        in_memory(folder)
    print(json.dumps({"peak_mb": peak_mb(), "seconds": time.perf_counter() - t0}))


def measure(task: str, folder: Path, n: int, features: int) -> dict[str, float]:
    args = [sys.executable, __file__, "--child", task, str(folder), str(n), str(features)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{task} of {n} cells failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_disk(tmp: Path, n: int, features: int) -> None:
    need = n * features * 4 * 1.2
    free = shutil.disk_usage(tmp).free
    if free < need:
        sys.exit(f"{tmp}: {free / 1e9:.1f} GB free, {n:,} cells need about {need / 1e9:.1f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000, 1_600_000])
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--in-memory-upto", type=int, default=400_000, help="0: never")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        task, folder, n, features = args.child
        return child(task, Path(folder), int(n), int(features))
    print(
        f"{'cells':>10} {'write MB':>9} {'write s':>8} {'profile MB':>11} {'profile s':>10}"
        f" {'in-memory MB':>13} {'in-memory s':>12}",
        flush=True,
    )
    peaks: dict[str, list[float]] = {"write": [], "profile": []}
    for n in args.sizes:
        check_disk(args.tmp, n, args.features)
        work = Path(tempfile.mkdtemp(prefix="cellclr-scale-", dir=args.tmp))
        try:
            tasks = ["write", "profile"] + (["in-memory"] if n <= args.in_memory_upto else [])
            got = {task: measure(task, work / "embeddings", n, args.features) for task in tasks}
        finally:
            shutil.rmtree(work)
        for task in peaks:
            peaks[task].append(got[task]["peak_mb"])
        old = got.get("in-memory", {"peak_mb": float("nan"), "seconds": float("nan")})
        print(
            f"{n:>10,} {got['write']['peak_mb']:>9.0f} {got['write']['seconds']:>8.1f}"
            f" {got['profile']['peak_mb']:>11.0f} {got['profile']['seconds']:>10.1f}"
            f" {old['peak_mb']:>13.0f} {old['seconds']:>12.1f}",
            flush=True,
        )
    for task, values in peaks.items():
        print(f"{task}: largest/smallest peak {max(values) / min(values):.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
