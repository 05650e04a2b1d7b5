"""Raw fields of view -> single-cell crops: image tables (BBBC021, DeepProfiler layout), download,
illumination correction, nucleus detection, the crop stage, and a simulated screen."""
