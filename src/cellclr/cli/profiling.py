"""Verbs of the profiling stages: ``profile``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellclr.cli.common import (
    Verb,
    any_crop_size_arg,
    at_least,
    config_args,
    config_of,
    overwrite_arg,
    print_metrics,
)
from cellclr.columns import COMPOUND, CONCENTRATION, PLATE, WELL


def _source_args(p: argparse.ArgumentParser, flag: str, what: str) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(flag, type=Path, help=what)
    source.add_argument("--features", type=Path, help="feature table (CSV or parquet)")
    p.add_argument(
        "--moa",
        type=Path,
        help="CSV of compound,concentration,moa: its MoAs replace those of the input",
    )


def _profile_args(p: argparse.ArgumentParser) -> None:
    _source_args(p, "--embeddings", "folder from `cellclr embed`")
    p.add_argument(
        "--platemap",
        type=Path,
        help="plate map (CSV/TSV/parquet, ours or JUMP's; see `cellclr crop --help`) joined to "
        "the wells by plate and well: its treatments replace any the cells carry",
    )
    p.add_argument("--out", type=Path, required=True, help="profiles folder to create")
    config_args(p, "--embeddings")
    overwrite_arg(p)


def _profile(args: argparse.Namespace) -> None:
    if args.embeddings:
        from cellclr.profiling.profiles import profile

        cfg = config_of(args, args.embeddings)
        if args.platemap:
            cfg.profile.platemap = str(args.platemap)
        out = profile(args.embeddings, args.out, cfg, moa=args.moa, overwrite=args.overwrite)
    else:
        from cellclr.profiling.feature_tables import profile_table

        cfg = config_of(args)
        if args.platemap:
            cfg.profile.platemap = str(args.platemap)
        out = profile_table(args.features, args.out, cfg, moa=args.moa, overwrite=args.overwrite)
    print(f"profiles: {out}")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _source_args(p, "--profiles", "folder from `cellclr profile`")
    p.add_argument("--out", type=Path, required=True, help="evaluation folder to create")
    config_args(p, "--profiles")
    overwrite_arg(p)


def _evaluate(args: argparse.Namespace) -> None:
    if args.profiles:
        from cellclr.profiling.evaluate import evaluate

        cfg = config_of(args, args.profiles)
        evaluate(args.profiles, args.out, cfg, moa=args.moa, overwrite=args.overwrite)
    else:
        from cellclr.profiling.feature_tables import evaluate_table

        cfg = config_of(args)
        evaluate_table(args.features, args.out, cfg, moa=args.moa, overwrite=args.overwrite)
    print_metrics(args.out)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="profiles folder with MoA labels, e.g. RUN/profiles",
    )
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument(
        "--profiles",
        "--query",
        dest="query",
        type=Path,
        help="the new treatments: a profiles folder (from `cellclr profile`)",
    )
    query.add_argument(
        "--features",
        "--query-features",
        dest="query_features",
        type=Path,
        help="or a feature table (CSV/parquet) of another tool, per cell or per well",
    )
    query.add_argument(
        "--crops",
        "--query-crops",
        dest="query_crops",
        type=Path,
        help="or a crop store, embedded with --model",
    )
    p.add_argument("--model", type=Path, help="the model folder that made the reference (--crops)")
    p.add_argument(
        "--top", type=at_least(1), default=5, help="nearest reference treatments to list"
    )
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    any_crop_size_arg(p)
    config_args(p, "--reference")
    overwrite_arg(p)


def _predict(args: argparse.Namespace) -> None:
    from cellclr.profiling.predict import predict

    predictions = predict(
        args.reference,
        args.out,
        config_of(args, args.reference),
        query_profiles=args.query,
        query_table=args.query_features,
        query_crops=args.query_crops,
        model=args.model,
        top=args.top,
        overwrite=args.overwrite,
        any_crop_size=args.any_crop_size,
    )
    columns = [
        COMPOUND,
        CONCENTRATION,
        PLATE,
        WELL,
        "Predicted_MoA",
        "Confidence",
        "Neighbor1_Compound",
        "Neighbor1_Distance",
    ]
    shown = [c for c in columns if c in predictions]
    print(predictions[shown].to_string(index=False, max_rows=30))
    print(f"predictions: {args.out / 'predictions.parquet'}")


VERBS = (
    Verb(
        "profile",
        "aggregate cells into well and treatment profiles",
        "Well profile = mean of its cells; treatment profile = median of its wells (after "
        "profile.postprocess: none, dmso or tvn), where the wells name treatments (their own, "
        "or a plate map's: --platemap). Writes wells.parquet and treatments.parquet. "
        "Input: an `embed` folder, or a per-cell or per-well feature table of another tool "
        "(CellProfiler, pycytominer) with Metadata_ columns.",
        _profile_args,
        _profile,
    ),
    Verb(
        "evaluate",
        "phenotypic activity, consistency and NSC/NSCB of profiles, as far as they are annotated",
        "Every measure the annotations allow, for every post-processing variant of "
        "evaluate.variants (none, dmso, tvn): phenotypic activity (each treatment's replicate "
        "wells retrieved against the control wells: mAP, p- and q-values, fraction retrieved) "
        "where treatments and controls are known; consistency by the annotation columns of "
        "evaluate.consistency_by; and where MoAs are known, NSC, NSCB and drop as in Ljosa et "
        "al. 2013 with bootstrap intervals, k-NN voting, per-MoA accuracy and MoA mAP. What "
        "cannot be computed is skipped with its reason. Writes metrics.json, results.parquet "
        "and activity/consistency/nsc/nscb.parquet. Input: a `profile` folder, or a per-cell "
        "or per-well feature table of another tool.",
        _evaluate_args,
        _evaluate,
    ),
    Verb(
        "predict",
        "predict the MoA of new treatments from reference profiles",
        "For each query treatment: the MoA of its nearest reference treatment (cosine), a "
        "confidence (similarity margin between the best and second-best MoA) and its nearest "
        "reference treatments. Writes OUT/predictions.parquet.",
        _predict_args,
        _predict,
    ),
)
