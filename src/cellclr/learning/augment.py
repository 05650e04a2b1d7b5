"""Batched augmentations on the training device, with independent random parameters per sample.

All geometric operations (random resized crop, flips, 90-degree rotations) are folded into one
affine sampling grid, so a batch costs one ``grid_sample``; intensity operations are broadcast
arithmetic; the blur is one grouped convolution with a kernel per sample. Any channel count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cellclr.config import AugmentConfig, ConfigError


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch to ``size`` x ``size`` (the view the encoder sees at embedding time)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _uniform(
    n: int, low: float, high: float, g: torch.Generator, device: torch.device, *shape: int
) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=g, device=device)


class Augmenter:
    """Turns a batch of normalised crops (B, C, H, W) into random views (B, C, size, size)."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg  # validated when loaded: intervals ordered, numbers finite

    @property
    def geometric(self) -> bool:
        return self.cfg.crop or self.cfg.flip or self.cfg.rotate90

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if self.geometric:
            x = self._geometry(x, g)
        else:
            resized = resize(x, cfg.size)
            x = resized.clone() if resized is x else resized  # later steps work in place
        if cfg.brightness > 0 or cfg.contrast > 0:
            x = self._intensity(x, g)
        if cfg.blur_p > 0:
            x = self._blur(x, g)
        if cfg.noise_p > 0:
            x = self._noise(x, g)
        return x

    def _geometry(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        b, dev = x.shape[0], x.device
        if cfg.rotate90 and x.shape[-1] != x.shape[-2]:
            raise ConfigError(f"augment.rotate90 needs square crops, got {tuple(x.shape[-2:])}")
        ones = torch.ones(b, device=dev)
        w, h = ones, ones  # half-sizes of the sampled box in normalised coordinates
        if cfg.crop:
            area = _uniform(b, *cfg.crop_scale, g, dev)
            log_ratio = _uniform(
                b, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), g, dev
            )
            ratio = torch.exp(log_ratio)
            w = torch.sqrt(area * ratio).clamp(max=1.0)
            h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (2 * torch.rand(b, generator=g, device=dev) - 1) * (1 - w)
        cy = (2 * torch.rand(b, generator=g, device=dev) - 1) * (1 - h)
        fx, fy = ones, ones
        if cfg.flip:
            fx = 1 - 2 * (torch.rand(b, generator=g, device=dev) < 0.5).float()
            fy = 1 - 2 * (torch.rand(b, generator=g, device=dev) < 0.5).float()
        cos, sin = ones, torch.zeros(b, device=dev)
        if cfg.rotate90:
            k = torch.randint(0, 4, (b,), generator=g, device=dev).float() * (math.pi / 2)
            cos, sin = torch.cos(k).round(), torch.sin(k).round()
        # input = diag(w, h) @ R @ diag(fx, fy) @ output + (cx, cy)
        theta = torch.stack(
            [
                torch.stack([w * cos * fx, -w * sin * fy, cx], dim=1),
                torch.stack([h * sin * fx, h * cos * fy, cy], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, [b, x.shape[1], cfg.size, cfg.size], align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def _intensity(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, dev = x.shape[0], x.shape[1], x.device
        if self.cfg.contrast > 0:
            k = self.cfg.contrast
            factor = _uniform(b, 1 - k, 1 + k, g, dev, c, 1, 1)
            mean = x.mean(dim=(2, 3), keepdim=True)
            x = (x - mean) * factor + mean
        if self.cfg.brightness > 0:
            k = self.cfg.brightness
            x = x * _uniform(b, 1 - k, 1 + k, g, dev, c, 1, 1)
        return x

    def _blur(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        dev = x.device
        lo, hi = self.cfg.blur_sigma
        sigma = _uniform(b, lo, hi, g, dev)
        chosen = torch.nonzero(torch.rand(b, generator=g, device=dev) < self.cfg.blur_p).flatten()
        m = len(chosen)
        if m == 0:
            return x
        radius = min(math.ceil(3 * hi), (min(hgt, wid) - 1) // 2)
        t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        kernel = torch.exp(-(t[None] ** 2) / (2 * sigma[chosen, None] ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
        k = kernel.shape[1]  # one kernel per (sample, channel) plane, as a grouped convolution
        planes = x[chosen].reshape(1, m * c, hgt, wid)
        planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
        planes = F.conv2d(planes, kernel.view(m * c, 1, k, 1), groups=m * c)
        planes = F.conv2d(planes, kernel.view(m * c, 1, 1, k), groups=m * c)
        return x.index_copy_(0, chosen, planes.view(m, c, hgt, wid).to(x.dtype))

    def _noise(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        std = _uniform(b, 0.0, self.cfg.noise_std, g, dev)
        chosen = torch.nonzero(torch.rand(b, generator=g, device=dev) < self.cfg.noise_p).flatten()
        if len(chosen) == 0:
            return x
        noise = torch.randn((len(chosen), *x.shape[1:]), generator=g, device=dev, dtype=x.dtype)
        return x.index_add_(0, chosen, noise * std[chosen].view(-1, 1, 1, 1))
