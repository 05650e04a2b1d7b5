"""The report's sections (cellclr.report.sections)."""

from cellclr.report import sections


def test_baselines_are_described() -> None:
    assert sections.about("cellprofiler", {}) == "CellProfiler's measurements (cp_measure)"
    assert sections.about("classic", {}) == "CellProfiler-like features"


def test_the_batch_measures_are_shown_beside_their_chance() -> None:
    from cellclr.report.formatting import batch_measure

    assert batch_measure({"map": 0.3371, "chance": 0.1049}) == "0.337 (0.105)"
    assert batch_measure({"rate": 0.41, "chance": 0.146}, "rate", percent=True) == "41% (15%)"
    assert batch_measure(None) == batch_measure({"map": None}) == "–"


def test_the_training_figure_gets_a_panel_for_the_label_free_measures(monkeypatch) -> None:
    import pandas as pd

    from cellclr.report import figures

    panels = []
    subplots = figures.subplots
    monkeypatch.setattr(
        figures, "subplots", lambda w, h, n=1: panels.append(n) or subplots(w, h, n)
    )
    log = pd.DataFrame(
        {"epoch": [1, 2], "loss": [5.0, 4.0], "lr": [0.1, 0.0],
         "images_per_s": [100.0, 110.0], "seconds": [1.0, 1.0]}
    )  # fmt: skip
    figures.training_figure(log)
    chosen = log.assign(replicate_map=[None, 0.4], batch_retrieval_map=[None, 0.3])
    figures.training_figure(chosen)
    assert panels == [2, 3]
    best = sections._curves("m", chosen)["selection"]
    assert best == "; replicate mAP 0.400 at its best (epoch 2)"
