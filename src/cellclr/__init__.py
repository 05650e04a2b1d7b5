"""cellclr: contrastive single-cell representations for mechanism-of-action profiling."""

__version__ = "0.1.0"
