"""``cellclr run``: train -> embed -> profile -> evaluate, skipping stages that are up to date."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from cellclr.config import Config
from cellclr.embed import embed, embed_fingerprint
from cellclr.errors import CellclrError
from cellclr.evaluate import evaluate, evaluate_fingerprint
from cellclr.outputs import MANIFEST, OutputExistsError, read_manifest
from cellclr.profiles import profile, profile_fingerprint
from cellclr.store import CropStore
from cellclr.train import train, train_fingerprint

STAGE_DIRS = {"train": "model", "embed": "embeddings", "profile": "profiles", "evaluate": "eval"}


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
    """Run every stage after import into ``out/{model,embeddings,profiles,eval}``; return the
    evaluation folder."""
    crops = crops or cfg.data.crops
    if not crops:
        raise CellclrError("no crop store: pass --crops or set data.crops in the config")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = CropStore(crops)
    d = {stage: out / name for stage, name in STAGE_DIRS.items()}
    _stage(
        "train",
        d["train"],
        lambda: train_fingerprint(store, cfg),
        lambda ow: train(crops, d["train"], cfg, overwrite=ow, resume=True),
        overwrite,
    )
    _stage(
        "embed",
        d["embed"],
        lambda: embed_fingerprint(d["train"], store, cfg),
        lambda ow: embed(d["train"], crops, d["embed"], cfg, overwrite=ow),
        overwrite,
    )
    _stage(
        "profile",
        d["profile"],
        lambda: profile_fingerprint(d["embed"], cfg),
        lambda ow: profile(d["embed"], d["profile"], cfg, overwrite=ow),
        overwrite,
    )
    _stage(
        "evaluate",
        d["evaluate"],
        lambda: evaluate_fingerprint(d["profile"], cfg),
        lambda ow: evaluate(d["profile"], d["evaluate"], cfg, overwrite=ow),
        overwrite,
    )
    return d["evaluate"]
