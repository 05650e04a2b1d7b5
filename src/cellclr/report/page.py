"""``cellclr report``: a finished run folder -> one self-contained HTML page.

The page opens with the headline numbers, then has one section each for the results (beside any
baselines in ``<run>/baselines/<name>``), training, per-treatment nearest neighbours, the MoA
confusion, a 2-D map of the treatment profiles, example cells, and the config with the stage
timings. Plots are PNGs drawn by matplotlib's Agg backend and embedded as base64, so the file
needs nothing else. Optional parts that are missing are skipped with a note.

``data`` reads the run, ``figures`` draws the plots (``channels``: which channels the example
cells show, in which colours: ``report.channels`` of the run's config), ``sections`` turns both
into plain data for each section, and the jinja2 template ``templates/report.html``
(autoescaped) lays it out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from cellclr.outputs import atomic_file, check_new_file
from cellclr.report import sections
from cellclr.report.data import STAGE_FOLDERS, ReportError, RunData, load_run

__all__ = ["SECTIONS", "ReportError", "RunData", "load_run", "render", "write_report"]

# id, title and the data of each section, in page order
SECTIONS: tuple[tuple[str, str, Callable[[RunData], dict[str, Any]]], ...] = (
    ("results", "Results", sections.results),
    ("training", "Training", sections.training),
    ("neighbours", "Nearest neighbours", sections.neighbours),
    ("confusion", "MoA confusion", sections.confusion),
    ("map", "Treatment profile map", sections.profile_map),
    ("cells", "Example cells", sections.example_cells),
    ("config", "Config and stage timings", sections.config),
)


@cache
def _template() -> Template:
    env = Environment(
        loader=PackageLoader("cellclr.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )
    return env.get_template("report.html")


def render(run: RunData) -> str:
    """The report page as one HTML string."""
    return _template().render(
        head=sections.header(run),
        sections=[{"id": sid, "title": title, "data": make(run)} for sid, title, make in SECTIONS],
    )


def write_report(run: Path, out: Path | None = None, *, overwrite: bool = False) -> Path:
    """Write the HTML report of a finished run (default ``run/report.html``); return its path.
    An existing report is replaced only with ``overwrite``."""
    run = Path(run)
    out = Path(out) if out is not None else run / "report.html"
    stages = [run / folder for folder in (*STAGE_FOLDERS, "baselines")]
    check_new_file(out, overwrite, [*stages, run / "results.parquet"])
    page = render(load_run(run))
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
