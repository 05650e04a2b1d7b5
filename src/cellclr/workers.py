"""Process pools for the CPU-bound stages (cropping, classic features).

Workers never outlive the main process: on Linux each asks the kernel for SIGTERM when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), so a SIGKILL of the main process (a cluster's
scheduler) takes them along. While a pool is open in the main thread, SIGTERM to the main
process raises ``SystemExit`` there, so that the stage cleans up (no half-written file is left)
and the pool's workers are terminated at once, rather than finishing their tasks.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from types import FrameType, TracebackType
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Worker initializer: exit when the parent process ``parent`` dies."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (fork copies it)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class WorkerPool(ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` whose ``with`` block ends, on an error or SIGTERM, by cancelling
    what is queued and terminating the workers instead of waiting for them."""

    def __enter__(self) -> WorkerPool:
        self._sigterm: Any = None  # the handler to restore (only the main thread sets one)
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, _terminated) or signal.SIG_DFL
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.shutdown(wait=True)
            else:
                self.terminate()
        finally:
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)

    def terminate(self) -> None:
        """Cancel the queued tasks and stop the workers now."""
        processes = list((self._processes or {}).values())
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)


def process_pool(workers: int) -> WorkerPool:
    """A pool of ``workers`` processes, to be used in a ``with`` block. Fork starts them at once,
    but is unsafe once torch's thread pools may exist, so spawn is used when torch has been
    imported (or off Linux)."""
    fork = sys.platform == "linux" and "torch" not in sys.modules
    return WorkerPool(
        workers,
        mp_context=multiprocessing.get_context("fork" if fork else "spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
