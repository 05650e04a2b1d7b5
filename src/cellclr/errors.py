"""The base of the errors that a user's input or command causes (printed without a traceback),
and naming the file of an OS error that names none."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CellclrError(Exception):
    """Bad input, bad config, or an output that would be overwritten."""


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OS error raised inside that names no file gets ``path`` as its file: writing to a
    full disk (``write``, pyarrow's writers) says only "No space left on device"."""
    try:
        yield
    except OSError as e:
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
