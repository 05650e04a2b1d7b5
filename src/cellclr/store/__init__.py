"""The crop store: per-plate uint16 crop arrays plus a parquet cell index, the format between
the crop stage (or ``import-crops``) and training, embedding and the baselines."""

from cellclr.store.format import StoreError
from cellclr.store.reader import CropStore, Normalization
from cellclr.store.writer import finalize_store, write_plate

__all__ = ["CropStore", "Normalization", "StoreError", "finalize_store", "write_plate"]
