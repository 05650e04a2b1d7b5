"""What the crop stage reads, from the ``[crop]`` settings: the fields of view (a BBBC021
folder, an image table or a CellProfiler LoadData table) with their treatments (the table's,
or a plate map's), the channel nuclei are found in, and where nucleus centres come from.

Treatments are optional in the tables (JUMP keeps them in plate maps), but a crop store needs
``Metadata_Compound`` and ``Metadata_Concentration`` for every cell: they come from the table,
else from ``crop.platemap`` (``--platemap``); a field without them is an error that says to
pass ``--platemap``. The store is never written without them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellclr.config import CropConfig
from cellclr.images.locations import SiteKey, read_locations_table
from cellclr.images.sites import CropError
from cellclr.images.table import read_image_table
from cellclr.metadata import MetadataError, require_filled

TREATMENT = ["Metadata_Compound", "Metadata_Concentration"]


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
        from cellclr.images.bbbc021 import CHANNELS, bbbc021_image_table

        table, channels = bbbc021_image_table(c.bbbc021), list(CHANNELS)
    elif c.loaddata:
        from cellclr.images.loaddata import read_loaddata

        table, channels = read_loaddata(c.loaddata, c.channels, c.images_root or None)
    else:
        table = read_image_table(c.images_table, c.channels, c.images_root or None)
        channels = list(c.channels)
    if c.platemap:
        from cellclr.images.platemap import join_platemap

        table = join_platemap(table, c.platemap)
    return table, channels


def check_treatments(table: pd.DataFrame) -> pd.DataFrame:
    """Refuse fields without a compound and concentration (see the module docstring)."""
    missing = [column for column in TREATMENT if column not in table]
    if missing:
        raise CropError(
            f"no treatment is known for the fields: the image table lacks {', '.join(missing)}; "
            "pass --platemap CSV (crop.platemap), a plate map with plate, well, compound and "
            "concentration columns, to join them by plate and well"
        )
    try:
        require_filled(table, TREATMENT, "the image table (with its plate map)")
    except MetadataError as e:
        raise CropError(f"{e}: every field needs a treatment (--platemap gives them)") from None
    table = table.copy()
    table["Metadata_Compound"] = table["Metadata_Compound"].astype(str)
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
