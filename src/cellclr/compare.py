"""``cellclr compare``: several methods (one config each) on one crop store, beside the classic
and random-weights baselines, in one results table and one report.

Each config runs into ``OUT/<config name>/`` (stages already done with the same inputs and
settings are reused), the baselines into ``OUT/baselines/``; ``OUT/compare.json`` lists the
methods, ``OUT/results.parquet`` and ``OUT/report.html`` put them side by side."""

from __future__ import annotations

import logging
from pathlib import Path

from cellclr.baselines.stages import KINDS
from cellclr.config import load_config
from cellclr.errors import CellclrError
from cellclr.learning.distributed import barrier, init_distributed
from cellclr.outputs import COMPARE, write_json
from cellclr.pipeline import run, run_baseline, write_results
from cellclr.report import write_report

log = logging.getLogger(__name__)


def compare(
    configs: list[str | Path],
    crops: str | Path | None,
    out: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    overwrite: bool = False,
) -> Path:
    """Run every config (a file or a shipped config's name) and the baselines into ``out``;
    return the report's path."""
    out = Path(out)
    names = [Path(c).stem for c in configs]
    if not configs or len(set(names)) != len(names):
        raise CellclrError(f"give configs with distinct names, got {', '.join(names)}")
    loaded = [load_config(c, overrides) for c in configs]  # every config checked first
    crops = crops or loaded[0].data.crops
    if not crops:
        raise CellclrError("compare needs a crop store: pass --crops (or set data.crops)")
    world, _ = init_distributed(loaded[0].train.device, loaded[0].train.dist_timeout)
    for name, cfg in zip(names, loaded, strict=True):
        cfg.evaluate.baselines = []  # once for all methods, below
        log.info(f"[compare] {name} -> {out / name}")
        run(crops, out / name, cfg, overwrite=overwrite)
        barrier(world)  # the others wait (no timeout) while the main process evaluates
    if not world.main:
        return out / "report.html"
    manifest = {
        "methods": names,
        "configs": [str(c) for c in configs],
        "crops": str(Path(crops).resolve()),
    }
    write_json(manifest, out / COMPARE)
    for kind in KINDS:
        run_baseline(kind, crops, out, loaded[0], overwrite=overwrite, summary=False)
    write_results(out)
    return write_report(out, overwrite=True)
