"""Where a training step's time goes, for a config: data + augmentation versus the model.

Prints images/s of whole training steps, the share of a step spent reading, normalising and
augmenting (goal: at most 5%), and the batched augmentation throughput per core next to a
per-sample albumentations pipeline like the paper's (when albumentations is installed).

    python bench/train_step.py --config bbbc021-cpu [--crops STORE] [--steps 8]
        [--set model.arch=resnet50 ...] [--summary FILE]

Without --crops it uses a synthetic store of random 68x68 3-channel crops. On CUDA it also
prints the model's achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode) against the bf16
matrix-product rate measured on the same GPU. ``--summary`` appends one tab-separated line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellclr.config import load_config
from cellclr.learning.augment import Augmenter
from cellclr.learning.backbones import build_encoder
from cellclr.learning.batches import CropBatches
from cellclr.learning.device import autocast, resolve_device
from cellclr.learning.losses import nt_xent
from cellclr.learning.methods.simclr import SimCLR
from cellclr.learning.optim import build_optimizer
from cellclr.learning.rng import cell_keys
from cellclr.learning.sampler import epoch_batches
from cellclr.outputs import staged_dir
from cellclr.store import CropStore, finalize_store, write_plate


def synthetic_store(folder: Path, n: int = 2048, size: int = 68, channels: int = 3) -> Path:
    rng = np.random.default_rng(0)
    out = folder / "store"
    with staged_dir(out) as work:
        for p in range(4):
            m = n // 4
            cells = pd.DataFrame(
                {
                    "Metadata_Plate": f"P{p}",
                    "Metadata_Well": "A01",
                    "Metadata_Site": 1,
                    "Metadata_Compound": "c",
                    "Metadata_Concentration": 1.0,
                },
                index=range(m),
            )
            images = rng.integers(0, 4000, (m, channels, size, size), dtype=np.uint16)
            write_plate(work, f"P{p}", images, cells)
        finalize_store(work, [f"ch{i}" for i in range(channels)])
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--crops", type=Path)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--summary", type=Path, help="append a tab-separated result line here")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    tmp = tempfile.TemporaryDirectory()
    store = CropStore(args.crops or synthetic_store(Path(tmp.name)))
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    bs = min(tc.batch_size, len(store))
    batches = (epoch_batches(len(store), bs, 0, 0) * (args.steps + 2))[: args.steps + 2]
    encoder = build_encoder(cfg.model.arch, len(store.channels), cfg.model.stem)
    model = SimCLR(encoder, cfg).to(device, memory_format=torch.channels_last)
    opt = build_optimizer(model, tc.optimizer, tc.lr, tc.weight_decay)
    aug = Augmenter(cfg.augment)
    positions = torch.arange(bs, device=device)
    keys = torch.cat([cell_keys(0, 0, positions, v) for v in (0, 1)])

    def model_step(views: torch.Tensor) -> None:
        with autocast(device):
            z = model(views)
        loss = nt_xent(z[:bs], z[bs:], cfg.simclr.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # Whole steps (read + normalise + augment + forward/backward/step) interleaved with the
    # bound (forward + backward + step alone, on ready views), so drift hits both alike.
    it = iter(CropBatches(store, norm, batches, device, channels_last=False))
    fixed = None
    data_times, step_times, model_times = [], [], []
    for i in range(args.steps + 2):
        sync(device)
        t0 = time.perf_counter()
        x = next(it)
        views = aug(torch.cat([x, x]), keys).contiguous(memory_format=torch.channels_last)
        sync(device)
        t1 = time.perf_counter()
        model_step(views)
        sync(device)
        t2 = time.perf_counter()
        fixed = views if fixed is None else fixed
        model_step(fixed)
        sync(device)
        t3 = time.perf_counter()
        if i >= 2:  # warm-up steps are not counted
            data_times.append(t1 - t0)
            step_times.append(t2 - t0)
            model_times.append(t3 - t2)
    step, bound = float(np.median(step_times)), float(np.median(model_times))
    data_share = float(np.median(data_times)) / step
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {bs}, "
        f"view {cfg.augment.size}px, {cfg.model.arch}/{cfg.model.stem}"
    )
    print(
        f"training step      : {step * 1e3:8.1f} ms   {bs / step:8.1f} images/s "
        f"({2 * bs / step:.1f} views/s)"
    )
    print(f"model alone (bound): {bound * 1e3:8.1f} ms   step / bound = {step / bound:.3f}")
    print(f"data + augmentation: {100 * data_share:8.2f} % of a step (goal <= 5%)")
    tflops = peak = float("nan")
    if device.type == "cuda":
        tflops = step_flops(model_step, fixed) / bound / 1e12
        peak = bf16_peak(device)
        print(f"model FLOP rate    : {tflops:8.1f} TFLOP/s = {100 * tflops / peak:.1f}% of the")
        print(f"                     bf16 matrix-product rate measured here, {peak:.0f} TFLOP/s")
    if args.summary:
        line = [cfg.model.arch, cfg.augment.size, bs, round(bs / step, 1), round(step / bound, 3)]
        line += [round(100 * data_share, 2), f"{tflops:.1f}", f"{peak:.0f}"]
        with args.summary.open("a") as f:
            f.write("\t".join(map(str, ["train", *line])) + "\n")
    if device.type == "cuda":
        return

    # Augmentation throughput, batched on the device, at the config's view size and at the
    # paper's 96 px, next to a per-sample pipeline on one core
    x = next(iter(CropBatches(store, norm, batches[:1], device, channels_last=False)))
    per = f"per core, {torch.get_num_threads()} threads" if device.type == "cpu" else "on the GPU"
    for size in dict.fromkeys([cfg.augment.size, 96]):
        aug = Augmenter(cfg.augment.model_copy(update={"size": size}))
        rate = augment_rate(aug, x, keys[: len(x)], device)
        if device.type == "cpu":
            rate /= torch.get_num_threads()
        print(f"batched augmentation, {size:3d} px: {rate:10.0f} views/s {per}")
    albumentations_rate(x.cpu().numpy())


def step_flops(model_step, views: torch.Tensor) -> float:
    """Floating-point operations of one forward + backward + optimizer step."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model_step(views)
    return float(counter.get_total_flops())


def bf16_peak(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """TFLOP/s of an n x n x n bf16 matrix product on this GPU: the ceiling to compare with."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def augment_rate(aug: Augmenter, x: torch.Tensor, keys: torch.Tensor, device) -> float:
    aug(x, keys)  # warm-up
    n_views, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        aug(x, keys)
        sync(device)
        n_views += len(x)
    return n_views / (time.perf_counter() - t0)


def albumentations_rate(batch: np.ndarray) -> None:
    """The paper's per-sample pipeline at 96 px, on one core."""
    try:
        import albumentations as A
        import cv2
    except ImportError:
        print("albumentations not installed (pip install -e '.[bench]'): no per-sample comparison")
        return
    cv2.setNumThreads(1)
    pipeline = A.Compose(
        [
            A.RandomResizedCrop(size=(96, 96), scale=(0.4, 1.0)),
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.ElasticTransform(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0, hue=0, p=0.8),
            A.GaussianBlur(p=0.5),
            A.Normalize(mean=0.0, std=1.0, max_pixel_value=1.0),
        ]
    )
    images = [np.ascontiguousarray(im.transpose(1, 2, 0)).astype(np.float32) for im in batch]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        for im in images:
            pipeline(image=im)
        n += len(images)
    rate = n / (time.perf_counter() - t0)
    print(f"per-sample albumentations,  96 px: {rate:10.0f} views/s per core (paper-like)")


if __name__ == "__main__":
    main()
