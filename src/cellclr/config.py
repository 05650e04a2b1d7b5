"""Configuration: typed sections with defaults, read from TOML, overridden by ``key=value``."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from cellclr.errors import CellclrError


class ConfigError(CellclrError, ValueError):
    """A config file or override that cannot be used."""


@dataclass
class DataConfig:
    crops: str = ""  # crop store used by `cellclr run` when --crops is not given
    normalize: str = "plate"  # intensity statistics: plate | batch | global | none
    normalize_min_cells: int = 100  # below this, a plate uses its batch's (then global) stats


@dataclass
class CropConfig:
    bbbc021: str = ""  # a BBBC021 folder (metadata/ and [images/]WeekN/<plate>/)
    images_table: str = ""  # or an image table (CSV/parquet), one path column per channel
    images_root: str = ""  # where the table's relative paths start (default: its folder)
    channels: list[str] = field(default_factory=list)  # channel columns of the image table
    plates: list[str] = field(default_factory=list)  # only these plates (default: all)
    wells: list[str] = field(default_factory=list)  # only these wells (default: all)
    box: int = 96  # side of the square crop centred on each nucleus, in pixels
    illumination: bool = True  # per-plate illumination correction
    illumination_sites: int = 64  # sites sampled per plate to estimate it
    illumination_min_sites: int = 16  # fewer complete sites: no correction (logged)
    locations: str = ""  # folder of nucleus-centre CSVs instead of detection (DeepProfiler)
    nucleus_smoothing: float = 1.0  # nucleus detection on the DNA channel (first channel)
    nucleus_threshold: str = "otsu"
    nucleus_min_area: int = 50
    nucleus_max_area: int = 5000
    nucleus_min_distance: int = 7
    skip_incomplete: bool = False  # skip (and list) sites with a missing image file
    workers: int = 0  # processes; 0 = all cores


@dataclass
class ModelConfig:
    arch: str = "resnet_small"  # resnet_small | resnet18 | resnet50
    stem: str = "small2"  # small (full resolution) | small2 (half) | imagenet (quarter)
    proj_hidden: int = 512
    proj_dim: int = 128


@dataclass
class AugmentConfig:
    size: int = 64  # side of the views fed to the encoder (embedding resizes to it too)
    crop: bool = True  # random resized crop
    crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])  # area fraction
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])  # aspect ratio
    flip: bool = True  # horizontal and vertical flips
    rotate90: bool = True  # rotations by multiples of 90 degrees
    brightness: float = 0.2  # per-channel gain in [1-b, 1+b]; 0 = off
    contrast: float = 0.2  # per-channel contrast around the mean in [1-c, 1+c]; 0 = off
    blur_p: float = 0.5  # probability of a Gaussian blur; 0 = off
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.5])  # in pixels of the view
    noise_p: float = 0.5  # probability of additive Gaussian noise; 0 = off
    noise_std: float = 0.03  # its largest standard deviation (normalised intensity units)


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    optimizer: str = "adamw"  # adamw | lars
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    temperature: float = 0.2
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 1  # epochs
    threads: int = 0  # CPU threads for torch; 0 = all cores


@dataclass
class EmbedConfig:
    batch_size: int = 512
    device: str = "auto"


@dataclass
class ProfileConfig:
    postprocess: str = "none"  # well profiles before the treatment median: none | dmso | tvn


@dataclass
class EvaluateConfig:
    control: str = "DMSO"  # the negative-control compound, not a treatment to classify
    variants: list[str] = field(default_factory=lambda: ["none", "dmso", "tvn"])  # first: headline
    tvn_lambda: float = 1.0  # TVN's regulariser (also for profile.postprocess = "tvn")
    bootstrap: int = 1000  # resamples of the treatments for the 95% intervals; 0 = none
    seed: int = 0
    knn: list[int] = field(default_factory=lambda: [3, 5])  # k-NN voting accuracies
    map: bool = True  # mean average precision of MoA retrieval (needs copairs)
    baselines: list[str] = field(default_factory=list)  # `run` also evaluates: random, classic


@dataclass
class Config:
    crop: CropConfig = field(default_factory=CropConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(default, list) and (not default or isinstance(default[0], str)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return list(value)
    if isinstance(default, list) and isinstance(default[0], int):
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{where}: expected a list of integers, got {value!r}")
        return list(value)
    if isinstance(default, list):
        if not isinstance(value, list) or len(value) != len(default):
            raise ConfigError(f"{where}: expected a list of {len(default)} numbers, got {value!r}")
        return [_coerce(v, d, where) for v, d in zip(value, default, strict=True)]
    raise ConfigError(f"{where}: unsupported value {value!r}")


CHOICES = {
    ("crop", "nucleus_threshold"): ("otsu", "li"),
    ("data", "normalize"): ("plate", "batch", "global", "none"),
    ("evaluate", "baselines"): ("random", "classic"),
    ("evaluate", "variants"): ("none", "dmso", "tvn"),
    ("profile", "postprocess"): ("none", "dmso", "tvn"),
    ("model", "arch"): ("resnet_small", "resnet18", "resnet50"),
    ("model", "stem"): ("small", "small2", "imagenet"),
    ("train", "optimizer"): ("adamw", "lars"),
}


TINY = 1e-12  # "greater than zero"
RANGES = {  # inclusive bounds (None: unbounded); lists are checked element by element
    ("augment", "size"): (8, None),
    ("augment", "crop_scale"): (TINY, 1.0),
    ("augment", "crop_ratio"): (TINY, None),
    ("augment", "brightness"): (0.0, 1.0),
    ("augment", "contrast"): (0.0, 1.0),
    ("augment", "blur_p"): (0.0, 1.0),
    ("augment", "blur_sigma"): (TINY, None),
    ("augment", "noise_p"): (0.0, 1.0),
    ("augment", "noise_std"): (0.0, None),
    ("crop", "box"): (8, None),
    ("crop", "illumination_sites"): (1, None),
    ("crop", "illumination_min_sites"): (1, None),
    ("crop", "nucleus_smoothing"): (0.0, None),
    ("crop", "nucleus_min_area"): (1, None),
    ("crop", "nucleus_max_area"): (1, None),
    ("crop", "nucleus_min_distance"): (1, None),
    ("crop", "workers"): (0, None),
    ("data", "normalize_min_cells"): (1, None),
    ("embed", "batch_size"): (1, None),
    ("evaluate", "bootstrap"): (0, None),
    ("evaluate", "knn"): (1, None),
    ("evaluate", "tvn_lambda"): (0.0, None),
    ("model", "proj_hidden"): (1, None),
    ("model", "proj_dim"): (1, None),
    ("train", "epochs"): (1, None),
    ("train", "batch_size"): (2, None),
    ("train", "lr"): (TINY, None),
    ("train", "weight_decay"): (0.0, None),
    ("train", "warmup_epochs"): (0, None),
    ("train", "temperature"): (TINY, None),
    ("train", "checkpoint_every"): (1, None),
    ("train", "threads"): (0, None),
}
INTERVALS = {("augment", "crop_scale"), ("augment", "crop_ratio"), ("augment", "blur_sigma")}


def _check_value(section: str, key: str, value: Any, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    allowed = CHOICES.get((section, key))
    empty = not values and (section, key) == ("evaluate", "variants")
    if allowed and (empty or any(v not in allowed for v in values)):
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    low, high = RANGES.get((section, key), (None, None))
    for v in values:
        if (low is not None and v < low) or (high is not None and v > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"{where}: {v!r} is out of range (must be {bounds})")
    if (section, key) in INTERVALS and value[0] > value[1]:
        raise ConfigError(f"{where}: {value!r} must be [low, high] with low <= high")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from nested dicts; unknown sections or keys are errors."""
    cfg = Config()
    for section, values in raw.items():
        if not hasattr(cfg, section):
            known = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        sect = getattr(cfg, section)
        for key, value in values.items():
            if not hasattr(sect, key):
                known = ", ".join(f.name for f in dataclasses.fields(sect))
                raise ConfigError(f"{source}: unknown key {section}.{key} (known: {known})")
            where = f"{source}: {section}.{key}"
            value = _coerce(value, getattr(sect, key), where)
            _check_value(section, key, value, where)
            setattr(sect, key, value)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    name, value = text.split("=", 1)
    parts = name.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must look like section.key, e.g. train.epochs")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return parts[0], parts[1], parsed


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults, then the TOML file (if any), then ``--set`` overrides."""
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = config_from_dict(raw, str(path) if path else "config")
    for text in overrides:
        section, key, value = parse_override(text)
        config_from_dict({section: {key: value}}, f"--set {text}")  # validates the key
        merged = cfg.to_dict()
        merged[section][key] = value
        cfg = config_from_dict(merged, f"--set {text}")
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(tomli_w.dumps(cfg.to_dict()))
