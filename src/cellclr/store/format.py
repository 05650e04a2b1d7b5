"""The crop store's format: per-plate uint16 arrays (cells x channels x H x W), read memory-mapped.

Layout of a store folder::

    store.json              channel names, crop shape, format version, content id, and
                            each plate file's size and mtime (``integrity``)
    cells.parquet           one row per cell: Metadata_* columns, nucleus location when known,
                            Metadata_CropFile / Metadata_CropRow (where its pixels are)
    normalization.parquet   robust intensity statistics per plate, batch and overall
    plates/<stem>.npy       uint16 array of a plate's crops (``plate_file_stem`` names it)
    plates/<stem>.npy.sha256  the SHA-256 of those crops, computed while writing them
    plates/<stem>.parquet   that plate's rows of the cell index (what finalize_store joins)

Writers fill ``plates/`` one plate at a time (``write_plate``), then ``finalize_store`` builds
the joined index, the statistics and ``store.json``.
"""

from __future__ import annotations

import hashlib
import re

from cellclr.columns import PLATE, SITE, WELL
from cellclr.errors import CellclrError

FORMAT_VERSION = 1
# every cell has these; treatments (Metadata_Compound, Metadata_Concentration), MoA and any other
# Metadata_ column only where they are known
REQUIRED_COLUMNS = (PLATE, WELL, SITE)
LOW_PCT, HIGH_PCT = 1.0, 99.9  # percentiles mapped to 0 and 1 by intensity normalisation
STATS_MAX_CELLS = 1000  # cells sampled per group to estimate the percentiles
STATS_MAX_PIXELS = 2_000_000  # and at most about this many pixels per channel
NORMALIZE_MODES = ("plate", "batch", "global", "well", "cell", "none")


class StoreError(CellclrError, ValueError):
    """A crop store, or the input to one, that cannot be used."""


def plate_file_stem(plate: str) -> str:
    """The name of a plate's files without suffix: the plate name with every character but
    ASCII letters, digits, ``.``, ``_`` and ``-`` replaced by ``_`` (at most 64 characters, no
    leading dot), then ``-`` and 8 hex digits of the SHA-256 of the exact name. Plates whose
    names differ only in replaced characters (``Plate A``, ``Plate_A``, ``Plate/A``) so get
    files of their own, and the name alone picks the file. (Stores written before the hash was
    added stay readable: readers follow ``Metadata_CropFile``.)"""
    plate = str(plate)
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", plate)[:64].lstrip(".")
    digest = hashlib.sha256(plate.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}"
