"""The crop stage: raw fields of view -> a crop store (the ``[crop]`` settings, one site,
one plate, the stage with its shards)."""
