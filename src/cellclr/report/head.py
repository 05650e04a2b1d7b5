"""The head of the report page: the run's name and folder, the headline cards (NSC, NSCB and
drop when NSC was evaluated; else phenotypic activity, wells and cells) and a sentence on what
the run holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cellclr.columns import CELL_COUNT, PLATE, WELL
from cellclr.report.activity import activity_of
from cellclr.report.data import RunData
from cellclr.report.formatting import drop, mean_ap, plural, retrieved, score


def levels(run: RunData) -> dict[str, Any]:
    """Cells, wells, plates, treatments and control wells: from ``metrics.json``, else counted
    in the well profiles or the crop store (None where unknown)."""
    found: dict[str, Any] = dict.fromkeys(("cells", "wells", "plates", "treatments", "controls"))
    found.update(run.metrics.get("levels") or {})
    wells = run.wells.get(run.name)
    cells = run.store.cells if run.store is not None else None
    if wells is not None:
        found["wells"] = found["wells"] if found["wells"] is not None else len(wells)
        found["plates"] = found["plates"] or wells[PLATE].nunique()
        if found["cells"] is None and CELL_COUNT in wells:
            found["cells"] = int(wells[CELL_COUNT].sum())
        if found["controls"] is None and run.treatment[0] in wells:
            found["controls"] = int((wells[run.treatment[0]].astype(str) == run.control).sum())
    if cells is not None and PLATE in cells:
        found["cells"] = found["cells"] if found["cells"] is not None else len(cells)
        found["plates"] = found["plates"] or cells[PLATE].nunique()
        if found["wells"] is None and WELL in cells:
            found["wells"] = len(cells[[PLATE, WELL]].drop_duplicates())
    if found["treatments"] is None and run.profiles.get(run.name) is not None:
        found["treatments"] = len(run.profiles[run.name])
    return found


def _count(n: Any) -> str:
    return "?" if n is None else f"{int(n):,}"


def _label_free_cards(run: RunData) -> tuple[list[tuple[str, str, str]], str]:
    """Activity, wells and cells, and a sentence on what the run holds (no NSC evaluated)."""
    lv, act = levels(run), activity_of(run.metrics)
    if act.get("retrieved") is not None:
        n, total = act.get("n_retrieved"), act.get("treatments")
        n = round(act["retrieved"] * total) if n is None and total else n
        value = f"{n}/{total} retrieved" if total else retrieved(act)
        sub = f"mean mAP {mean_ap(act)}; q < {act.get('threshold', 0.05):g} against controls"
    else:
        value = "–"
        sub = "not computed (see Results)" if run.metrics else "not evaluated"
    cards = [
        ("Activity", value, sub),
        ("Wells", _count(lv["wells"]), f"on {plural(lv['plates'] or 0, 'plate')}"),
        ("Cells", _count(lv["cells"]), "in the profiled wells" if run.wells else "in the crops"),
    ]
    parts = []
    if lv["treatments"] is not None:
        parts.append(f"{_count(lv['treatments'])} treatments")
        if lv["controls"] is not None:
            parts[-1] += f" and {plural(lv['controls'], run.control + ' well')}"
    elif "treatments" in run.skipped:
        parts.append(f"no treatments known ({run.skipped['treatments'].rstrip('.')})")
    parts.append(f"{_count(lv['wells'])} wells on {plural(lv['plates'] or 0, 'plate')}")
    if lv["cells"] is not None:
        parts.append(f"{_count(lv['cells'])} cells")
    return cards, ", ".join(parts)


def header(run: RunData) -> dict[str, Any]:
    """The title, headline cards and one sentence each on what was evaluated and the model."""
    m = run.metrics
    evaluated = run.home / "eval" / "metrics.json"
    facts: dict[str, Any] = {}
    if run.has_nsc:
        cards = [
            ("NSC", score(m["nsc"]), "nearest treatment of another compound has the same MoA"),
            ("NSCB", score(m["nscb"]), "… and comes from another batch"),
            ("Drop", drop(m), "NSC − NSCB accuracy"),
        ]
        facts = {key: str(m.get(key, "?")) for key in ("n_treatments", "n_compounds", "n_moas")}
        facts["distance"] = str(m.get("distance", "cosine"))
        facts["dropped"] = ", ".join(m.get("nscb_dropped_moas") or [])
    else:
        cards, facts["summary"] = _label_free_cards(run)
    model, train = run.config.get("model", {}), run.config.get("train", {})
    if model and train:
        facts["model"] = {
            "arch": str(model.get("arch")),
            "stem": str(model.get("stem")),
            "epochs": plural(train.get("epochs"), "epoch"),
            "batch_size": str(train.get("batch_size")),
            "size": str(run.config.get("augment", {}).get("size")),
        }
    finished = datetime.fromtimestamp(evaluated.stat().st_mtime) if evaluated.is_file() else None
    return {
        "name": run.path.resolve().name,
        "folder": str(run.path.resolve()),
        "evaluated": f"evaluated {finished:%Y-%m-%d %H:%M}" if finished else "not evaluated",
        "written": f"{datetime.now():%Y-%m-%d %H:%M}",
        "cards": [{"label": k, "value": v, "sub": s} for k, v, s in cards],
        "facts": facts,
    }
