"""The config's sections: pydantic models, one per stage (and per training method), each key
with its type, default and description (``cellclr.config.reference`` writes them out as the
configuration reference).

Types are strict (no ``"3"`` for 3, no 1 for true), numbers must be finite, choices and ranges
are checked when a config is loaded (and when a key is assigned), and unknown sections or keys
are errors. A key marked *runtime* changes how fast a stage runs or where it reads from, not
what it produces: it is left out of the stage's fingerprint.

Each stage reads its own section and the shared ``[screen]`` (what the screen's metadata
means) and ``[postprocess]`` sections; a training method reads its own (``[simclr]``,
``[supcon]``, ``[dino]``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cellclr.columns import COMPOUND, CONCENTRATION

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=1)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
Postprocessing = Literal["none", "dmso", "tvn"]


def interval(low: float | None = None, high: float | None = None) -> Any:
    """A ``[low, high]`` list of two numbers, each within the given bounds."""
    return Annotated[
        list[Annotated[float, Field(gt=low, le=high)]], Field(min_length=2, max_length=2)
    ]


def key(default: Any, description: str, *, runtime: bool = False) -> Any:
    """A config key: its default and description; ``runtime``: left out of fingerprints."""
    return Field(default, description=description, json_schema_extra={"runtime": runtime})


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )

    @classmethod
    def runtime_keys(cls) -> set[str]:
        """The keys that do not change what the stage produces (left out of fingerprints)."""
        return {
            name
            for name, field in cls.model_fields.items()
            if (field.json_schema_extra or {}).get("runtime")
        }


class CropConfig(Section):
    """The crop stage: which images, and how cells are found and cut out."""

    bbbc021: str = key("", "a BBBC021 folder (metadata/ and [images/]WeekN/<plate>/)", runtime=True)
    images_table: str = key(
        "", "or an image table (CSV/parquet), one path column per channel", runtime=True
    )
    loaddata: str = key(
        "", "or a CellProfiler LoadData or CytoTable table (FileName_<Ch>, ...)", runtime=True
    )
    platemap: str = key(
        "", "a plate map joined by plate and well: treatments at crop time", runtime=True
    )
    images_root: str = key(
        "", "where the table's relative paths start (default: its folder)", runtime=True
    )
    channels: list[str] = key([], "channels to read, in this order (default: all)")
    plates: list[str] = key([], "only these plates (default: all)", runtime=True)
    wells: list[str] = key([], "only these wells (default: all)", runtime=True)
    box: Annotated[int, Field(ge=8)] = key(96, "side of the square crop around each nucleus")
    illumination: bool = key(True, "per-plate illumination correction (ours or CellProfiler's)")
    illumination_sites: Count = key(64, "sites sampled per plate to estimate it")
    illumination_min_sites: Count = key(16, "fewer complete sites: no correction (said)")
    locations: str = key(
        "", "nucleus centres instead of detection: a DeepProfiler folder or a CellProfiler table"
    )
    nucleus_channel: str = key("", "the channel nuclei are found in (default: DNA, else first)")
    edge: Literal["skip", "pad"] = key("skip", "boxes leaving the field: skipped or zero-padded")
    nucleus_smoothing: NonNegative = key(1.0, "Gaussian sigma before thresholding (pixels)")
    nucleus_threshold: Literal["otsu", "li"] = key("otsu", "the threshold method")
    nucleus_min_area: Count = key(50, "smallest nucleus kept (pixels)")
    nucleus_max_area: Count = key(5000, "largest nucleus kept (pixels)")
    nucleus_min_distance: Count = key(7, "closest two nucleus centres may be (pixels)")
    nucleus_split_depth: Annotated[float, Field(gt=0)] = key(
        1.0, "distance-ridge dip that splits touching nuclei (pixels)"
    )
    skip_incomplete: bool = key(
        False, "skip (and list) sites with a missing image file", runtime=True
    )
    workers: Annotated[int, Field(ge=0)] = key(0, "processes; 0 = all usable cores", runtime=True)


class DataConfig(Section):
    """What training reads: the store, its intensity normalisation and the order of cells."""

    crops: str = key("", "crop store `cellclr run` uses when --crops is not given", runtime=True)
    normalize: Literal["plate", "batch", "global", "well", "cell", "none"] = key(
        "plate", "intensity statistics: per plate, batch, well, overall, each crop's, or none"
    )
    normalize_min_cells: Count = key(
        100, "below this, a plate (well) uses its batch's (plate's) statistics"
    )
    sampler: Literal["uniform", "balanced"] = key(
        "uniform", "uniform: every cell once an epoch; balanced: each group equally often"
    )
    balance_by: str = key("treatment", "the groups: treatment, compound, or a Metadata_ column")


class ModelConfig(Section):
    """The encoder (backbone) every method trains."""

    arch: Literal["resnet_small", "resnet18", "resnet50"] = key("resnet_small", "the backbone")
    stem: Literal["small", "small2", "imagenet"] = key(
        "small2", "its first layers: full, half or quarter resolution"
    )


class AugmentConfig(Section):
    """The random views training draws (batched, on the training device)."""

    size: Annotated[int, Field(ge=8)] = key(64, "side of the views (embedding resizes to it)")
    crop: bool = key(True, "random resized crop")
    crop_scale: interval(0.0, 1.0) = key([0.4, 1.0], "its area fraction")
    crop_ratio: interval(0.0) = key([0.75, 1.3333], "its aspect ratio")
    flip: bool = key(True, "horizontal and vertical flips")
    rotate90: bool = key(True, "rotations by multiples of 90 degrees")
    brightness: Fraction = key(0.2, "per-channel gain in [1-b, 1+b]; 0 = off")
    contrast: Fraction = key(0.2, "per-channel contrast around the mean in [1-c, 1+c]; 0 = off")
    gamma: Fraction = key(0.0, "per-channel gamma in [1-g, 1+g] on positive values; 0 = off")
    offset: NonNegative = key(0.0, "per-channel additive offset in [-o, o]; 0 = off")
    blur_p: Fraction = key(0.5, "probability of a Gaussian blur; 0 = off")
    blur_sigma: interval(0.0) = key([0.1, 1.5], "its sigma, in pixels of the view")
    noise_p: Fraction = key(0.5, "probability of additive Gaussian noise; 0 = off")
    noise_std: NonNegative = key(0.03, "its largest standard deviation (normalised units)")
    elastic_p: Fraction = key(0.0, "probability of an elastic deformation; 0 = off")
    elastic_alpha: NonNegative = key(2.0, "its largest displacement, in pixels of the view")
    elastic_grid: Annotated[int, Field(ge=2, le=32)] = key(4, "its control points per side")

    @model_validator(mode="after")
    def _ordered(self) -> AugmentConfig:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: {[low, high]!r} must be [low, high] with low <= high")
        return self


class TrainConfig(Section):
    """The training loop, whatever the method."""

    method: Literal["simclr", "supcon", "dino"] = key(
        "simclr", "the method: its own section holds its keys"
    )
    epochs: Count = key(40, "passes over the store")
    batch_size: Annotated[int, Field(ge=2)] = key(256, "the global batch (over all processes)")
    optimizer: Literal["adamw", "lars"] = key("adamw", "the optimiser")
    lr: Positive = key(1e-3, "peak learning rate (after warm-up; cosine decay after)")
    weight_decay: NonNegative = key(1e-4, "weight decay")
    warmup_epochs: Annotated[int, Field(ge=0)] = key(2, "epochs of linear warm-up")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = key(0, "weights, order and views")
    batch_adversary: NonNegative = key(
        0.0, "weight of a batch classifier whose gradient is reversed into the encoder; 0 = off"
    )
    sync_bn: bool = key(True, "under torchrun: BatchNorm statistics over every process")
    select_every: Annotated[int, Field(ge=0)] = key(
        0, "log the activity (replicate) mAP every N epochs; 0 = never", runtime=True
    )
    device: Device = key("auto", "auto, cpu, cuda or cuda:N", runtime=True)
    checkpoint_every: Count = key(1, "epochs between checkpoints", runtime=True)
    threads: Annotated[int, Field(ge=0)] = key(0, "CPU threads; 0 = all cores", runtime=True)
    dist_timeout: Positive = key(
        1800.0, "under torchrun: seconds a collective may wait for a peer", runtime=True
    )


class ContrastiveConfig(Section):
    """A contrastive method's projection head and temperature."""

    temperature: Positive = key(0.2, "the loss's temperature")
    proj_hidden: Count = key(512, "width of the projection head's hidden layer")
    proj_dim: Count = key(128, "dimension of the projection")


class SimCLRConfig(ContrastiveConfig):
    """SimCLR (train.method = "simclr"): NT-Xent between two views of each cell."""


class SupConConfig(ContrastiveConfig):
    """SupCon (train.method = "supcon"): the views of cells with the same label are positives
    (weak supervision: never the MoA)."""

    label: str = key("treatment", "the labels: treatment (compound + concentration) or compound")

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


class DinoConfig(Section):
    """DINO (train.method = "dino"): head, temperatures, momentum, local views."""

    out_dim: Count = key(1024, "prototypes")
    hidden: Count = key(512, "width of the head's hidden layers")
    bottleneck: Count = key(128, "the head's bottleneck before the prototypes")
    student_temperature: Positive = key(0.1, "the student's softmax temperature")
    teacher_temperature: Positive = key(0.04, "the teacher's (sharpening)")
    center_momentum: Fraction = key(0.9, "EMA momentum of the teacher's centre")
    teacher_momentum: Fraction = key(0.996, "EMA momentum of the teacher; rises to 1 (cosine)")
    local_views: Annotated[int, Field(ge=0)] = key(4, "local views per cell")
    local_size: Annotated[int, Field(ge=8)] = key(32, "side of the local views")
    local_scale: interval(0.0, 1.0) = key([0.1, 0.4], "their area fraction")


class EmbedConfig(Section):
    """The embedding stage."""

    tta: bool = key(False, "average the features of the 8 rotations and flips of each crop")
    batch_size: Count = key(512, "cells per batch", runtime=True)
    device: Device = key("auto", "auto, cpu, cuda or cuda:N", runtime=True)


class ScreenConfig(Section):
    """What the screen's metadata means (every stage after cropping reads it)."""

    control: str = key("DMSO", "the negative control's compound: not a treatment to classify")
    treatment: Annotated[list[str], Field(min_length=1)] = key(
        [COMPOUND, CONCENTRATION],
        'the Metadata_ columns that name a treatment (JUMP: ["Metadata_JCP2022"])',
    )

    @field_validator("treatment")
    @classmethod
    def _metadata(cls, columns: list[str]) -> list[str]:
        bad = [c for c in columns if not c.startswith("Metadata_")]
        if bad:
            raise ValueError(f"{bad} are not Metadata_ columns")
        return columns


class PostprocessConfig(Section):
    """Post-processing of well profiles (profile.postprocess and evaluate.variants)."""

    tvn_lambda: NonNegative = key(1.0, "TVN's regulariser")


class ProfileConfig(Section):
    """The profile stage."""

    postprocess: Postprocessing = key("none", "well profiles before the treatment median")
    platemap: str = key(
        "",
        "a plate map joined to the wells by plate and well (its content is fingerprinted)",
        runtime=True,
    )


class EvaluateConfig(Section):
    """The evaluation stage: what is measured, and how."""

    variants: Annotated[list[Postprocessing], Field(min_length=1)] = key(
        ["none", "dmso", "tvn"], "post-processing variants evaluated; the first is the headline"
    )
    bootstrap: Annotated[int, Field(ge=0)] = key(1000, "resamples for 95% intervals; 0 = none")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = key(0, "bootstrap and permutations")
    knn: list[Count] = key([3, 5], "k of the k-NN voting accuracies")
    map: bool = key(True, "mean average precision of MoA retrieval")
    replicates: Literal["other_plates", "any_well"] = key(
        "other_plates", "activity: a treatment's replicates on other plates, or any well"
    )
    null_size: Count = key(10000, "permutations for the p-values of activity and consistency")
    fdr: Annotated[float, Field(gt=0, lt=1)] = key(0.05, "q below this: retrieved")
    consistency_by: list[str] = key([], "annotation columns for phenotypic consistency")
    consistency_active: bool = key(True, "consistency among the active treatments only")
    baselines: list[Literal["random", "classic", "cellprofiler"]] = key(
        [], "baselines `cellclr run` evaluates too", runtime=True
    )


class CellProfilerConfig(Section):
    """The ``cellprofiler`` baseline: CellProfiler's own measurements (cp_measure)."""

    texture: bool = key(True, "Haralick texture: most of the time (about 8x the rest)")
    workers: Annotated[int, Field(ge=0)] = key(0, "processes; 0 = usable cores", runtime=True)


class ReportConfig(Section):
    """The HTML report."""

    channels: list[str] = key([], "channels of the example-cell composites (default: up to 6)")


class Config(Section):
    crop: CropConfig = Field(default_factory=CropConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    simclr: SimCLRConfig = Field(default_factory=SimCLRConfig)
    supcon: SupConConfig = Field(default_factory=SupConConfig)
    dino: DinoConfig = Field(default_factory=DinoConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    cellprofiler: CellProfilerConfig = Field(default_factory=CellProfilerConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.model_dump()

    def method(self) -> ContrastiveConfig | DinoConfig:
        """The section of the configured training method."""
        return getattr(self, self.train.method)
