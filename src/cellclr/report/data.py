"""Reading a run folder: what the report shows of the stages that exist, and notes on what is
missing. Files that exist but cannot be read (a truncated ``metrics.json``, a ``.parquet`` that
is not parquet) are an error naming the file."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cellclr.columns import TREATMENT
from cellclr.errors import CellclrError
from cellclr.outputs import compared_runs, current_baselines
from cellclr.store import CropStore, StoreError

STAGE_FOLDERS = ("crops", "model", "embeddings", "profiles", "eval")
# the columns naming a treatment when the config does not say (screen.treatment)


class ReportError(CellclrError, FileNotFoundError):
    """A folder that is not a cellclr run, or a file of it that cannot be read."""


class DamagedFileError(ReportError):
    """A file of the run that cannot be read: truncated, or not what its name says."""


def _damaged(path: Path, problem: str) -> DamagedFileError:
    return DamagedFileError(
        f"{path}: {problem}: the file is damaged (truncated, or overwritten); run the stage that "
        "wrote it again, with --overwrite"
    )


def read_metrics(path: Path) -> dict[str, Any]:
    """A ``metrics.json`` the report needs; a damaged one is one error naming it."""
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _damaged(path, f"not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise _damaged(path, f"not valid JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise _damaged(path, f"not a JSON object but a {type(metrics).__name__}")
    return metrics


def read_run_table(path: Path) -> pd.DataFrame:
    """A parquet table of the run (profiles, neighbours); a damaged one is one error naming it."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise _damaged(path, f"not a parquet table ({e})") from None


def read_log(path: Path) -> pd.DataFrame:
    """A training log (JSON lines); a damaged one is one error naming it."""
    try:
        return pd.read_json(path, lines=True)
    except (UnicodeDecodeError, ValueError) as e:
        raise _damaged(path, f"not valid JSON lines ({e})") from None


@dataclass
class RunData:
    """What the report shows, read from a run folder; optional parts may be None or empty."""

    path: Path
    metrics: dict[str, Any]  # eval/metrics.json ({} when the run was not evaluated)
    nsc: pd.DataFrame | None  # NSC's neighbours (headline variant); None when not computed
    nscb: pd.DataFrame | None
    config: dict[str, Any]  # the parsed model/config.toml ({} when absent)
    train_log: pd.DataFrame | None
    profiles: dict[str, pd.DataFrame]  # treatment profiles: this run's, then each baseline's
    wells: dict[str, pd.DataFrame]  # well profiles, likewise (where present)
    baselines: dict[str, dict[str, Any]]  # other representation -> its metrics.json
    store: CropStore | None
    notes: dict[str, str]  # section id -> why something is missing there
    name: str = "cellclr"  # this run's name (a method's, in a comparison)
    train_logs: dict[str, pd.DataFrame] = field(default_factory=dict)  # other methods' logs
    folders: list[Path] = field(default_factory=list)  # run folders whose stages are timed
    activity: pd.DataFrame | None = None  # per treatment (headline variant), when computed
    consistency: pd.DataFrame | None = None  # per annotation value (headline variant)

    @property
    def control(self) -> str:
        screen = self.config.get("screen") or self.config.get("evaluate") or {}  # older runs
        return str(screen.get("control", "DMSO"))

    @property
    def treatment(self) -> list[str]:
        """The columns naming a treatment; the first equals ``control`` in control wells."""
        screen = self.config.get("screen") or self.config.get("profile") or {}  # older runs
        return list(screen.get("treatment") or TREATMENT)

    @property
    def home(self) -> Path:
        """The run folder whose stages are shown (a comparison's first method)."""
        return (self.folders or [self.path])[0]

    @property
    def has_nsc(self) -> bool:
        """Whether NSC was evaluated (and its neighbour tables are there)."""
        return "nsc" in self.metrics and self.nsc is not None and self.nscb is not None

    @property
    def skipped(self) -> dict[str, str]:
        """Measures that evaluate could not compute, with the reason."""
        return dict(self.metrics.get("skipped") or {})


@dataclass(frozen=True)
class StageTime:
    """How long one stage took, from its ``stage.json``."""

    stage: str
    folder: Path  # relative to the run folder
    seconds: float


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _find_store(run: Path) -> tuple[CropStore | None, str]:
    """The run's crop store (``run/crops``, else the one ``model/stage.json`` names) or why not."""
    if (run / "crops" / "store.json").is_file():
        path = run / "crops"
    else:
        recorded = read_json(run / "model" / "stage.json").get("crops")
        if not recorded:
            return None, "the run records no crop store, so no example cells are shown."
        path = Path(recorded)
    try:
        return CropStore(path), ""
    except (StoreError, OSError) as e:
        return None, f"the crop store could not be opened ({e}), so no example cells are shown."


def _load_baselines(run: Path, notes: dict[str, str]) -> dict[str, dict[str, Any]]:
    found, stale = current_baselines(run)
    baselines = {name: read_metrics(folder / "eval" / "metrics.json") for name, folder in found}
    if stale:
        notes["results"] = (
            f"left out: baselines/{', baselines/'.join(stale)} (unfinished, or made from other "
            "crops than this run)."
        )
    elif not baselines:
        notes["results"] = "no baselines in this run (baselines/<name>/eval/metrics.json)."
    return baselines


def _load_config(run: Path) -> dict[str, Any]:
    for folder in ("model", "eval", "profiles", "embeddings"):
        path = run / folder / "config.toml"
        if path.is_file():
            try:
                return tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError:
                return {}
    return {}


def _headline(table: pd.DataFrame, metrics: dict[str, Any]) -> pd.DataFrame:
    """The rows of the headline post-processing variant (all rows of older runs)."""
    if "Variant" not in table:
        return table
    return table[table["Variant"] == metrics.get("variant", "none")].reset_index(drop=True)


def _eval_table(run: Path, name: str, metrics: dict[str, Any]) -> pd.DataFrame | None:
    path = run / "eval" / f"{name}.parquet"
    return _headline(read_run_table(path), metrics) if path.is_file() else None


def _check_run(run: Path) -> None:
    if not run.is_dir():
        raise ReportError(f"{run}: no such folder")
    if not any((run / folder).is_dir() for folder in STAGE_FOLDERS):
        stages = ", ".join(f"{folder}/" for folder in STAGE_FOLDERS)
        raise ReportError(
            f"{run} is not a cellclr run: it has none of {stages} (nor a compare.json)"
        )


def _methods(run: Path) -> list[tuple[str, Path]]:
    try:
        return compared_runs(run)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ReportError(f"{run / 'compare.json'}: not a cellclr compare manifest ({e})") from None


def load_run(run: Path) -> RunData:
    """Read a run folder with whatever stages it has (or a ``compare`` folder: its first
    method is the run, the other methods are shown beside the baselines); raise ``ReportError``
    for a folder with none of the stages, or a file that cannot be read."""
    run = Path(run)
    methods = _methods(run)
    if methods:
        return _load_comparison(run, methods)
    _check_run(run)
    notes: dict[str, str] = {}
    metrics_path = run / "eval" / "metrics.json"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else {}
    if not metrics_path.is_file():
        notes["eval"] = f"not evaluated: {metrics_path} is missing (`cellclr evaluate` writes it)."
    nsc, nscb = (_eval_table(run, name, metrics) for name in ("nsc", "nscb"))
    if "nsc" in metrics and (nsc is None or nscb is None):
        tables = (("nsc", nsc), ("nscb", nscb))
        gone = [f"{run / 'eval' / n}.parquet" for n, t in tables if t is None]
        notes["neighbours"] = f"NSC was evaluated but {' and '.join(gone)} is missing."
    log_path = run / "model" / "train_log.jsonl"
    train_log = None
    if log_path.is_file() and log_path.stat().st_size:
        train_log = read_log(log_path)
    else:
        notes["training"] = f"no training log ({log_path} is missing or empty)."
    baselines = _load_baselines(run, notes)
    profiles, wells = {}, {}
    for name, folder in [("cellclr", run), *((n, run / "baselines" / n) for n in baselines)]:
        path = folder / "profiles" / "treatments.parquet"
        if path.is_file():
            profiles[name] = read_run_table(path)
        if (folder / "profiles" / "wells.parquet").is_file():
            wells[name] = read_run_table(folder / "profiles" / "wells.parquet")
    if "cellclr" not in profiles:
        notes["map"] = f"no treatment profiles ({run / 'profiles' / 'treatments.parquet'})."
    if "cellclr" not in wells:
        notes["wells"] = f"no well profiles: {run / 'profiles' / 'wells.parquet'} is missing."
    store, why = _find_store(run)
    if why:
        notes["cells"] = why
    return RunData(
        path=run,
        metrics=metrics,
        nsc=nsc,
        nscb=nscb,
        config=_load_config(run),
        train_log=train_log,
        profiles=profiles,
        wells=wells,
        baselines=baselines,
        store=store,
        notes=notes,
        folders=[run],
        activity=_eval_table(run, "activity", metrics),
        consistency=_eval_table(run, "consistency", metrics),
    )


def _load_comparison(folder: Path, methods: list[tuple[str, Path]]) -> RunData:
    """The first method's run, with the other methods and the folder's baselines beside it."""
    (name, first), others = methods[0], methods[1:]
    data = load_run(first)
    data.path, data.name, data.folders = folder, name, [f for _, f in methods]
    data.notes.pop("results", None)
    data.profiles = {name: data.profiles.pop("cellclr")} if "cellclr" in data.profiles else {}
    data.wells = {name: data.wells.pop("cellclr")} if "cellclr" in data.wells else {}
    data.baselines = {}
    baselines, _ = current_baselines(folder)
    for other, path in [*others, *baselines]:
        metrics = path / "eval" / "metrics.json"
        data.baselines[other] = read_metrics(metrics) if metrics.is_file() else {}
        for table, store in (("treatments", data.profiles), ("wells", data.wells)):
            if (path / "profiles" / f"{table}.parquet").is_file():
                store[other] = read_run_table(path / "profiles" / f"{table}.parquet")
        log = path / "model" / "train_log.jsonl"
        if log.is_file() and log.stat().st_size and other not in dict(baselines):
            data.train_logs[other] = read_log(log)
    return data


def stage_times(run: RunData) -> list[StageTime]:
    """The timed stages of the run and of its baselines, from their ``stage.json``."""
    runs = run.folders or [run.path]
    folders = [r / f for r in runs for f in STAGE_FOLDERS]
    folders += sorted(p.parent for p in (run.path / "baselines").glob("*/*/stage.json"))
    times = []
    for folder in folders:
        manifest = read_json(folder / "stage.json")
        if "seconds" in manifest:
            stage = str(manifest.get("stage", folder.name))
            times.append(StageTime(stage, folder.relative_to(run.path), float(manifest["seconds"])))
    return times
