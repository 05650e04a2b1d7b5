"""cellclr: contrastive single-cell representations for mechanism-of-action profiling.

The stages, as functions for notebooks (each writes its output folder, as the CLI verb does)::

    import cellclr

    cfg = cellclr.load_config("bbbc021-cpu", ["train.epochs=5"])  # or a TOML file
    cellclr.import_crops("crops.npz", "cells.csv", "runs/x/crops", ["DNA", "Tubulin", "Actin"])
    cellclr.train("runs/x/crops", "runs/x/model", cfg)
    cellclr.embed("runs/x/model", "runs/x/crops", "runs/x/embeddings", cfg)
    cellclr.profile("runs/x/embeddings", "runs/x/profiles", cfg)
    result = cellclr.evaluate("runs/x/profiles", "runs/x/eval", cfg)
    cells = cellclr.load_embeddings("runs/x/embeddings")  # a DataFrame

Names are imported on first use, so ``import cellclr`` stays fast and loads no torch.

Messages (progress notes, summaries, warnings) go through ``logging``, to the ``cellclr``
logger, which shows nothing until logging is configured, e.g.
``logging.basicConfig(level=logging.INFO)``; ``cellclr.progress.enable(False)`` switches the
progress bars off.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from cellclr import progress as progress  # cellclr.progress.enable(False)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the user decides

# public name -> (module, attribute)
_API = {
    "load_config": ("cellclr.config", "load_config"),
    "run_baseline": ("cellclr.pipeline", "run_baseline"),
    "simulate_screen": ("cellclr.datasets.simulate", "simulate_screen"),
    "crop": ("cellclr.cropping.stage", "crop"),
    "import_crops": ("cellclr.store.import_crops", "import_crops"),
    "CropStore": ("cellclr.store", "CropStore"),
    "train": ("cellclr.pipeline", "train"),
    "embed": ("cellclr.learning.embed", "embed"),
    "load_embeddings": ("cellclr.embeddings", "load_embeddings"),
    "profile": ("cellclr.profiling.profiles", "profile"),
    "load_profiles": ("cellclr.profiling.profiles", "read_profiles"),
    "evaluate": ("cellclr.profiling.evaluate", "evaluate"),
    "predict": ("cellclr.profiling.predict", "predict"),
    "run": ("cellclr.pipeline", "run"),
    "load_results": ("cellclr.pipeline", "load_results"),
    "write_report": ("cellclr.report", "write_report"),
    "feature_columns": ("cellclr.metadata", "feature_columns"),
    "metadata_columns": ("cellclr.metadata", "metadata_columns"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'cellclr' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
