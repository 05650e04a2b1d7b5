"""The crop store: per-plate uint16 crop arrays plus a parquet cell index, the format between
the crop stage (or ``import-crops``) and training, embedding and the baselines."""
