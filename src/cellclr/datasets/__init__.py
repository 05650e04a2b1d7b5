"""Data sets: BBBC021 (its layout, reader and download together) and the simulated
BBBC021-like screen of the demo."""
