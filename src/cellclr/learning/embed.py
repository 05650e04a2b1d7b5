"""``cellclr embed``: backbone features (not the projection) for every cell of a crop store."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cellclr.config import Config, save_config
from cellclr.embeddings import EMBEDDINGS, FEATURE_PREFIX, EmbeddingWriter
from cellclr.fingerprint import fingerprint
from cellclr.learning.augment import resize
from cellclr.learning.batches import CropBatches
from cellclr.learning.device import autocast, resolve_device
from cellclr.learning.saved_model import load_encoder
from cellclr.metadata import metadata_columns
from cellclr.outputs import read_manifest, staged_dir, write_manifest
from cellclr.store import CropStore, StoreError


def embed_fingerprint(model_dir: Path, store: CropStore, cfg: Config) -> str:
    device = resolve_device(cfg.embed.device).type  # CUDA embeds in bf16
    inputs = [read_manifest(model_dir)["fingerprint"], store.id, device]
    return fingerprint("embed", inputs, cfg, ("embed",))


def embed(
    model_dir: str | Path,
    crops: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``embeddings.parquet``: the store's cell metadata and one feature row per cell."""
    t_start = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    store = CropStore(crops)
    fp = embed_fingerprint(model_dir, store, cfg)
    device = resolve_device(cfg.embed.device)
    encoder, meta = load_encoder(model_dir, device)
    if list(store.channels) != list(meta["channels"]):
        raise StoreError(
            f"{crops} has channels {store.channels} but the model was trained on {meta['channels']}"
        )
    norm = store.normalization(meta["normalize"], meta["normalize_min_cells"])
    n, bs = len(store), cfg.embed.batch_size
    batches = [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]
    metadata = store.cells[metadata_columns(store.cells)]
    names = [f"{FEATURE_PREFIX}{i:04d}" for i in range(encoder.out_dim)]

    with staged_dir(out, overwrite=overwrite, inputs=[model_dir, crops]) as work:
        batches_on_device = CropBatches(store, norm, batches, device)
        with (
            EmbeddingWriter(work / EMBEDDINGS, metadata, names) as writer,
            torch.inference_mode(),
            autocast(device),
        ):
            for x in tqdm(batches_on_device, desc="embed", unit="batch", disable=None):
                writer.append(encoder(resize(x, meta["size"])).float().cpu().numpy())
        save_config(cfg, work / "config.toml")
        write_manifest(
            work,
            "embed",
            fp,
            seconds=round(time.perf_counter() - t_start, 1),
            model=str(model_dir),
            crops=str(crops),
            store=store.id,
            n_cells=n,
            n_features=len(names),
        )
    return out
