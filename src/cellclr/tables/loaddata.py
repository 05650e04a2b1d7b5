"""CellProfiler LoadData tables (and CytoTable single-cell tables) as image tables.

What is read (``cptables`` for the metadata names):

- **Images**: ``FileName_<Ch>`` and ``PathName_<Ch>`` per channel, with or without the
  ``Image_`` prefix, the channel with or without CellProfiler's ``Orig`` prefix:
  ``Image_FileName_OrigDNA`` is channel ``DNA``. ``channels`` chooses and orders the channels
  (the others are not read); by default every channel of the table, in its order.
- **Illumination functions** that CellProfiler made: ``FileName_Illum<Ch>`` (and
  ``PathName_Illum<Ch>``), per plate; kept as ``Illumination_<Ch>`` paths and divided out
  instead of estimating our own. A table naming them must name them for every chosen channel.
- **Field metadata**: ``Metadata_*`` or ``Image_Metadata_*``; ``Metadata_Plate``,
  ``Metadata_Well`` and ``Metadata_Site`` are required. A per-object table (one row per cell)
  is reduced to its fields: metadata that varies within a field (object numbers) is dropped,
  the rest is carried to every cell; the rows of one field must name the same files.

Where the files are: with ``root`` (``--images-root``), the table's ``PathName`` (made on
another machine) is replaced: the folder is the longest tail of the ``PathName`` that exists
under ``root`` (``root/<plate folder>/Images`` for ``/old/place/<plate folder>/Images``), else
``root`` itself; a table without ``PathName`` has its file names looked up in ``root``. Without
``root``, ``PathName`` must be a folder on this machine (absolute, or relative to the table's
folder), or, without ``PathName``, the files lie in the table's folder. A ``PathName`` that does
not exist here is an error that says to pass ``--images-root``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from cellclr.columns import SITE_KEYS
from cellclr.metadata import require_filled
from cellclr.tables.cptables import metadata_frame, metadata_name, read_columns
from cellclr.tables.image_table import ImageTableError, check_image_table

FILE = re.compile(r"^(?:Image_)?FileName_(?P<name>.+)$")
PATH = re.compile(r"^(?:Image_)?PathName_(?P<name>.+)$")
ILLUM_PREFIX = "Illumination_"  # our column of a channel's CellProfiler illumination file


class LoadDataError(ImageTableError):
    """A LoadData table that cannot be used."""


def illumination_columns(table: pd.DataFrame, channels: list[str]) -> list[str]:
    """The table's CellProfiler illumination columns of ``channels`` (all or none)."""
    columns = [f"{ILLUM_PREFIX}{ch}" for ch in channels]
    return columns if all(c in table for c in columns) else []


def file_columns(columns: list[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Channel -> the ``FileName`` columns of its images, and of its illumination functions."""
    images: dict[str, list[str]] = {}
    illum: dict[str, list[str]] = {}
    for column in columns:
        match = FILE.match(column)
        if not match:
            continue
        name = match["name"]
        if name.startswith("Illum") and len(name) > 5:
            illum.setdefault(name[5:], []).append(column)
        else:
            channel = name[4:] if name.startswith("Orig") and len(name) > 4 else name
            images.setdefault(channel, []).append(column)
    return images, illum


def choose_channels(asked: list[str], available: dict[str, list[str]], source: str) -> list[str]:
    """The table's names of the ``asked`` channels (exact, else the one equal ignoring case),
    in that order; all of the table's when none are asked."""
    if not available:
        raise LoadDataError(
            f"{source}: no image columns (FileName_<Channel>, Image_FileName_Orig<Channel>)"
        )
    if not asked:
        return list(available)
    chosen = []
    for name in asked:
        folded = [c for c in available if c.lower() == name.lower()]
        match = name if name in available else (folded[0] if len(folded) == 1 else None)
        if match is None:
            raise LoadDataError(
                f"{source}: no channel {name!r} (no column FileName_{name}, "
                f"FileName_Orig{name} or Image_FileName_Orig{name}); the table's channels: "
                + ", ".join(available)
            )
        chosen.append(match)
    repeated = sorted({c for c in chosen if chosen.count(c) > 1})
    if repeated:
        raise LoadDataError(f"{source}: channels {repeated} are asked for more than once")
    return chosen


def read_loaddata(
    path: str | Path, channels: list[str] | None = None, root: str | Path | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """An image table (``table.check_image_table``'s layout, plus ``Illumination_<Ch>`` when
    the table names CellProfiler's functions) and its channel names, from a LoadData or
    CytoTable table (CSV or parquet)."""
    path = Path(path)
    source = str(path)
    raw = read_columns(path, "LoadData table", _wanted)
    images, illum = file_columns(list(raw.columns))
    chosen = choose_channels(list(channels or []), images, source)
    files = {ch: _one(images[ch], ch, "images", source) for ch in chosen}
    lit = [ch for ch in chosen if ch in illum]
    if lit and len(lit) < len(chosen):
        raise LoadDataError(
            f"{source}: names CellProfiler illumination functions (FileName_Illum<Ch>) for "
            f"{', '.join(lit)} but not for {', '.join(c for c in chosen if c not in illum)}: "
            "give them for every channel read, or drop these columns to estimate our own"
        )
    illum_files = {ch: _one(illum[ch], ch, "illumination functions", source) for ch in lit}
    fields = _fields(raw, [*files.values(), *illum_files.values()], source)
    base = path.parent
    for ch, column in files.items():
        fields[ch] = _paths(fields, column, root, base, source)
    for ch, column in illum_files.items():
        fields[f"{ILLUM_PREFIX}{ch}"] = _paths(fields, column, root, base, source)
    raw_columns = [c for c in fields.columns if FILE.match(c) or PATH.match(c)]
    table = fields.drop(columns=raw_columns).reset_index(drop=True)
    return check_image_table(table, chosen, source), chosen


def _wanted(column: str) -> bool:
    return bool(FILE.match(column) or PATH.match(column) or metadata_name(column))


def _one(columns: list[str], channel: str, what: str, source: str) -> str:
    if len(columns) > 1:
        raise LoadDataError(
            f"{source}: columns {', '.join(columns)} all name the {what} of channel {channel}: "
            "keep one"
        )
    return columns[0]


def _fields(raw: pd.DataFrame, file_cols: list[str], source: str) -> pd.DataFrame:
    """One row per field: the metadata constant within each field, and the file columns."""
    meta = metadata_frame(raw)
    missing = [f"{k} (or Image_{k})" for k in SITE_KEYS if k not in meta]
    if missing:
        raise LoadDataError(f"{source}: missing columns {', '.join(missing)}")
    path_cols = [c.replace("FileName_", "PathName_", 1) for c in file_cols]
    files = raw[[c for c in [*file_cols, *path_cols] if c in raw]]
    require_filled(raw, file_cols, source)
    require_filled(meta, SITE_KEYS, source)
    frame = pd.concat([meta, files], axis=1).drop_duplicates()
    if not frame.duplicated(SITE_KEYS).any():
        return frame
    others = [c for c in frame.columns if c not in SITE_KEYS]
    counts = frame.groupby(SITE_KEYS, sort=False)[others].nunique(dropna=False)
    varying = [c for c in others if (counts[c] > 1).any()]
    for column in varying:
        if not column.startswith("Metadata_"):
            key = counts.index[(counts[column] > 1).to_numpy()][0]
            raise LoadDataError(
                f"{source}: the rows of field {' '.join(map(str, key))} (plate, well, site) "
                f"name different files in {column}"
            )
    return frame.drop(columns=varying).drop_duplicates()


def _paths(
    fields: pd.DataFrame, file_col: str, root: str | Path | None, base: Path, source: str
) -> list[str]:
    """The full path of each field's file named in ``file_col`` (see the module docstring)."""
    path_col = file_col.replace("FileName_", "PathName_", 1)
    names = fields[file_col].astype(str)
    if root:
        if path_col in fields:
            found = {v: _under_root(str(v), Path(root)) for v in fields[path_col].dropna().unique()}
            folders = fields[path_col].map(found).fillna(str(root))
        else:
            folders = pd.Series(str(root), index=fields.index)
    elif path_col in fields:
        require_filled(fields, [path_col], source)
        values = fields[path_col].unique()
        found = {v: _local_folder(str(v), path_col, base, source) for v in values}
        folders = fields[path_col].map(found)
    else:
        folders = pd.Series(str(base), index=fields.index)
    paths = [str(Path(f) / n) for f, n in zip(folders, names, strict=True)]
    if root:
        _inside_root(paths, names, file_col, Path(root), source)
    return paths


def _inside_root(paths: list[str], names: pd.Series, column: str, root: Path, source: str) -> None:
    """With ``--images-root``, every file must lie under it (by its path as written: ``..``
    and absolute names are refused, links inside the root are followed as they are)."""
    top = os.path.normpath(os.path.abspath(root))
    for i, path in enumerate(paths):
        if os.path.commonpath([top, os.path.normpath(os.path.abspath(path))]) != top:
            raise LoadDataError(
                f"{source}: {column} names {names.iloc[i]!r}, which lies outside --images-root "
                f"{root} (crop.images_root): the images must be under it"
            )


def _under_root(pathname: str, root: Path) -> str:
    """The folder under ``root`` that stands for ``pathname``: its longest tail that exists
    there, else ``root``."""
    parts = [p for p in re.split(r"[\\/]+", pathname) if p and not p.endswith(":")]
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_dir():
            return str(candidate)
    return str(root)


def _local_folder(value: str, column: str, base: Path, source: str) -> str:
    """``value`` as a folder of this machine (relative to ``base``); an error when absent."""
    folder = Path(value) if Path(value).is_absolute() else base / value
    if "://" in value or not folder.is_dir():
        raise LoadDataError(
            f"{source}: {column} names the folder {value}, which does not exist on this machine "
            "(the table was made elsewhere?): pass --images-root DIR (crop.images_root), the "
            "folder that holds the images, to replace the table's PathName"
        )
    return str(folder)
