"""One run of a stage, from start to its finished output folder: the stage owns its work, this
owns the rest (the same for every stage):

- the clock (``seconds`` in ``stage.json``, from when the ``Stage`` was made);
- the staged folder (``OUT.partial``, renamed to ``OUT`` only when complete; an existing ``OUT``
  replaced only with ``overwrite``; never an input; a lock against a second writer);
- the resolved ``config.toml`` and the ``stage.json`` manifest (the stage's name, its
  fingerprint, the duration and what the stage reports in ``Stage.manifest``), written last.

::

    stage = Stage("embed", fingerprint, cfg)
    with stage.output(out, overwrite=overwrite, inputs=[model, crops]) as work:
        ...  # write the stage's files into work
        stage.manifest.update(n_cells=n)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellclr.config import Config, save_config
from cellclr.outputs import Inputs, atomic_file, partial_path, staged_dir, write_manifest


@dataclass
class Stage:
    """A stage being run: its name, fingerprint and config, when it started, and what it
    reports (``manifest``: extra keys of its ``stage.json``)."""

    name: str
    fingerprint: str
    cfg: Config | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def finish(self, folder: Path) -> None:
        """Write the resolved config and the manifest into ``folder`` (the manifest last: a
        folder with a ``stage.json`` is a finished output)."""
        if self.cfg is not None:
            with atomic_file(folder / "config.toml") as tmp:
                save_config(self.cfg, tmp)
        write_manifest(folder, self.name, self.fingerprint, seconds=self.seconds, **self.manifest)

    @contextmanager
    def output(
        self,
        out: str | Path,
        *,
        overwrite: bool = False,
        inputs: Inputs = (),
        resumable: bool = False,
        main: bool = True,
    ) -> Iterator[Path]:
        """The stage's work folder (``staged_dir``); when the block ends without error, the
        config and manifest are written and the folder becomes ``out``. ``main=False`` (the
        other processes under torchrun): only the work folder's path, which the main process
        manages."""
        if not main:
            yield partial_path(Path(out))
            return
        with staged_dir(out, overwrite=overwrite, resumable=resumable, inputs=inputs) as work:
            yield work
            self.finish(work)
