"""``cellclr embed``: backbone features (not the projection) for every cell of a crop store."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.config import Config, ConfigLike, as_config
from cellclr.embeddings import EMBEDDINGS, FEATURE_PREFIX, EmbeddingWriter
from cellclr.fingerprint import fingerprint
from cellclr.learning.device import device_kind, resolve_device
from cellclr.learning.distributed import World, barrier, init_distributed
from cellclr.learning.encode import encode
from cellclr.learning.saved_model import check_crop_size, load_encoder
from cellclr.metadata import metadata_columns
from cellclr.outputs import read_manifest
from cellclr.progress import progress_bar
from cellclr.stages import Stage
from cellclr.store import CropStore, StoreError


def embed_fingerprint(model_dir: Path, store: CropStore, cfg: Config) -> str:
    device = device_kind(resolve_device(cfg.embed.device))  # CUDA embeds in bf16 (or fp16)
    inputs = [read_manifest(model_dir)["fingerprint"], store.id, device]
    return fingerprint("embed", inputs, cfg, ("embed",))


def embed(
    model_dir: str | Path,
    crops: str | Path,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    overwrite: bool = False,
    distributed: bool = True,
    any_crop_size: bool = False,
) -> Path:
    """Write ``embeddings.parquet``: the store's cell metadata and one feature row per cell.

    Under ``torchrun`` (and ``distributed``), the processes take turns at the batches, write
    their features to part files, and the main process joins them in order: the output is the
    one process's, row for row. ``distributed=False``: this process alone, even under torchrun.
    Crops of another size than the model learnt from are refused unless ``any_crop_size``.
    """
    cfg = as_config(cfg)
    model_dir, out = Path(model_dir), Path(out)
    if distributed:
        world, device = init_distributed(cfg.embed.device, cfg.train.dist_timeout)
    else:
        world, device = World(), None
    device = device or resolve_device(cfg.embed.device)
    store = CropStore(crops)
    stage = Stage("embed", embed_fingerprint(model_dir, store, cfg), cfg)
    encoder, meta = load_encoder(model_dir, device)
    if list(store.channels) != list(meta["channels"]):
        raise StoreError(
            f"{crops} has channels {store.channels} but the model was trained on {meta['channels']}"
        )
    if not any_crop_size:
        check_crop_size(meta, store, crops, model_dir)
    norm = store.normalization(meta["normalize"], meta["normalize_min_cells"])
    n, bs = len(store), cfg.embed.batch_size
    batches = [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]
    names = [f"{FEATURE_PREFIX}{i:04d}" for i in range(encoder.out_dim)]

    def features() -> Iterator[np.ndarray]:
        """This process's batches (every world.size-th), encoded."""
        bar = partial(
            progress_bar, desc="embed", unit="batch", disable=None if world.main else True
        )
        mine = batches[world.rank :: world.size]
        yield from encode(encoder, store, norm, mine, device, meta["size"], cfg.embed.tta, bar)

    folder = stage.output(out, overwrite=overwrite, inputs=[model_dir, crops], main=world.main)
    with folder as work:
        barrier(world)  # the main process has made the work folder
        metadata = store.cells[metadata_columns(store.cells)]
        if world.size == 1:
            with EmbeddingWriter(work / EMBEDDINGS, metadata, names) as writer:
                for block in features():
                    writer.append(block)
        else:
            _write_part(
                work,
                world,
                features(),
                sum(len(b) for b in batches[world.rank :: world.size]),
                len(names),
            )
            barrier(world)
            if world.main:
                _join_parts(work, world, batches, metadata, names)
        stage.manifest.update(
            model=str(model_dir),
            crops=str(crops),
            store=store.id,
            n_cells=n,
            n_features=len(names),
            processes=world.size,
        )
    barrier(world)  # the others return once the output is in place
    return out


def _part(work: Path, rank: int) -> Path:
    return work / f".features-{rank}.npy"


def _write_part(
    work: Path, world: World, blocks: Iterator[np.ndarray], rows: int, width: int
) -> None:
    """This process's features, in the order of its batches, as a float32 ``.npy``."""
    part = np.lib.format.open_memmap(_part(work, world.rank), "w+", np.float32, (rows, width))
    done = 0
    for block in blocks:
        part[done : done + len(block)] = block
        done += len(block)
    part.flush()
    del part


def _join_parts(
    work: Path,
    world: World,
    batches: list[np.ndarray],
    metadata: pd.DataFrame,
    names: list[str],
) -> None:
    """Write the processes' features in the store's order (batch i came from process
    i mod size), then delete the parts."""
    parts = [np.load(_part(work, r), mmap_mode="r") for r in range(world.size)]
    offsets = [0] * world.size
    with EmbeddingWriter(work / EMBEDDINGS, metadata, names) as writer:
        for i, batch in enumerate(batches):
            r = i % world.size
            writer.append(parts[r][offsets[r] : offsets[r] + len(batch)])
            offsets[r] += len(batch)
    del parts
    for r in range(world.size):
        _part(work, r).unlink()
