"""The metadata columns the stages share, named once (pycytominer's convention: a column named
``Metadata_*`` describes, every other column is a feature), with what each holds.

Where a cell comes from (every crop store has these):

- ``PLATE`` (text), ``WELL`` (text, ``B02``), ``SITE`` (integer: the field of view in the well);
- ``BATCH`` (text: the unit of a batch effect; by default the plate name before its first ``_``,
  ``Week4_27521`` -> ``Week4``);
- ``CROP_FILE``, ``CROP_ROW``: where a cell's pixels are in the store.

What was done to it, where known (``TREATMENT``, the default of ``screen.treatment``):

- ``COMPOUND`` (text; the control's name, e.g. DMSO, in control wells);
- ``CONCENTRATION`` (a finite number >= 0);
- ``MOA`` (text: the mechanism of action; BBBC021's evaluation grades by it).

Counts the profiles add: ``CELL_COUNT`` (cells of a well or treatment), ``WELL_COUNT`` (wells
of a treatment).
"""

from __future__ import annotations

PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
SITE = "Metadata_Site"
BATCH = "Metadata_Batch"
COMPOUND = "Metadata_Compound"
CONCENTRATION = "Metadata_Concentration"
MOA = "Metadata_MoA"
CELL_COUNT = "Metadata_Cells"
WELL_COUNT = "Metadata_Wells"
CROP_FILE = "Metadata_CropFile"
CROP_ROW = "Metadata_CropRow"

SITE_KEYS = [PLATE, WELL, SITE]  # a field of view
WELL_KEYS = [PLATE, WELL]  # a well
TREATMENT = [COMPOUND, CONCENTRATION]  # a treatment, unless screen.treatment says otherwise

# the type each column holds (text columns are read as text even when they look like numbers)
TYPES: dict[str, type] = {
    PLATE: str,
    WELL: str,
    SITE: int,
    BATCH: str,
    COMPOUND: str,
    CONCENTRATION: float,
    MOA: str,
    CELL_COUNT: int,
    WELL_COUNT: int,
    CROP_FILE: str,
    CROP_ROW: int,
}
