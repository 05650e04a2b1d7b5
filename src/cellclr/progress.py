"""Progress bars: every bar of the library comes from ``progress_bar`` (a tqdm), shown on a
terminal and hidden otherwise (tqdm's ``disable=None``). They can be switched off for the whole
library::

    import cellclr

    cellclr.progress.enable(False)  # or set CELLCLR_PROGRESS=0 in the environment

``enable(True)`` shows them again (on a terminal), ``enable(None)`` leaves it to the
environment variable again. Messages are not bars: they go through ``logging`` (the ``cellclr``
logger).
"""

from __future__ import annotations

import os
from typing import Any

ENV = "CELLCLR_PROGRESS"
_OFF = {"0", "false", "no", "off"}

_enabled: bool | None = None  # None: as CELLCLR_PROGRESS says (shown unless it says off)


def enable(on: bool | None = True) -> None:
    """Switch the library's progress bars on (``True``: shown on a terminal) or off
    (``False``); ``None`` leaves it to ``CELLCLR_PROGRESS`` again."""
    global _enabled
    _enabled = None if on is None else bool(on)


def enabled() -> bool:
    """Whether the library's progress bars may show (they still show only on a terminal)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


def progress_bar(iterable: Any = None, *, disable: bool | None = None, **kwargs: Any) -> Any:
    """A tqdm bar, hidden when the bars are switched off; ``disable`` as tqdm's (None: shown
    on a terminal only; True: hidden, e.g. in all but the main process)."""
    from tqdm import tqdm  # imported here: ``import cellclr`` stays light

    return tqdm(iterable, disable=True if not enabled() else disable, **kwargs)
