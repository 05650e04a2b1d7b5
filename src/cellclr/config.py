"""Configuration: typed sections with defaults, read from TOML, overridden by ``key=value``.

The sections are pydantic models: types are strict (no ``"3"`` for 3, no 1 for true), numbers
must be finite, choices and ranges are checked when the config is loaded (and when a field is
assigned), and unknown sections or keys are errors.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cellclr.columns import COMPOUND, CONCENTRATION
from cellclr.errors import CellclrError, naming
from cellclr.shipped import is_name, listing, shipped_path


class ConfigError(CellclrError, ValueError):
    """A config file or override that cannot be used."""


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=1)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]


def interval(low: float | None = None, high: float | None = None) -> Any:
    """A ``[low, high]`` list of two numbers, each within the given bounds."""
    return Annotated[
        list[Annotated[float, Field(gt=low, le=high)]], Field(min_length=2, max_length=2)
    ]


class CropConfig(Section):
    bbbc021: str = ""  # a BBBC021 folder (metadata/ and [images/]WeekN/<plate>/)
    images_table: str = ""  # or an image table (CSV/parquet), one path column per channel
    loaddata: str = ""  # or a CellProfiler LoadData / CytoTable table (FileName_<Ch>, ...)
    platemap: str = ""  # a plate map (CSV) joined by plate and well: treatments at crop time
    images_root: str = ""  # where the table's relative paths start (default: its folder)
    channels: list[str] = []  # channels to read, in this order (image table columns, LoadData)
    plates: list[str] = []  # only these plates (default: all)
    wells: list[str] = []  # only these wells (default: all)
    box: Annotated[int, Field(ge=8)] = 96  # side of the square crop centred on each nucleus
    illumination: bool = True  # per-plate illumination correction
    illumination_sites: Count = 64  # sites sampled per plate to estimate it
    illumination_min_sites: Count = 16  # fewer complete sites: no correction (logged)
    locations: str = ""  # nucleus centres instead of detection: a DeepProfiler folder of CSVs
    # or a CellProfiler object table (Nuclei_Location_Center_X/Y), csv or parquet
    nucleus_channel: str = ""  # the channel nuclei are found in (default: DNA, else the first)
    edge: Literal["skip", "pad"] = "skip"  # boxes that leave the field: skipped, or zero-padded
    nucleus_smoothing: NonNegative = 1.0
    nucleus_threshold: Literal["otsu", "li"] = "otsu"
    nucleus_min_area: Count = 50
    nucleus_max_area: Count = 5000
    nucleus_min_distance: Count = 7
    nucleus_split_depth: Annotated[float, Field(gt=0)] = 1.0  # distance-ridge dip that splits
    skip_incomplete: bool = False  # skip (and list) sites with a missing image file
    workers: Annotated[int, Field(ge=0)] = 0  # processes; 0 = all cores


class DataConfig(Section):
    crops: str = ""  # crop store used by `cellclr run` when --crops is not given
    # intensity statistics: per plate, batch, well, overall, each crop's own (cell), or none
    normalize: Literal["plate", "batch", "global", "well", "cell", "none"] = "plate"
    normalize_min_cells: Count = 100  # below this, a plate (well) uses its batch's (plate's) stats
    sampler: Literal["uniform", "balanced"] = "uniform"  # balanced: each group equally often
    balance_by: str = "treatment"  # treatment (compound + concentration), or a Metadata_ column


class ModelConfig(Section):
    arch: Literal["resnet_small", "resnet18", "resnet50"] = "resnet_small"
    stem: Literal["small", "small2", "imagenet"] = "small2"  # full, half, quarter resolution
    proj_hidden: Count = 512
    proj_dim: Count = 128


class AugmentConfig(Section):
    size: Annotated[int, Field(ge=8)] = 64  # side of the views (embedding resizes to it too)
    crop: bool = True  # random resized crop
    crop_scale: interval(0.0, 1.0) = [0.4, 1.0]  # area fraction
    crop_ratio: interval(0.0) = [0.75, 1.3333]  # aspect ratio
    flip: bool = True  # horizontal and vertical flips
    rotate90: bool = True  # rotations by multiples of 90 degrees
    brightness: Fraction = 0.2  # per-channel gain in [1-b, 1+b]; 0 = off
    contrast: Fraction = 0.2  # per-channel contrast around the mean in [1-c, 1+c]; 0 = off
    gamma: Fraction = 0.0  # per-channel gamma in [1-g, 1+g] on positive intensities; 0 = off
    offset: NonNegative = 0.0  # per-channel additive offset in [-o, o]; 0 = off
    blur_p: Fraction = 0.5  # probability of a Gaussian blur; 0 = off
    blur_sigma: interval(0.0) = [0.1, 1.5]  # in pixels of the view
    noise_p: Fraction = 0.5  # probability of additive Gaussian noise; 0 = off
    noise_std: NonNegative = 0.03  # its largest standard deviation (normalised intensity units)
    elastic_p: Fraction = 0.0  # probability of an elastic deformation; 0 = off
    elastic_alpha: NonNegative = 2.0  # its largest displacement, in pixels of the view
    elastic_grid: Annotated[int, Field(ge=2, le=32)] = 4  # control points per side

    @model_validator(mode="after")
    def _ordered(self) -> AugmentConfig:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: {[low, high]!r} must be [low, high] with low <= high")
        return self


class TrainConfig(Section):
    method: Literal["simclr", "supcon", "dino"] = "simclr"
    label: str = "treatment"  # supcon's labels: treatment (compound + concentration) or compound
    select_every: Annotated[int, Field(ge=0)] = 0  # replicate mAP every N epochs; 0 = never
    epochs: Count = 40
    batch_size: Annotated[int, Field(ge=2)] = 256
    optimizer: Literal["adamw", "lars"] = "adamw"
    lr: Positive = 1e-3
    weight_decay: NonNegative = 1e-4
    warmup_epochs: Annotated[int, Field(ge=0)] = 2
    temperature: Positive = 0.2
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    device: Device = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: Count = 1  # epochs
    threads: Annotated[int, Field(ge=0)] = 0  # CPU threads for torch; 0 = all cores
    sync_bn: bool = True  # under torchrun: BatchNorm statistics over every process's batch
    # a batch classifier on the encoder's features whose gradient is reversed into the encoder
    # (Ganin & Lempitsky 2015), this much of it: features that tell batches apart less; 0 = off
    batch_adversary: NonNegative = 0.0
    dist_timeout: Positive = 1800.0  # under torchrun: seconds a collective may wait for a peer

    @field_validator("label")
    @classmethod
    def _not_the_answer(cls, label: str) -> str:
        if label.lower() in ("moa", "metadata_moa"):
            raise ValueError(
                "MoA labels would train on the answer that NSC grades: use treatment or compound"
            )
        if label not in ("treatment", "compound"):
            raise ValueError(f"{label!r} is not one of 'treatment', 'compound'")
        return label


class EmbedConfig(Section):
    batch_size: Count = 512
    device: Device = "auto"
    tta: bool = False  # average the features of the 8 rotations and flips of each crop


class DinoConfig(Section):
    """DINO (train.method = "dino"): head, temperatures, momentum, local views."""

    out_dim: Count = 1024  # prototypes
    hidden: Count = 512
    bottleneck: Count = 128
    student_temperature: Positive = 0.1
    teacher_temperature: Positive = 0.04
    center_momentum: Fraction = 0.9
    teacher_momentum: Fraction = 0.996  # rises to 1 over training (cosine)
    local_views: Annotated[int, Field(ge=0)] = 4
    local_size: Annotated[int, Field(ge=8)] = 32  # side of the local views
    local_scale: interval(0.0, 1.0) = [0.1, 0.4]  # their area fraction


Postprocessing = Literal["none", "dmso", "tvn"]


class ProfileConfig(Section):
    postprocess: Postprocessing = "none"  # well profiles before the treatment median
    # the Metadata_ columns that name a treatment (JUMP: ["Metadata_JCP2022"]); without them
    # the profiles are wells only
    treatment: Annotated[list[str], Field(min_length=1)] = [
        COMPOUND,
        CONCENTRATION,
    ]
    platemap: str = ""  # a plate map joined to the wells by plate and well (--platemap)

    @field_validator("treatment")
    @classmethod
    def _metadata(cls, columns: list[str]) -> list[str]:
        bad = [c for c in columns if not c.startswith("Metadata_")]
        if bad:
            raise ValueError(f"{bad} are not Metadata_ columns")
        return columns


class EvaluateConfig(Section):
    control: str = "DMSO"  # the negative-control compound, not a treatment to classify
    variants: Annotated[list[Postprocessing], Field(min_length=1)] = ["none", "dmso", "tvn"]
    tvn_lambda: NonNegative = 1.0  # TVN's regulariser (also for profile.postprocess = "tvn")
    bootstrap: Annotated[int, Field(ge=0)] = 1000  # resamples for the 95% intervals; 0 = none
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    knn: list[Count] = [3, 5]  # k-NN voting accuracies
    map: bool = True  # mean average precision of MoA retrieval
    # phenotypic activity: a treatment's wells retrieved against the control wells (copairs)
    replicates: Literal["other_plates", "any_well"] = "other_plates"  # which wells count
    null_size: Count = 10000  # permutations for the p-values of activity and consistency
    fdr: Annotated[float, Field(gt=0, lt=1)] = 0.05  # q below this: retrieved
    # phenotypic consistency: treatments that share an annotation (e.g. Metadata_MoA, a target)
    consistency_by: list[str] = []
    consistency_active: bool = True  # only phenotypically active treatments (q < fdr)
    baselines: list[Literal["random", "classic", "cellprofiler"]] = []  # `run` evaluates these


class CellProfilerConfig(Section):
    """The ``cellprofiler`` baseline: CellProfiler's own measurements (cp_measure)."""

    texture: bool = True  # Haralick texture: most of the time (about 8x the rest)
    workers: Annotated[int, Field(ge=0)] = 0  # processes; 0 = the cores this job may use


class ReportConfig(Section):
    channels: list[str] = []  # channels of the example-cell composites (default: up to 6)


class Config(Section):
    crop: CropConfig = Field(default_factory=CropConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    dino: DinoConfig = Field(default_factory=DinoConfig)
    cellprofiler: CellProfilerConfig = Field(default_factory=CellProfilerConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.model_dump()


def _message(error: dict[str, Any]) -> str:
    """One pydantic error as ``section.key: what is wrong``."""
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    where, kind, value, ctx = ".".join(loc), error["type"], error.get("input"), error.get("ctx")
    if kind == "extra_forbidden":
        model = Config if len(loc) == 1 else Config.model_fields[loc[0]].annotation
        known = ", ".join(model.model_fields)
        if len(loc) == 1:
            return f"unknown section [{where}] (known: {known})"
        return f"unknown key {where} (known: {known})"
    if kind == "literal_error":
        return f"{where}: {value!r} is not one of {ctx['expected'].replace(' or ', ', ')}"
    if kind in ("too_short", "too_long"):
        field = Config.model_fields[loc[0]].annotation.model_fields[loc[1]]
        low = next((m.min_length for m in field.metadata if hasattr(m, "min_length")), 0)
        high = next((m.max_length for m in field.metadata if hasattr(m, "max_length")), None)
        size = str(low) if low == high else f"at least {low}" if high is None else f"{low}-{high}"
        return f"{where}: expected a list of {size} values, got {value!r}"
    if kind == "value_error":  # a section's validator names its key; a key's names none
        return f"{where}.{ctx['error']}" if len(loc) == 1 else f"{where}: {ctx['error']}"
    explain = {
        "bool_type": "expected true or false",
        "int_type": "expected an integer",
        "float_type": "expected a number",
        "string_type": "expected a string",
        "list_type": "expected a list",
        "finite_number": "expected a finite number",
        "string_pattern_mismatch": "expected auto, cpu, cuda or cuda:N",
    }
    if kind in explain:
        return f"{where}: {explain[kind]}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{where}: {value!r} is out of range ({error['msg'].lower()})"
    return f"{where}: {error['msg']}"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from nested dicts; any problem is a ``ConfigError`` naming the source."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_message(e.errors()[0])}") from None


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


def config_path(value: str | Path) -> Path:
    """The file of a config: ``value`` as a path, or the shipped config it names (a value that
    is not a file, with no path separator and no .toml suffix, e.g. ``bbbc021-cpu``)."""
    if is_name(value):
        found = shipped_path(str(value))
        if found is None:
            raise ConfigError(
                f"config {str(value)!r}: neither a file nor a shipped config ({listing()})"
            )
        return found
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a file (--config takes a TOML file)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (shipped configs, by name: {listing()})")
    return path


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults, then the TOML file (if any: a path or a shipped config's name), then ``--set``
    overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = config_from_dict(raw, str(path) if path else "config")
    for text in overrides:
        section, key, value = parse_override(text)
        merged = cfg.to_dict()
        if section not in merged:
            config_from_dict({section: {}}, f"--set {text}")  # names the unknown section
        merged[section][key] = value
        cfg = config_from_dict(merged, f"--set {text}")
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    with naming(path):
        path.write_text(tomli_w.dumps(cfg.to_dict()))
