"""``cellclr report``: a run folder, with whatever stages it has -> one self-contained HTML page.

The page opens with the headline numbers (NSC, NSCB and drop when MoA was evaluated; else
phenotypic activity, wells and cells), then has one section each for the results (beside any
baselines in ``<run>/baselines/<name>``), training, the plate layout, phenotypic activity and
consistency, per-treatment nearest neighbours and the MoA confusion (only when NSC was
evaluated), a 2-D map of the profiles, example cells, and the config with the stage timings.
Plots are PNGs drawn by matplotlib's Agg backend and embedded as base64, so the file needs
nothing else. Parts that are missing are skipped with a note naming what is missing.

``data`` reads the run, ``figures`` draws the plots (``channels``: which channels the example
cells show, in which colours: ``report.channels`` of the run's config), ``head``,
``sections``, ``plates`` and ``activity`` turn both into plain data for each section (with
``markup``), and the jinja2 template ``templates/report.html`` (autoescaped) lays it out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from cellclr.outputs import atomic_file, check_new_file
from cellclr.report import activity, head, plates, sections
from cellclr.report.data import STAGE_FOLDERS, ReportError, RunData, load_run

__all__ = ["SECTIONS", "ReportError", "RunData", "load_run", "render", "write_report"]

# id, title and the data of each section (None: left out; a "title" in it replaces the
# title), in page order
SECTIONS: tuple[tuple[str, str, Callable[[RunData], dict[str, Any] | None]], ...] = (
    ("results", "Results", sections.results),
    ("training", "Training", sections.training),
    ("plates", "Plate layout", plates.plate_layout),
    ("activity", "Phenotypic activity", activity.activity),
    ("consistency", "Phenotypic consistency", activity.consistency),
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
    shown = [(sid, title, make(run)) for sid, title, make in SECTIONS]
    return _template().render(
        head=head.header(run),
        sections=[
            {"id": sid, "title": data.get("title", title), "data": data}
            for sid, title, data in shown
            if data is not None
        ],
    )


def write_report(run: Path, out: Path | None = None, *, overwrite: bool = False) -> Path:
    """Write the HTML report of a run (default ``run/report.html``) with whatever stages it has;
    return its path. An existing report is replaced only with ``overwrite``."""
    run = Path(run)
    out = Path(out) if out is not None else run / "report.html"
    stages = [run / folder for folder in (*STAGE_FOLDERS, "baselines")]
    check_new_file(out, overwrite, [*stages, run / "results.parquet"])
    page = render(load_run(run))
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
