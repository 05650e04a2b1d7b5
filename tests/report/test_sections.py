"""The report's sections (cellclr.report.sections)."""

from cellclr.report import sections


def test_baselines_are_described() -> None:
    assert sections.about("cellprofiler", {}) == "CellProfiler's measurements (cp_measure)"
    assert sections.about("classic", {}) == "CellProfiler-like features"
