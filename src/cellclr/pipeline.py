"""``cellclr run``: (crop ->) train -> embed -> profile -> evaluate, skipping stages that are up
to date; baselines through the same stages; one results table for all of them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from cellclr.baselines.stages import KINDS, baseline_fingerprint, classic_embeddings, random_model
from cellclr.config import Config, ConfigLike, as_config
from cellclr.cropping.stage import _usable_cpus, crop
from cellclr.errors import CellclrError
from cellclr.learning.distributed import World, barrier, init_distributed, world_from_env
from cellclr.learning.embed import embed, embed_fingerprint
from cellclr.learning.train import Callback, train_fingerprint
from cellclr.learning.train import train as train_model
from cellclr.outputs import (
    MANIFEST,
    OutputExistsError,
    compared_crops,
    compared_runs,
    current_baselines,
    read_json_object,
    read_manifest,
    write_parquet,
)
from cellclr.profiling.evaluate import evaluate, evaluate_fingerprint, results_table
from cellclr.profiling.profiles import profile, profile_fingerprint
from cellclr.profiling.selection import LabelFreeSelection
from cellclr.store import CropStore

log = logging.getLogger(__name__)

RESULTS = "results.parquet"


def _up_to_date(folder: Path, fp: str) -> bool:
    return (folder / MANIFEST).is_file() and read_manifest(folder)["fingerprint"] == fp


def _stage(
    name: str, folder: Path, fp: Callable[[], str], work: Callable[[bool], object], overwrite: bool
) -> None:
    say = log.info if world_from_env().main else (lambda _: None)
    if folder.exists():
        if _up_to_date(folder, fp()):
            say(f"[run] {name}: {folder} is up to date, skipped")
            return
        if not overwrite:
            raise OutputExistsError(
                f"{folder} was made from other inputs or config: pass --overwrite to redo it"
            )
    say(f"[run] {name} -> {folder}")
    work(overwrite)


def train(
    crops: str | Path,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train ``train.method`` on the store at ``crops`` into ``out`` (as ``cellclr train``):
    ``cellclr.learning.train.train`` with the label-free selection measures logged every
    ``train.select_every`` epochs (``profiling.selection.LabelFreeSelection``), then
    ``callbacks``."""
    cfg = as_config(cfg)
    chosen = [LabelFreeSelection(CropStore(crops), cfg)] if cfg.train.select_every else []
    return train_model(crops, out, cfg, overwrite=overwrite, callbacks=[*chosen, *callbacks])


def run(
    crops: str | Path | None,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Run every stage into ``out/{crops,model,embeddings,profiles,eval}``, then the baselines
    of ``evaluate.baselines``; return the evaluation folder. The crops come from ``crops``,
    else ``data.crops``, else the ``crop`` stage (when the config names a BBBC021 folder or an
    image table).

    Under ``torchrun``, every process crops its share of the plates, trains and embeds; the
    main process alone then profiles, evaluates and runs the baselines, while the others wait
    (``distributed.barrier``: not subject to ``train.dist_timeout``)."""
    cfg = as_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world, _ = init_distributed(cfg.train.device, cfg.train.dist_timeout)
    crops = crops or cfg.data.crops
    if not crops and (cfg.crop.bbbc021 or cfg.crop.images_table or cfg.crop.loaddata):
        crops = out / "crops"
        _crop_stage(crops, cfg, world, overwrite)
    if not crops:
        raise CellclrError(
            "no crop store: pass --crops, or set data.crops or crop.bbbc021, crop.images_table "
            "or crop.loaddata"
        )
    store = CropStore(crops)
    model = out / "model"
    _stage(
        "train",
        model,
        lambda: train_fingerprint(store, cfg),
        lambda ow: train(crops, model, cfg, overwrite=ow),
        overwrite,
    )
    _embed(cfg, model, crops, store, out, overwrite)
    if not world.main:
        return out / "eval"
    result = _profile_and_evaluate(cfg, out, overwrite)
    for kind in cfg.evaluate.baselines:
        run_baseline(kind, crops, out, cfg, overwrite=overwrite, summary=False)
    write_results(out)
    return result


def _crop_stage(crops: Path, cfg: Config, world: World, overwrite: bool) -> None:
    """``run``'s crop stage (finished plates are skipped). Under torchrun every process first
    crops one shard of the plates (as ``crop --shard RANK/SIZE``) with its share of the node's
    cores; then the main process crops whatever is missing and finalises the store. With
    ``overwrite`` (a store is replaced: no shards) the main process crops alone."""
    if world.main:
        log.info(f"[run] crop -> {crops}")
    if world.size > 1 and not overwrite:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        share = cfg.model_copy(deep=True)
        share.crop.workers = cfg.crop.workers or max(1, _usable_cpus() // per_node)
        crop(crops, share, shard=(world.rank, world.size))
        barrier(world)
    if world.main:
        crop(crops, cfg, overwrite=overwrite)
    barrier(world)


def run_baseline(
    kind: str,
    crops: str | Path | None,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    overwrite: bool = False,
    summary: bool = True,
) -> Path:
    """Evaluate a baseline on the crops (None: ``data.crops``, else those of the ``compare``
    folder ``out``, else ``out/crops``) into ``out/baselines/<kind>/``; return its evaluation
    folder."""
    cfg = as_config(cfg)
    from cellclr.baselines.stages import cellprofiler_embeddings

    features = {"classic": classic_embeddings, "cellprofiler": cellprofiler_embeddings}
    kinds = list(dict.fromkeys([*KINDS, *features]))
    if kind not in kinds:
        raise CellclrError(f"unknown baseline {kind!r}: choose {', '.join(kinds)}")
    out = Path(out)
    own = out / "crops" if (out / "crops").is_dir() else None
    crops = crops or cfg.data.crops or compared_crops(out) or own
    if not crops:
        raise CellclrError("no crop store: pass --crops, or set data.crops in the config")
    store = CropStore(crops)
    folder = out / "baselines" / kind
    folder.mkdir(parents=True, exist_ok=True)

    def fp() -> str:
        return baseline_fingerprint(kind, store, cfg)

    if kind == "random":
        model = folder / "model"
        _stage(
            "baseline random",
            model,
            fp,
            lambda ow: random_model(crops, model, cfg, overwrite=ow),
            overwrite,
        )
        _embed(cfg, model, crops, store, folder, overwrite, distributed=False)
    else:
        emb = folder / "embeddings"
        _stage(
            f"baseline {kind}",
            emb,
            fp,
            lambda ow: features[kind](crops, emb, cfg, overwrite=ow),
            overwrite,
        )
    result = _profile_and_evaluate(cfg, folder, overwrite)
    if summary:
        write_results(out)
    return result


def _embed(
    cfg: Config,
    model: Path,
    crops: str | Path,
    store: CropStore,
    out: Path,
    overwrite: bool,
    distributed: bool = True,
) -> None:
    emb = out / "embeddings"
    _stage(
        "embed",
        emb,
        lambda: embed_fingerprint(model, store, cfg),
        lambda ow: embed(model, crops, emb, cfg, overwrite=ow, distributed=distributed),
        overwrite,
    )


def _profile_and_evaluate(cfg: Config, out: Path, overwrite: bool) -> Path:
    """embeddings -> profile -> evaluate into ``out/{profiles,eval}``."""
    emb, prof, ev = out / "embeddings", out / "profiles", out / "eval"
    _stage(
        "profile",
        prof,
        lambda: profile_fingerprint(emb, cfg),
        lambda ow: profile(emb, prof, cfg, overwrite=ow),
        overwrite,
    )
    _stage(
        "evaluate",
        ev,
        lambda: evaluate_fingerprint(prof, cfg),
        lambda ow: evaluate(prof, ev, cfg, overwrite=ow),
        overwrite,
    )
    return ev


def load_results(run: str | Path) -> pd.DataFrame:
    """The results of the run (or of each method of a ``compare`` folder) and of each baseline
    in it, one row per representation and post-processing variant."""
    run = Path(run)
    baselines, stale = current_baselines(run)
    for name in stale:
        log.warning(f"results: baselines/{name} left out (unfinished, or made from other crops)")
    runs = compared_runs(run) or [("cellclr", run)]
    sources = [(name, folder / "eval") for name, folder in [*runs, *baselines]]
    tables = [
        results_table(read_json_object(ev / "metrics.json"), name)
        for name, ev in sources
        if (ev / "metrics.json").is_file()
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def write_results(run: Path) -> pd.DataFrame:
    results = load_results(run)
    if not results.empty:
        write_parquet(results, run / RESULTS)
    return results


def format_results(results: pd.DataFrame) -> str:
    """The results as a Markdown table: NSC and NSCB counts with 95% intervals, drop and mAP
    ("–" where no MoA was evaluated), and the phenotypic activity (mean mAP, fraction of the
    treatments retrieved), and how much batch the profiles carry (the control wells'
    same-batch retrieval mAP and the share of same-batch nearest neighbours, each with its
    chance level in brackets; lower is better)."""
    from cellclr.report.formatting import batch_measure  # as the report shows them

    def cell(row: pd.Series, task: str) -> str:
        if pd.isna(row[f"{task}_total"]):
            return "–"
        text = f"{row[f'{task}_correct']}/{row[f'{task}_total']} ({row[f'{task}_pct']:.1f}%"
        if pd.notna(row[f"{task}_ci_low"]):
            text += f", {row[f'{task}_ci_low']:.0f}-{row[f'{task}_ci_high']:.0f}"
        return text + ")"

    def number(value: float, form: str = ".3f") -> str:
        return "–" if pd.isna(value) else format(value, form)

    lines = [
        "| profiles | variant | NSC (95% CI) | NSCB (95% CI) | drop | mAP | mAP batch "
        "| activity mAP | retrieved | controls same-batch mAP | same-batch neighbours |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in results.iterrows():
        name = r["representation"]
        if str(r.get("supervision", "none")).startswith("weak"):
            name += " (weakly supervised)"
        retrieved = r.get("activity_retrieved", float("nan"))
        batch_map = batch_measure(
            {"map": r.get("batch_retrieval_map"), "chance": r.get("batch_retrieval_chance")}
        )
        neighbours = batch_measure(
            {"rate": r.get("same_batch_neighbours"), "chance": r.get("same_batch_chance")},
            "rate",
            percent=True,
        )
        lines.append(
            f"| {name} | {r['variant']} | {cell(r, 'nsc')} | {cell(r, 'nscb')} "
            f"| {number(r['drop_pct'], '.1f')} | {number(r['nsc_map'])} | {number(r['nscb_map'])} "
            f"| {number(r.get('activity_map', float('nan')))} "
            f"| {number(100 * retrieved, '.1f')}{'' if pd.isna(retrieved) else '%'} "
            f"| {batch_map} | {neighbours} |"
        )
    return "\n".join(lines)
