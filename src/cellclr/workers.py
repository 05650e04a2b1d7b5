"""Process pools for the CPU-bound stages (cropping, classic features)."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes. Fork starts them at once, but is unsafe once torch's
    thread pools may exist, so spawn is used when torch has been imported (or off Linux)."""
    fork = sys.platform == "linux" and "torch" not in sys.modules
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork" if fork else "spawn")
    )
