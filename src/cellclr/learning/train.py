"""``cellclr train``: a method (SimCLR, SupCon or DINO; ``train.method``) on the crops of a crop
store, in one process or data-parallel under ``torchrun`` (``train.batch_size`` is the global
batch; each process takes its slice of it).

Each epoch's order is a function of the seed and epoch, and each view a function of the seed,
epoch, the cell's place in that order and the view (``cellclr.learning.rng``): so N processes
see exactly the views one process sees, and with synchronised BatchNorm and the gathered loss
they reach the same weights (up to float rounding). Only the main process writes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cellclr.columns import BATCH
from cellclr.config import Config, ConfigError, ConfigLike, as_config
from cellclr.errors import CellclrError
from cellclr.fingerprint import fingerprint
from cellclr.learning.batches import CropBatches
from cellclr.learning.checkpoints import load_torch, save_torch
from cellclr.learning.device import (
    device_kind,
    grad_scaler,
    precision,
    precision_note,
    resolve_device,
)
from cellclr.learning.distributed import (
    World,
    all_max,
    all_mean,
    barrier,
    broadcast,
    gather,
    init_distributed,
    sync_batchnorm,
)
from cellclr.learning.methods import METHODS, Batch, Method, build_method
from cellclr.learning.optim import build_optimizer, warmup_cosine
from cellclr.learning.rng import view_keys
from cellclr.learning.sampler import epoch_batches, group_codes
from cellclr.learning.saved_model import model_meta, save_model
from cellclr.outputs import atomic_file
from cellclr.progress import progress_bar
from cellclr.stages import Stage
from cellclr.store import CropStore, Normalization

logger = logging.getLogger(__name__)  # `log` is the training log

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = ("fingerprint", "epoch", "log", "model", "optimizer", "scheduler")
LOG = "train_log.jsonl"
VIEWS = "keyed-v2"  # how views are drawn: part of the fingerprint


class Callback(Protocol):
    """What ``train`` calls after every epoch (on every process, in step): returns the fields
    to add to the epoch's log line, ``{}`` for none."""

    def on_epoch(self, epoch: int, encoder: torch.nn.Module, world: World) -> dict: ...


class NonFiniteLossError(CellclrError, FloatingPointError):
    """The loss became NaN or infinite: training stops before it spoils a checkpoint."""


def train_fingerprint(store: CropStore, cfg: Config) -> str:
    """The crops, the config and the kind of device (CUDA trains in bf16: other numbers)."""
    device = device_kind(resolve_device(cfg.train.device))
    inputs = [store.id, device, VIEWS]
    sections = ("data", "model", "augment", "train", cfg.train.method)  # the method's own keys
    return fingerprint("train", inputs, cfg, sections)


def global_batch_size(requested: int, n: int, world: World, crops: str | Path) -> int:
    """``train.batch_size``, divisible by the processes; on a store with fewer cells, its cell
    count (rounded down to the processes), and the main process says so."""
    if requested % world.size:
        raise ConfigError(
            f"train.batch_size={requested} is the global batch: it must divide evenly over "
            f"the {world.size} processes"
        )
    size = min(requested, n) // world.size * world.size
    if size < 2:
        raise CellclrError(f"{crops}: training needs at least 2 cells, the store has {n}")
    if size < requested and world.main:
        logger.warning(
            f"{crops}: train.batch_size={requested} is more than the store's {n} cells: "
            f"training on batches of {size}"
        )
    return size


def _normalization(store: CropStore, cfg: Config, world: World) -> tuple[Normalization, dict]:
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    levels = norm.source["level"].value_counts().to_dict()
    borrowed = norm.source[norm.source["level"] != cfg.data.normalize]
    if len(borrowed) and world.main:
        unit = "wells" if cfg.data.normalize == "well" else "plates"
        logger.warning(
            f"normalisation: {len(borrowed)} {unit} with fewer than "
            f"{cfg.data.normalize_min_cells} cells use wider statistics ({levels})"
        )
    return norm, levels


def _resume_state(work: Path, fp: str) -> dict | None:
    """The checkpoint of an unfinished training in ``work`` made with the same crops, config
    and kind of device, to continue; an unfinished training made otherwise is cleared, and
    said so (a retry with other settings starts again). A corrupt checkpoint is an error."""
    path = work / CHECKPOINT
    if path.is_file():
        hint = f"; remove {work} to start again"
        ck = load_torch(path, "checkpoint", CHECKPOINT_KEYS, hint)
        if ck["fingerprint"] == fp:
            return ck
        logger.warning(
            f"train: replacing the unfinished training in {work} (epoch {ck['epoch']}): it was "
            "made with other crops, config or kind of device"
        )
    if any(work.iterdir()):
        shutil.rmtree(work)
        work.mkdir()
    return None


def train(
    crops: str | Path,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train ``train.method`` on the store at ``crops``; write ``model.pt`` and logs to ``out``.

    After each epoch, every callback's ``on_epoch(epoch, encoder, world)`` is called on every
    process; what the main process's callbacks return is added to the epoch's log line (e.g.
    ``cellclr.profiling.selection.LabelFreeSelection``: label-free measures every
    ``train.select_every`` epochs, which ``cellclr train``, ``cellclr run`` and
    ``cellclr.train`` pass).

    An unfinished training of the same crops and settings (``out.partial``, left by a kill or
    an error) is continued from its last checkpoint, to the weights an uninterrupted run
    reaches; one made otherwise is replaced. ``resume`` is accepted for older callers: it is
    what always happens."""
    cfg = as_config(cfg)
    tc = cfg.train
    world, device = init_distributed(tc.device, tc.dist_timeout)
    store = CropStore(crops)
    fp = train_fingerprint(store, cfg)
    stage = Stage("train", fp, cfg)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    norm, levels = _normalization(store, cfg, world)
    _, height, width = store.crop_shape
    if cfg.augment.rotate90 and height != width:
        raise ConfigError(
            f"{crops}: crops are {height}x{width}; augment.rotate90 needs square crops "
            "(--set augment.rotate90=false)"
        )
    n = len(store)
    batch_size = global_batch_size(tc.batch_size, n, world, crops)
    steps = n // batch_size

    batch_codes = None
    if tc.batch_adversary > 0:
        batch_codes = torch.from_numpy(group_codes(store, BATCH))
    method = build_method(
        cfg, len(store.channels), 0 if batch_codes is None else int(batch_codes.max()) + 1
    )
    if world.distributed and tc.sync_bn:
        method = sync_batchnorm(method, device)
    method = method.to(device, memory_format=torch.channels_last)
    trained = method.trained()
    net = trained
    if world.distributed:
        ids = [device] if device.type == "cuda" else None
        net = DistributedDataParallel(trained, device_ids=ids)
    optimizer = build_optimizer(trained, tc.optimizer, tc.lr, tc.weight_decay)
    scaler = grad_scaler(device)
    if world.main and (note := precision_note(device)):
        logger.warning(note)
    scheduler = warmup_cosine(optimizer, tc.warmup_epochs * steps, tc.epochs * steps)
    labels = torch.from_numpy(group_codes(store, cfg.supcon.label)) if method.uses_labels else None
    groups = group_codes(store, cfg.data.balance_by) if cfg.data.sampler == "balanced" else None

    out = Path(out)
    with stage.output(
        out, overwrite=overwrite, inputs=[crops], resumable=True, main=world.main
    ) as work:
        ck = broadcast(_resume_state(work, fp) if world.main else None, world)
        start_epoch, log = 0, []
        if ck is not None:
            method.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            start_epoch, log = ck["epoch"], ck["log"]
            if world.main:
                logger.info(f"resuming {out} from epoch {start_epoch}")
        for epoch in range(start_epoch, tc.epochs):
            try:
                record = _train_epoch(
                    net,
                    method,
                    optimizer,
                    scheduler,
                    scaler,
                    store,
                    norm,
                    epoch_batches(n, batch_size, tc.seed, epoch, groups),
                    labels,
                    device,
                    cfg,
                    world,
                    epoch=epoch + 1,
                    batch_codes=batch_codes,
                )
            except NonFiniteLossError as e:
                kept = f"epoch {log[-1]['epoch']}" if log else "none yet"
                raise NonFiniteLossError(
                    f"{e}. Nothing of this epoch was saved; the last checkpoint ({kept}) stays in "
                    f"{work}: lower train.lr (or check the crops) and run again (other settings "
                    "start again), or run it again as it is to continue from that checkpoint"
                ) from None
            for callback in callbacks:  # every process calls it (it may embed its share)
                record.update(callback.on_epoch(epoch + 1, method.encoder_to_keep(), world))
            log.append({"epoch": epoch + 1, **record})
            if world.main:
                _save_epoch(work, fp, log, method, optimizer, scheduler, scaler, tc)
            barrier(world)  # a checkpoint is either on disk for every process or for none

        if world.main:
            save_model(work, model_meta(cfg, store), method.encoder_to_keep())
        stage.manifest.update(
            crops=str(crops),
            device=str(device),
            precision=precision(device),
            processes=world.size,
            backend=dist.get_backend() if world.distributed else None,
            normalization=levels,
            final_loss=log[-1]["loss"] if log else None,
            method=tc.method,
            supervision=supervision(cfg),
            batch_size=batch_size,  # the global batch used: train.batch_size or the store's
        )
    barrier(world)  # the others return once the output is in place
    return out


def _save_epoch(
    work: Path, fp: str, log: list[dict], model, optimizer, scheduler, scaler, tc
) -> None:
    """The epoch's log line, and a checkpoint every ``checkpoint_every`` epochs and at the end."""
    logger.info(json.dumps(log[-1], allow_nan=False))
    with atomic_file(work / LOG) as tmp:
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in log))
    epoch = log[-1]["epoch"]
    if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
        state = {
            "fingerprint": fp,
            "epoch": epoch,
            "log": log,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),  # empty unless training in fp16
        }
        save_torch(state, work / CHECKPOINT)


def supervision(cfg: Config) -> str:
    """``none``, or which labels a weakly supervised method trained on."""
    uses_labels = METHODS[cfg.train.method].uses_labels
    return f"weak: {cfg.supcon.label} labels" if uses_labels else "none"


def _train_epoch(
    net,
    method: Method,
    optimizer,
    scheduler,
    scaler,
    store: CropStore,
    norm: Normalization,
    batches: list[np.ndarray],
    labels: torch.Tensor | None,
    device: torch.device,
    cfg: Config,
    world: World,
    epoch: int,
    batch_codes: torch.Tensor | None = None,
) -> dict[str, float]:
    method.train()
    t0 = time.perf_counter()
    size = len(batches[0])  # the global batch
    local = size // world.size
    start = world.rank * local
    mine = [b[start : start + local] for b in batches]
    seed, epochs = cfg.train.seed, cfg.train.epochs
    # the epoch's keys and labels, on the device at once: a step copies nothing to it
    steps = torch.arange(len(batches), device=device)[:, None] * size
    positions = steps + start + torch.arange(local, device=device)  # in the global order
    keys = view_keys(seed, epoch, positions, range(method.views))  # (views, steps, local)
    if labels is not None:
        labels = labels[torch.from_numpy(np.stack(mine))].to(device)  # (steps, local)
    if batch_codes is not None:
        batch_codes = batch_codes[torch.from_numpy(np.stack(mine))].to(device)
    losses: list[torch.Tensor] = []
    bar = progress_bar(
        CropBatches(store, norm, mine, device, channels_last=False),
        desc=f"epoch {epoch}/{epochs}",
        unit="batch",
        leave=False,
        disable=None if world.main else True,
    )
    for step, x in enumerate(bar):
        batch = Batch(
            crops=x,
            keys=lambda view, s=step: keys[view, s],
            labels=None if labels is None else labels[step],
            gather=gather if world.distributed else None,
            world=world,
            batches=None if batch_codes is None else batch_codes[step],
        )
        losses.append(train_step(net, method, optimizer, scaler, batch))
        with warnings.catch_warnings():  # fp16: the scaler skips the steps whose gradients
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")  # overflow
            scheduler.step()
        method.after_step((epoch - 1 + (step + 1) / len(batches)) / epochs)
        if len(losses) % 10 == 1:  # .item() waits for the device: not every step
            _check_finite(losses, len(losses) - 10, epoch, len(batches), world)
            bar.set_postfix(loss=f"{losses[-1].item():.3f}")
    _check_finite(losses, len(losses) - 10, epoch, len(batches), world)
    seconds = time.perf_counter() - t0
    return {
        "loss": round(all_mean(torch.stack(losses).mean(), world).item(), 5),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": round(len(batches) * size / seconds, 1),
        "seconds": round(seconds, 1),
    }


def train_step(net, method: Method, optimizer, scaler, batch: Batch) -> torch.Tensor:
    """One optimiser step on this process's slice of a global batch; returns the loss, on the
    device. Nothing in it waits for the device (tests run it on the meta device, where any
    read of a value fails), unless fp16 training's scaler checks the gradients for overflow."""
    loss = method.loss(net, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _check_finite(
    losses: list[torch.Tensor], start: int, epoch: int, steps: int, world: World
) -> None:
    """Raise, on every process at once, at the first non-finite loss from ``start`` on (one
    sync with the device)."""
    start = max(start, 0)
    finite = torch.isfinite(torch.stack(losses[start:]))
    bad = torch.nonzero(~finite).flatten()
    first = torch.tensor(float(-(start + int(bad[0])) if len(bad) else -steps), dtype=torch.float64)
    step = int(-all_max(first.to(losses[0].device), world).item())  # the earliest over processes
    if step < steps:
        value = losses[step].item()
        raise NonFiniteLossError(
            f"training stopped: the loss is {value} at epoch {epoch}, step {step + 1} of {steps}"
        )
