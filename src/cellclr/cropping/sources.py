"""What the crop stage reads, from the ``[crop]`` settings: the fields of view (a BBBC021
folder, an image table or a CellProfiler LoadData table) with their treatments (the table's,
or a plate map's), the channel nuclei are found in, and where nucleus centres come from.

Treatments are optional (JUMP keeps them in plate maps, and most screens are profiled before
anyone knows a mechanism): every cell carries its plate, well and site and whatever
``Metadata_`` columns the table (or the plate map, ``crop.platemap``) has. Where the table names
treatments (``Metadata_Compound``, ``Metadata_Concentration``), every field must have one and a
concentration must be a finite number >= 0; a plate map can also be joined later, by
``cellclr profile --platemap``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellclr.columns import COMPOUND, CONCENTRATION, TREATMENT
from cellclr.config import CropConfig
from cellclr.cropping.sites import CropError
from cellclr.metadata import MetadataError, as_concentrations, require_filled
from cellclr.tables.image_table import read_image_table
from cellclr.tables.locations import SiteKey, read_locations_table


def load_sites(c: CropConfig) -> tuple[pd.DataFrame, list[str]]:
    """The image table and channel names that the ``[crop]`` settings point at, with the plate
    map's treatments joined when one is given."""
    given = [name for name in ("bbbc021", "images_table", "loaddata") if getattr(c, name)]
    if len(given) != 1:
        raise CropError(
            "give one of a BBBC021 folder (--bbbc021), an image table (--images-table with "
            "--channels) or a CellProfiler LoadData table (--loaddata)"
            + (f"; got {', '.join(given)}" if given else "")
        )
    if c.bbbc021:
        from cellclr.datasets.bbbc021 import CHANNELS, bbbc021_image_table

        table, channels = bbbc021_image_table(c.bbbc021), list(CHANNELS)
    elif c.loaddata:
        from cellclr.tables.loaddata import read_loaddata

        table, channels = read_loaddata(c.loaddata, c.channels, c.images_root or None)
    else:
        table = read_image_table(c.images_table, c.channels, c.images_root or None)
        channels = list(c.channels)
    if c.platemap:
        from cellclr.tables.platemap import join_platemap

        table = join_platemap(table, c.platemap)
    return table, channels


def check_treatments(table: pd.DataFrame) -> pd.DataFrame:
    """The fields with their treatment columns checked where there are any (see the module
    docstring): filled for every field, concentrations finite and >= 0, compounds as text."""
    present = [column for column in TREATMENT if column in table]
    if not present:
        return table
    source = "the image table (with its plate map)"
    try:
        require_filled(table, present, source)
        table = table.copy()
        if CONCENTRATION in table:
            table[CONCENTRATION] = as_concentrations(table, CONCENTRATION, source)
    except MetadataError as e:
        raise CropError(
            f"{e}: where the fields name treatments, each needs one (a plate map, --platemap, "
            "gives them by plate and well)"
        ) from None
    if COMPOUND in table:
        table[COMPOUND] = table[COMPOUND].astype(str)
    return table


def nucleus_channel(channels: list[str], c: CropConfig) -> int:
    """The index of the channel nuclei are found in: ``crop.nucleus_channel``, else the one
    named DNA (any case), else the first."""
    if c.nucleus_channel:
        if c.nucleus_channel not in channels:
            raise CropError(
                f"the nucleus channel (crop.nucleus_channel, --nucleus-channel) "
                f"{c.nucleus_channel!r} is not one of the channels read: {', '.join(channels)}"
            )
        return channels.index(c.nucleus_channel)
    upper = [ch.upper() for ch in channels]
    return upper.index("DNA") if "DNA" in upper else 0


def nucleus_table(c: CropConfig, table: pd.DataFrame) -> dict[SiteKey, pd.DataFrame] | None:
    """Nucleus centres per field when ``crop.locations`` is a table (a file); None when it is a
    DeepProfiler folder or not given. A path that is neither is an error."""
    if not c.locations:
        return None
    where = Path(c.locations)
    if where.is_dir():
        return None
    if not where.is_file():
        raise CropError(f"nucleus locations (crop.locations, --locations) not found: {where}")
    return read_locations_table(where, table)
