"""Verbs over whole runs: ``run``, ``compare``, ``baseline``, ``demo``, ``report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellclr.cli.common import (
    Verb,
    config_args,
    config_of,
    overwrite_arg,
    print_results,
    set_arg,
)


def _run_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument(
        "--crops", type=Path, help="crop store folder (default: data.crops of the config)"
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    overwrite_arg(p)


def _run(args: argparse.Namespace) -> None:
    from cellclr.pipeline import run

    run(args.crops, args.out, config_of(args), overwrite=args.overwrite)
    print_results(args.out)


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--configs",
        nargs="+",
        required=True,
        metavar="NAME_OR_FILE",
        help="one config per method: a shipped config's name or a TOML file; each runs into "
        "OUT/<its name>",
    )
    p.add_argument("--crops", type=Path, help="crop store (default: data.crops of the configs)")
    p.add_argument("--out", type=Path, required=True, help="comparison folder")
    set_arg(p, "override a key in every config, e.g. --set train.epochs=5 (repeatable)")
    overwrite_arg(p)


def _compare(args: argparse.Namespace) -> None:
    from cellclr.compare import compare

    report = compare(args.configs, args.crops, args.out, args.set, overwrite=args.overwrite)
    print_results(args.out)
    print(f"report: {report}")


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kind",
        required=True,
        choices=["random", "classic", "cellprofiler"],
        help="which baseline: random (untrained encoder), classic (fast CellProfiler-like "
        "features) or cellprofiler (CellProfiler's own measurements via cp_measure; slow: "
        "[cellprofiler] texture = false is about 4 times faster)",
    )
    p.add_argument("--crops", type=Path, help="crop store (default: OUT/crops or data.crops)")
    p.add_argument(
        "--out",
        "--run",
        dest="out",
        type=Path,
        required=True,
        help="the run folder the baseline is written into (OUT/baselines/KIND/)",
    )
    config_args(p, "OUT/model")
    overwrite_arg(p)


def _baseline(args: argparse.Namespace) -> None:
    from cellclr.pipeline import run_baseline

    cfg = config_of(args, args.out / "model")
    run_baseline(args.kind, args.crops, args.out, cfg, overwrite=args.overwrite)
    print_results(args.out)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="default: runs/demo")
    p.add_argument("--seed", type=int, default=0, help="the simulated screen's seed")
    set_arg(p, "override a key of the demo config, e.g. --set train.epochs=3")
    overwrite_arg(p)


def _demo(args: argparse.Namespace) -> None:
    from cellclr.demo import demo

    report = demo(args.out, args.set, seed=args.seed, overwrite=args.overwrite)
    print_results(args.out)
    print(f"report: {report}")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run folder (from `cellclr run`)")
    p.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html)")
    overwrite_arg(p)


def _report(args: argparse.Namespace) -> None:
    from cellclr.report import write_report

    print(f"report: {write_report(args.run, args.out, overwrite=args.overwrite)}")


VERBS = (
    Verb(
        "run",
        "(crop,) train, embed, profile and evaluate in one go",
        "Run every stage into OUT/crops (when the config's [crop] names images and no --crops "
        "is given), OUT/model, OUT/embeddings, OUT/profiles and OUT/eval. A stage whose output "
        "exists for the same inputs and config is skipped; an interrupted training resumes.",
        _run_args,
        _run,
    ),
    Verb(
        "compare",
        "train and evaluate several methods side by side, with the baselines",
        "Run each config (SimCLR, SupCon, DINO, ...) on one crop store into OUT/<config name>/ "
        "(reusing finished stages), the classic and random baselines into OUT/baselines/, and "
        "write one results table and one report (OUT/report.html) with every method.",
        _compare_args,
        _compare,
    ),
    Verb(
        "baseline",
        "evaluate a baseline representation on a run's crops",
        "Embed, profile and evaluate a baseline with the same code as the trained model, into "
        "RUN/baselines/KIND/: 'random' is the configured encoder with random weights, "
        "'classic' CellProfiler-style features (shape, intensity, texture), 'cellprofiler' "
        "CellProfiler's own measurements (cp_measure).",
        _baseline_args,
        _baseline,
    ),
    Verb(
        "demo",
        "the whole pipeline on a simulated screen, ending with an HTML report",
        "Simulate a BBBC021-like screen, then crop, train, embed, profile, evaluate (trained "
        "model and random-weights baseline) and write OUT/report.html, with the shipped CPU "
        "config (`cellclr configs show demo`). A few minutes on 2 cores.",
        _demo_args,
        _demo,
    ),
    Verb(
        "report",
        "write a self-contained HTML report of a run",
        "Results with baselines, training curve, per-treatment neighbours, MoA confusion "
        "matrices, a 2-D map of treatment profiles by MoA and by batch, example crops, config "
        "and stage timings: one HTML file with embedded plots.",
        _report_args,
        _report,
    ),
)
