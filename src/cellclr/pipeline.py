"""``cellclr run``: train -> embed -> profile -> evaluate, skipping stages that are up to date."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from cellclr.baselines import baseline_fingerprint, check_kind, random_model
from cellclr.config import Config
from cellclr.crop import crop, load_sites
from cellclr.embed import embed, embed_fingerprint
from cellclr.errors import CellclrError
from cellclr.evaluate import evaluate, evaluate_fingerprint
from cellclr.outputs import MANIFEST, OutputExistsError, read_manifest
from cellclr.profiles import profile, profile_fingerprint
from cellclr.store import CropStore
from cellclr.train import train, train_fingerprint


def _up_to_date(folder: Path, fp: str) -> bool:
    return (folder / MANIFEST).is_file() and read_manifest(folder)["fingerprint"] == fp


def _stage(
    name: str, folder: Path, fp: Callable[[], str], work: Callable[[bool], object], overwrite: bool
) -> None:
    if folder.exists():
        if _up_to_date(folder, fp()):
            tqdm.write(f"[run] {name}: {folder} is up to date, skipped")
            return
        if not overwrite:
            raise OutputExistsError(
                f"{folder} was made from other inputs or config: pass --overwrite to redo it"
            )
    tqdm.write(f"[run] {name} -> {folder}")
    work(overwrite)


def run(
    cfg: Config, out: str | Path, crops: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Run every stage into ``out/{crops,model,embeddings,profiles,eval}``; return the
    evaluation folder. The crops come from ``crops``, else ``data.crops``, else the ``crop``
    stage (when the config names a BBBC021 folder or an image table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    crops = crops or cfg.data.crops
    if not crops and (cfg.crop.bbbc021 or cfg.crop.images_table):
        tqdm.write(f"[run] crop -> {out / 'crops'}")
        table, channels = load_sites(cfg.crop)
        crops = out / "crops"
        crop(table, channels, crops, cfg, overwrite=overwrite)  # skips finished plates
    if not crops:
        raise CellclrError(
            "no crop store: pass --crops, or set data.crops or crop.bbbc021/crop.images_table"
        )
    store = CropStore(crops)
    model = out / "model"
    _stage(
        "train",
        model,
        lambda: train_fingerprint(store, cfg),
        lambda ow: train(crops, model, cfg, overwrite=ow, resume=True),
        overwrite,
    )
    return _evaluate_model(cfg, model, crops, store, out, overwrite)


def run_baseline(
    kind: str,
    cfg: Config,
    out: str | Path,
    crops: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Evaluate a baseline on the run's crops into ``out/baselines/<kind>/``; return its
    evaluation folder."""
    check_kind(kind)
    out = Path(out)
    crops = crops or cfg.data.crops or (out / "crops" if (out / "crops").is_dir() else None)
    if not crops:
        raise CellclrError("no crop store: pass --crops, or set data.crops in the config")
    store = CropStore(crops)
    folder = out / "baselines" / kind
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model"
    _stage(
        f"baseline {kind}",
        model,
        lambda: baseline_fingerprint(kind, store, cfg),
        lambda ow: random_model(crops, model, cfg, overwrite=ow),
        overwrite,
    )
    return _evaluate_model(cfg, model, crops, store, folder, overwrite)


def _evaluate_model(
    cfg: Config, model: Path, crops: str | Path, store: CropStore, out: Path, overwrite: bool
) -> Path:
    """embed -> profile -> evaluate into ``out/{embeddings,profiles,eval}``."""
    emb, prof, ev = out / "embeddings", out / "profiles", out / "eval"
    _stage(
        "embed",
        emb,
        lambda: embed_fingerprint(model, store, cfg),
        lambda ow: embed(model, crops, emb, cfg, overwrite=ow),
        overwrite,
    )
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
