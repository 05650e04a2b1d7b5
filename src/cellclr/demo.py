"""``cellclr demo``: simulate a screen, then crop, train, embed, profile, evaluate and report."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

from cellclr.config import Config, load_config
from cellclr.datasets.simulate import ScreenSpec, simulate_screen
from cellclr.outputs import MANIFEST, OutputExistsError, read_manifest, write_manifest
from cellclr.pipeline import run
from cellclr.report.page import write_report

log = logging.getLogger(__name__)


def demo_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The shipped demo config (``cellclr/configs/demo.toml``), with ``--set`` overrides."""
    return load_config(Path(str(files("cellclr") / "configs" / "demo.toml")), overrides)


def demo(
    out: str | Path = "runs/demo",
    overrides: list[str] | tuple[str, ...] = (),
    *,
    seed: int = 0,
    spec: ScreenSpec | None = None,
    overwrite: bool = False,
) -> Path:
    """Run everything into ``out`` (screen/, crops/, model/, ..., report.html); return the
    report's path. Stages already done with the same settings are skipped."""
    out = Path(out)
    cfg = demo_config(overrides)
    screen = out / "screen"
    spec = spec or ScreenSpec()
    fp = hashlib.sha256(json.dumps([seed, asdict(spec)], sort_keys=True).encode()).hexdigest()[:16]
    made = (screen / MANIFEST).is_file() and read_manifest(screen)["fingerprint"] == fp
    if not made:
        if screen.exists() and not overwrite:
            raise OutputExistsError(
                f"{screen} holds another simulated screen (seed or size): pass --overwrite"
            )
        log.info(f"[demo] simulate -> {screen}")
        t0 = time.perf_counter()
        summary = simulate_screen(screen, seed=seed, spec=spec, overwrite=overwrite)
        write_manifest(
            screen, "simulate", fp, seconds=round(time.perf_counter() - t0, 1), seed=seed, **summary
        )
    cfg.crop.bbbc021 = str(screen)
    run(None, out, cfg, overwrite=overwrite)  # and the baselines of evaluate.baselines
    return write_report(out, overwrite=True)  # a view of the run: rewritten every time
