"""Input tables: image tables (DeepProfiler's layout), CellProfiler LoadData and CytoTable
tables, plate maps, nucleus locations."""
