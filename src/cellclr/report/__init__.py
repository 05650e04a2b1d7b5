"""The HTML report of a finished run: ``write_report(run)`` -> ``run/report.html``."""

from cellclr.report.data import ReportError, RunData, load_run
from cellclr.report.page import write_report

__all__ = ["ReportError", "RunData", "load_run", "write_report"]
