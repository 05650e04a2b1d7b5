"""Batched augmentations on the training device, with independent random parameters per sample.

All geometric operations (random resized crop, flips, 90-degree rotations) are folded into one
affine sampling grid, so a batch costs one ``grid_sample``; intensity operations are broadcast
arithmetic; the blur is one grouped convolution with a kernel per sample. Any channel count.
Every random number comes from the sample's own key (``cellclr.learning.rng``): a view depends
on the seed, the epoch, the cell's place in the epoch's order and the view, nothing else.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cellclr.config import AugmentConfig, ConfigError
from cellclr.learning.rng import KeyedRandom

# one stream per random parameter
AREA, RATIO, SHIFT_X, SHIFT_Y, FLIP_X, FLIP_Y, ROTATE = range(1, 8)
CONTRAST, BRIGHTNESS, BLUR, BLUR_SIGMA, NOISE, NOISE_STD, NOISE_PIXELS = range(8, 15)
ELASTIC, ELASTIC_FIELD, GAMMA, OFFSET = range(15, 19)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch to ``size`` x ``size`` (the view the encoder sees at embedding time)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class Augmenter:
    """Turns a batch of normalised crops (B, C, H, W) into random views (B, C, size, size)."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg  # validated when loaded: intervals ordered, numbers finite

    @property
    def geometric(self) -> bool:
        return self.cfg.crop or self.cfg.flip or self.cfg.rotate90 or self.cfg.elastic_p > 0

    def __call__(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Views of ``x``; ``keys`` (int64, one per sample) seed each sample's parameters."""
        cfg = self.cfg
        if len(keys) != len(x):
            raise ValueError(f"{len(x)} crops but {len(keys)} keys")
        r = KeyedRandom(keys.to(x.device))
        if self.geometric:
            x = self._geometry(x, r)
        else:
            resized = resize(x, cfg.size)
            x = resized.clone() if resized is x else resized  # later steps work in place
        if cfg.brightness > 0 or cfg.contrast > 0 or cfg.gamma > 0 or cfg.offset > 0:
            x = self._intensity(x, r)
        if cfg.blur_p > 0:
            x = self._blur(x, r)
        if cfg.noise_p > 0:
            x = self._noise(x, r)
        return x

    def _geometry(self, x: torch.Tensor, r: KeyedRandom) -> torch.Tensor:
        cfg = self.cfg
        b, dev = x.shape[0], x.device
        if cfg.rotate90 and x.shape[-1] != x.shape[-2]:
            raise ConfigError(f"augment.rotate90 needs square crops, got {tuple(x.shape[-2:])}")
        ones = torch.ones(b, device=dev)
        w, h = ones, ones  # half-sizes of the sampled box in normalised coordinates
        if cfg.crop:
            area = r.uniform(AREA, low=cfg.crop_scale[0], high=cfg.crop_scale[1])
            lo, hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
            log_ratio = r.uniform(RATIO, low=lo, high=hi)
            ratio = torch.exp(log_ratio)
            w = torch.sqrt(area * ratio).clamp(max=1.0)
            h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = r.uniform(SHIFT_X, low=-1.0, high=1.0) * (1 - w)
        cy = r.uniform(SHIFT_Y, low=-1.0, high=1.0) * (1 - h)
        fx, fy = ones, ones
        if cfg.flip:
            fx = 1 - 2 * (r.uniform(FLIP_X) < 0.5).float()
            fy = 1 - 2 * (r.uniform(FLIP_Y) < 0.5).float()
        cos, sin = ones, torch.zeros(b, device=dev)
        if cfg.rotate90:
            k = r.integers(ROTATE, 4).float() * (math.pi / 2)
            cos, sin = torch.cos(k).round(), torch.sin(k).round()
        # input = diag(w, h) @ R @ diag(fx, fy) @ output + (cx, cy)
        theta = torch.stack(
            [
                torch.stack([w * cos * fx, -w * sin * fy, cx], dim=1),
                torch.stack([h * sin * fx, h * cos * fy, cy], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = affine_grid(theta, cfg.size)
        if cfg.elastic_p > 0:
            grid = grid + self._elastic(r, b).to(grid.dtype)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def _elastic(self, r: KeyedRandom, b: int) -> torch.Tensor:
        """A smooth random displacement of the sampling grid (B, size, size, 2): normal
        displacements at ``elastic_grid`` x ``elastic_grid`` control points, interpolated
        bicubically, at most about ``elastic_alpha`` pixels; zero for unchosen samples."""
        cfg = self.cfg
        field = r.normal(ELASTIC_FIELD, 2, cfg.elastic_grid, cfg.elastic_grid).clamp(-2, 2) / 2
        size = (cfg.size, cfg.size)
        field = F.interpolate(field, size=size, mode="bicubic", align_corners=True)
        chosen = (r.uniform(ELASTIC) < cfg.elastic_p).float().view(b, 1, 1, 1)
        pixel = 2.0 / cfg.size  # one pixel of the view in normalised coordinates
        return (field * (cfg.elastic_alpha * pixel) * chosen).permute(0, 2, 3, 1)

    def _intensity(self, x: torch.Tensor, r: KeyedRandom) -> torch.Tensor:
        """Contrast around the mean, gain, gamma (on positive values) and offset, per sample and
        channel, in place (``x`` is this call's own tensor): on a CPU, a new tensor of a batch's
        size costs more in page faults than the arithmetic."""
        c = x.shape[1]
        if self.cfg.contrast > 0:
            k = self.cfg.contrast
            factor = r.uniform(CONTRAST, c, 1, 1, low=1 - k, high=1 + k).to(x.dtype)
            mean = x.mean(dim=(2, 3), keepdim=True)
            x.sub_(mean).mul_(factor).add_(mean)
        if self.cfg.brightness > 0:
            k = self.cfg.brightness
            x.mul_(r.uniform(BRIGHTNESS, c, 1, 1, low=1 - k, high=1 + k).to(x.dtype))
        if self.cfg.gamma > 0:  # a channel's response curve: x ** g where x > 0
            k = self.cfg.gamma
            g = r.uniform(GAMMA, c, 1, 1, low=1 - k, high=1 + k).to(x.dtype)
            torch.where(x > 0, x.pow(g), x, out=x)  # (the NaN of x < 0 are not chosen)
        if self.cfg.offset > 0:  # a channel's background
            k = self.cfg.offset
            x.add_(r.uniform(OFFSET, c, 1, 1, low=-k, high=k).to(x.dtype))
        return x

    def _blur(self, x: torch.Tensor, r: KeyedRandom) -> torch.Tensor:
        _, c, hgt, wid = x.shape
        dev = x.device
        lo, hi = self.cfg.blur_sigma
        sigma = r.uniform(BLUR_SIGMA, low=lo, high=hi)
        chosen = r.uniform(BLUR) < self.cfg.blur_p
        rows = _rows(chosen)
        if rows is not None:  # on the host: blur the chosen samples only
            if len(rows) == 0:
                return x
            planes, sigma = x[rows], sigma[rows]
        else:  # on a device: blur all and keep the chosen (choosing rows would wait for it)
            planes = x
        m = len(planes)
        radius = min(math.ceil(3 * hi), (min(hgt, wid) - 1) // 2)
        t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        kernel = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
        k = kernel.shape[1]  # one kernel per (sample, channel) plane, as a grouped convolution
        planes = planes.reshape(1, m * c, hgt, wid)
        planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
        planes = F.conv2d(planes, kernel.view(m * c, 1, k, 1), groups=m * c)
        planes = F.conv2d(planes, kernel.view(m * c, 1, 1, k), groups=m * c)
        blurred = planes.view(m, c, hgt, wid).to(x.dtype)
        if rows is None:
            return torch.where(chosen.view(-1, 1, 1, 1), blurred, x)
        return x.index_copy_(0, rows, blurred)

    def _noise(self, x: torch.Tensor, r: KeyedRandom) -> torch.Tensor:
        std = r.uniform(NOISE_STD, high=self.cfg.noise_std)
        chosen = r.uniform(NOISE) < self.cfg.noise_p
        rows = _rows(chosen)
        if rows is None:  # on a device: every sample's noise, scaled by 0 where not chosen
            noise = r.normal(NOISE_PIXELS, *x.shape[1:]).to(x.dtype)
            return x.add_(noise.mul_((std * chosen).view(-1, 1, 1, 1).to(x.dtype)))
        if len(rows) == 0:
            return x
        noise = r.normal(NOISE_PIXELS, *x.shape[1:], rows=rows).to(x.dtype)
        return x.index_add_(0, rows, noise.mul_(std[rows].view(-1, 1, 1, 1).to(x.dtype)))


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, size, size), align_corners=False)`` as one broadcast sum
    (a batched matrix product with an inner size of 3 is several times slower on CPU)."""
    line = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1
    across = theta[:, None, :, 0] * line[:, None]  # (B, W, 2): the output column's share
    down = theta[:, None, :, 1] * line[:, None] + theta[:, None, :, 2]  # (B, H, 2)
    return down[:, :, None, :] + across[:, None, :, :]


def _rows(chosen: torch.Tensor) -> torch.Tensor | None:
    """The indices of the chosen samples where they cost nothing to find (the tensors are on
    the host), else None: on a GPU, ``nonzero`` would make the host wait for the device, so the
    augmentations there compute every sample and select with masks (the same views)."""
    if chosen.device.type != "cpu":
        return None
    return torch.nonzero(chosen).flatten()
