"""``cellclr train``: SimCLR on the crops of a crop store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cellclr.config import Config, ConfigError, save_config
from cellclr.errors import CellclrError
from cellclr.fingerprint import fingerprint
from cellclr.learning.augment import Augmenter
from cellclr.learning.backbones import build_encoder
from cellclr.learning.batches import CropBatches
from cellclr.learning.checkpoints import load_torch, save_torch
from cellclr.learning.device import autocast, resolve_device
from cellclr.learning.losses import nt_xent
from cellclr.learning.methods.simclr import SimCLR
from cellclr.learning.optim import build_optimizer, warmup_cosine
from cellclr.learning.saved_model import model_meta, save_model
from cellclr.outputs import atomic_file, staged_dir, write_manifest
from cellclr.store import CropStore

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = ("fingerprint", "epoch", "log", "model", "optimizer", "scheduler", "aug_rng")
LOG = "train_log.jsonl"


class ResumeError(CellclrError, RuntimeError):
    """A checkpoint that does not belong to this training run."""


class NonFiniteLossError(CellclrError, FloatingPointError):
    """The loss became NaN or infinite: training stops before it spoils a checkpoint."""


def train_fingerprint(store: CropStore, cfg: Config) -> str:
    """The crops, the config and the kind of device (CUDA trains in bf16: other numbers)."""
    device = resolve_device(cfg.train.device).type
    return fingerprint("train", [store.id, device], cfg, ("data", "model", "augment", "train"))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """This epoch's shuffled batches (the incomplete last one is dropped); a function of the
    seed and epoch alone, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).numpy()
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(n // batch_size)]


def train(
    crops: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Train a SimCLR model on the store at ``crops``; write ``model.pt`` and logs to ``out``."""
    t_start = time.perf_counter()
    tc = cfg.train
    store = CropStore(crops)
    fp = train_fingerprint(store, cfg)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    levels = norm.source["level"].value_counts().to_dict()
    borrowed = norm.source[norm.source["level"] != cfg.data.normalize]["Metadata_Plate"]
    if len(borrowed):
        tqdm.write(
            f"normalisation: {len(borrowed)} plates with fewer than "
            f"{cfg.data.normalize_min_cells} cells use wider statistics ({levels})"
        )
    _, height, width = store.crop_shape
    if cfg.augment.rotate90 and height != width:
        raise ConfigError(
            f"{crops}: crops are {height}x{width}; augment.rotate90 needs square crops "
            "(--set augment.rotate90=false)"
        )
    n = len(store)
    batch_size = min(tc.batch_size, n)
    if batch_size < 2:
        raise CellclrError(f"{crops}: SimCLR needs at least 2 cells, the store has {n}")
    steps = n // batch_size

    torch.manual_seed(tc.seed)
    model = SimCLR(
        build_encoder(cfg.model.arch, len(store.channels), cfg.model.stem),
        cfg.model.proj_hidden,
        cfg.model.proj_dim,
    ).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tc.optimizer, tc.lr, tc.weight_decay)
    scheduler = warmup_cosine(optimizer, tc.warmup_epochs * steps, tc.epochs * steps)
    augment = Augmenter(cfg.augment)
    aug_rng = torch.Generator(device=device).manual_seed(tc.seed)

    out = Path(out)
    with staged_dir(
        out, overwrite=overwrite, resumable=True, resume=resume, inputs=[crops]
    ) as work:
        start_epoch, log = 0, []
        ck = None
        if resume and (work / CHECKPOINT).is_file():
            hint = "; pass --overwrite to start again"
            ck = load_torch(work / CHECKPOINT, "checkpoint", CHECKPOINT_KEYS, hint)
            if ck["fingerprint"] != fp and overwrite:
                tqdm.write(f"{work / CHECKPOINT} is from another config: starting again")
                ck = None
            elif ck["fingerprint"] != fp:
                raise ResumeError(
                    f"{work / CHECKPOINT} was made with other crops, config or kind of device; "
                    "pass --overwrite to start again"
                )
        if ck is not None:
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            aug_rng.set_state(ck["aug_rng"])
            start_epoch, log = ck["epoch"], ck["log"]
            tqdm.write(f"resuming {out} from epoch {start_epoch}")
        save_config(cfg, work / "config.toml")

        for epoch in range(start_epoch, tc.epochs):
            try:
                record = _train_epoch(
                    model,
                    optimizer,
                    scheduler,
                    augment,
                    aug_rng,
                    store,
                    norm,
                    epoch_batches(n, batch_size, tc.seed, epoch),
                    device,
                    tc.temperature,
                    epoch=epoch + 1,
                    desc=f"epoch {epoch + 1}/{tc.epochs}",
                )
            except NonFiniteLossError as e:
                kept = f"epoch {log[-1]['epoch']}" if log else "none yet"
                raise NonFiniteLossError(
                    f"{e}. Nothing of this epoch was saved; the last checkpoint ({kept}) stays in "
                    f"{work}: lower train.lr (or check the crops) and start again with "
                    "--overwrite, or continue with --resume"
                ) from None
            record = {"epoch": epoch + 1, **record}
            log.append(record)
            tqdm.write(json.dumps(record, allow_nan=False))
            with atomic_file(work / LOG) as tmp:
                tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in log))
            if (epoch + 1) % tc.checkpoint_every == 0 or epoch + 1 == tc.epochs:
                state = {
                    "fingerprint": fp,
                    "epoch": epoch + 1,
                    "log": log,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "aug_rng": aug_rng.get_state(),
                }
                save_torch(state, work / CHECKPOINT)

        save_model(work, model_meta(cfg, store), model.encoder)
        write_manifest(
            work,
            "train",
            fp,
            seconds=round(time.perf_counter() - t_start, 1),
            crops=str(crops),
            device=str(device),
            normalization=levels,
            final_loss=log[-1]["loss"] if log else None,
        )
    return out


def _train_epoch(
    model,
    optimizer,
    scheduler,
    augment,
    aug_rng,
    store,
    norm,
    batches,
    device,
    temperature: float,
    epoch: int,
    desc: str,
) -> dict[str, float]:
    model.train()
    t0 = time.perf_counter()
    losses = []
    bar = tqdm(
        CropBatches(store, norm, batches, device),
        desc=desc,
        unit="batch",
        leave=False,
        disable=None,
    )
    for x in bar:
        b = x.shape[0]
        views = augment(torch.cat([x, x]), aug_rng).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            z = model(views)
        loss = nt_xent(z[:b], z[b:], temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        if len(losses) % 10 == 1:  # .item() waits for the device: not every step
            _check_finite(losses, len(losses) - 10, epoch, len(batches))
            bar.set_postfix(loss=f"{losses[-1].item():.3f}")
    _check_finite(losses, len(losses) - 10, epoch, len(batches))
    seconds = time.perf_counter() - t0
    n_images = sum(len(b) for b in batches)
    return {
        "loss": round(torch.stack(losses).mean().item(), 5),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": round(n_images / seconds, 1),
        "seconds": round(seconds, 1),
    }


def _check_finite(losses: list[torch.Tensor], start: int, epoch: int, steps: int) -> None:
    """Raise at the first non-finite loss from ``start`` on (one sync with the device)."""
    start = max(start, 0)
    finite = torch.isfinite(torch.stack(losses[start:]))
    if not bool(finite.all()):
        step = start + int((~finite).nonzero()[0, 0])
        value = losses[step].item()
        raise NonFiniteLossError(
            f"training stopped: the loss is {value} at epoch {epoch}, step {step + 1} of {steps}"
        )
