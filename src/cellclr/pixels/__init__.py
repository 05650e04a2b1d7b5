"""Pixel operations on fields of view: reading TIFFs, illumination functions, nucleus
detection, crop boxes."""
