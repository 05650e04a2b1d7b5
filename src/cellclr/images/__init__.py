"""Raw fields of view -> single-cell crops: image tables (BBBC021, DeepProfiler layout,
CellProfiler LoadData/CytoTable tables, plate maps), TIFF reading, download, illumination
correction (ours or CellProfiler's), nucleus detection or given centres, the crop stage, and a
simulated screen."""
