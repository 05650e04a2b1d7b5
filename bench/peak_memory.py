"""Peak GPU memory of a training step at a config's batch size: does the config fit the GPU?

    python bench/peak_memory.py --config bbbc021-gpu [--processes N] [--set ...]
        [--batch B] [--summary FILE]

On a GPU: two whole steps of the configured method (views, forward, loss, backward, optimiser;
the second holds the optimiser's state) on random crops of the config's crop box, at the
per-process batch ``train.batch_size / --processes`` (a run over N GPUs holds about what one GPU
holds at batch B/N), and ``torch.cuda.max_memory_allocated`` against the GPU's memory.

Without a GPU (or with --estimate): an estimate on the meta device, which computes no values:
parameters, gradients and optimiser state in float32, plus the activations the backward pass
keeps, counted in float32 and halved for bf16 autocast. It leaves out the temporaries of the
augmentations and of cuDNN, so a measured peak is higher; say which one you quote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cellclr.config import load_config
from cellclr.learning.device import grad_scaler, precision, resolve_device
from cellclr.learning.distributed import World
from cellclr.learning.methods import Batch, build_method
from cellclr.learning.optim import build_optimizer
from cellclr.learning.rng import view_keys
from cellclr.learning.train import train_step

GB = 1e9


def run_steps(cfg, batch: int, device: torch.device) -> tuple[int, int]:
    """Two training steps; returns (parameters, bytes of activations saved for backward)."""
    channels, box = len(cfg.crop.channels) or 3, cfg.crop.box
    make = torch.empty if device.type == "meta" else torch.rand  # meta has no values
    x = make(batch, channels, box, box, device=device).contiguous(memory_format=torch.channels_last)
    method = build_method(cfg, channels).to(device, memory_format=torch.channels_last)
    weights = {id(p) for p in method.parameters()}
    optimizer = build_optimizer(method.trained(), cfg.train.optimizer, 0.1, 1e-6)
    positions = torch.arange(batch, device=device)[None]
    keys = view_keys(0, 1, positions, range(method.views))
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    step = Batch(x, lambda view: keys[view, 0], labels, gather=None, world=World())
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in weights:
            saved[id(t)] = t.numel() * t.element_size()
        return t

    scaler = grad_scaler(device)
    for _ in range(2):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            train_step(method.trained(), method, optimizer, scaler, step)
    params = sum(p.numel() for p in method.trained().parameters())
    return params, sum(saved.values())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", required=True, help="a shipped config's name or a TOML file")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--processes", type=int, default=1, help="GPUs the global batch spreads over")
    ap.add_argument("--batch", type=int, help="per-process batch (default: the config's / N)")
    ap.add_argument("--estimate", action="store_true", help="the meta-device estimate only")
    ap.add_argument("--summary", type=Path, help="append a tab-separated result line here")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    batch = args.batch or cfg.train.batch_size // args.processes
    device = resolve_device(cfg.train.device)
    stem = Path(args.config).stem
    name = f"{stem} {cfg.train.method} {cfg.model.arch} {cfg.augment.size}px"
    if device.type == "cuda" and not args.estimate:
        torch.cuda.reset_peak_memory_stats(device)
        try:
            params, _ = run_steps(cfg, batch, device)
        except torch.cuda.OutOfMemoryError:
            total = torch.cuda.get_device_properties(device).total_memory / 1e9
            raise SystemExit(
                f"{name}: batch {batch} per process does not fit this GPU's {total:.0f} GB: "
                "run it over more GPUs (--processes N shows one GPU's share) or lower the batch"
            ) from None
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / GB
        total = torch.cuda.get_device_properties(device).total_memory / GB
        how = f"measured ({precision(device)})"
        verdict = f"{peak:.1f} of {total:.1f} GB ({100 * peak / total:.0f}%)"
    else:
        params, activations = run_steps(cfg, batch, torch.device("meta"))
        state = {"adamw": 2, "lars": 1}[cfg.train.optimizer]
        peak = (params * 4 * (2 + state) + activations / 2) / GB
        how = "estimated (meta device, bf16 activations)"
        verdict = f"~{peak:.1f} GB + temporaries"
    print(
        f"{name}: batch {batch} per process ({args.processes} process(es)), "
        f"{params / 1e6:.1f} M parameters; peak memory of a step {how}: {verdict}"
    )
    if args.summary:
        line = ["memory", stem, cfg.model.arch, cfg.augment.size, batch]
        line += [f"{peak:.1f}", how.split()[0]]
        with args.summary.open("a") as f:
            f.write("\t".join(map(str, line)) + "\n")


if __name__ == "__main__":
    main()
