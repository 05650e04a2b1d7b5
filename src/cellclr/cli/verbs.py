"""The ``cellclr`` command: one verb per pipeline stage, and ``run`` for all of them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cellclr import __version__
from cellclr.config import Config, load_config
from cellclr.errors import CellclrError

EPILOG = """\
typical use:
  cellclr import-crops --images crops.npz --cells cells.csv --channels DNA,Tubulin,Actin \
      --out runs/x/crops
  cellclr run --config configs/bbbc021-cpu.toml --crops runs/x/crops --out runs/x

Every stage writes into its own folder, with the resolved config (config.toml) and a manifest
(stage.json); an existing output is replaced only with --overwrite.
"""


def _at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum, {low}")
        return value

    return parse


def _config_args(p: argparse.ArgumentParser, default_from: str | None = None) -> None:
    where = f" (default: the config saved in {default_from})" if default_from else ""
    p.add_argument("--config", type=Path, help=f"TOML config file{where}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5 (repeatable)",
    )


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellclr",
        description="Contrastive (SimCLR) single-cell representations and MoA evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellclr {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser(
        "import-crops",
        help="convert crops (npz) + cells (CSV) into a crop store",
        description="Convert an array of single-cell crops (cells x channels x H x"
        " W, 16-bit counts) and a row-aligned cell table with Metadata_ columns"
        " into a crop store.",
    )
    p.add_argument("--images", type=Path, required=True, help=".npz (or .npy) file of crops")
    p.add_argument("--key", default="images", help="array name inside the .npz (default: images)")
    p.add_argument(
        "--cells", type=Path, required=True, help="CSV or parquet table, one row per crop"
    )
    p.add_argument("--channels", help="comma-separated channel names, e.g. DNA,Tubulin,Actin")
    p.add_argument("--out", type=Path, required=True, help="crop store folder to create")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "demo",
        help="the whole pipeline on a simulated screen, ending with an HTML report",
        description="Simulate a BBBC021-like screen, then crop, train, embed, profile, "
        "evaluate (trained model and random-weights baseline) and write OUT/report.html, "
        "with the shipped CPU config (cellclr/demo.toml). A few minutes on 2 cores.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="default: runs/demo")
    p.add_argument("--seed", type=int, default=0, help="the simulated screen's seed")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the demo config, e.g. --set train.epochs=3",
    )
    _overwrite_arg(p)

    p = verbs.add_parser(
        "simulate",
        help="render a simulated BBBC021-like screen (TIFFs + metadata)",
        description="Render 16-bit 3-channel fields of view of simulated MCF-7-like cells with "
        "MoA phenotypes and week-to-week batch effects, in BBBC021's layout, so that "
        "`cellclr crop --bbbc021 OUT` reads it. Deterministic for a seed.",
    )
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--seed", type=int, default=0)
    _overwrite_arg(p)

    p = verbs.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description="Results with baselines, training curve, per-treatment neighbours, MoA "
        "confusion matrices, a 2-D map of treatment profiles by MoA and by batch, example "
        "crops, config and stage timings: one HTML file with embedded plots.",
    )
    p.add_argument("--run", type=Path, required=True, help="run folder (from `cellclr run`)")
    p.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html)")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "download",
        help="download BBBC021 (metadata and plate zips)",
        description="Download BBBC021 from the Broad over HTTPS: the metadata CSVs and one zip "
        "per plate, resuming partial files and skipping finished plates.",
    )
    p.add_argument("dataset", choices=["bbbc021"])
    p.add_argument("--out", type=Path, required=True, help="folder to download into")
    p.add_argument("--plates", nargs="+", help="only these plates, e.g. Week1_22123")
    p.add_argument("--retries", type=_at_least(1), default=5, help="attempts per file (default: 5)")

    p = verbs.add_parser(
        "crop",
        help="raw fields of view -> single-cell crop store",
        description="Illumination correction, nucleus detection (or nucleus centres from CSV "
        "files) and a fixed box around each nucleus, plate by plate; a rerun skips finished "
        "plates, and --overwrite replaces a store made with other settings. Options override "
        "[crop] of the config.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--bbbc021", type=Path, help="BBBC021 folder (metadata/ and WeekN/)")
    source.add_argument(
        "--images-table",
        type=Path,
        help="CSV/parquet: Metadata_Plate, Metadata_Well, Metadata_Site, treatment columns, "
        "one image-path column per channel",
    )
    p.add_argument(
        "--channels",
        help="channel columns of the image table, e.g. DNA,Tubulin,Actin (nuclei are found "
        "in the first)",
    )
    p.add_argument(
        "--root", type=Path, help="where relative image paths start (default: the table's folder)"
    )
    p.add_argument("--out", type=Path, required=True, help="crop store folder")
    p.add_argument("--box", type=_at_least(8), help="crop side in pixels (default: 96)")
    p.add_argument("--plates", nargs="+", help="only these plates")
    p.add_argument("--wells", nargs="+", help="only these wells")
    p.add_argument("--workers", type=_at_least(0), help="processes (default: all cores)")
    p.add_argument(
        "--locations",
        type=Path,
        help="folder of nucleus centres, LOCATIONS/<plate>/<well>-<site>-Nuclei.csv, "
        "instead of detection",
    )
    p.add_argument(
        "--skip-incomplete",
        action="store_true",
        help="skip sites with a missing image file (listed in the summary)",
    )
    p.add_argument("--no-illumination", action="store_true", help="no illumination correction")
    _config_args(p)
    _overwrite_arg(p)

    p = verbs.add_parser(
        "train",
        help="train a SimCLR encoder on a crop store",
        description="Train a SimCLR model; writes model.pt, checkpoint.pt, "
        "train_log.jsonl and config.toml into --out.",
    )
    p.add_argument("--crops", type=Path, required=True, help="crop store folder")
    p.add_argument("--out", type=Path, required=True, help="model folder to create")
    _config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted training from its last checkpoint",
    )
    _overwrite_arg(p)

    p = verbs.add_parser(
        "embed",
        help="embed every cell with a trained encoder",
        description="Write embeddings.parquet: the cells' Metadata_ columns and "
        "their backbone features.",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder from `cellclr train`")
    p.add_argument("--crops", type=Path, required=True, help="crop store folder")
    p.add_argument("--out", type=Path, required=True, help="embeddings folder to create")
    _config_args(p, "--model")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "profile",
        help="aggregate cells into well and treatment profiles",
        description="Well profile = mean of its cells; treatment profile = median of its wells "
        "(after profile.postprocess: none, dmso or tvn). Writes wells.parquet and "
        "treatments.parquet. Input: an `embed` folder, or a per-cell or per-well feature table "
        "of another tool (CellProfiler, pycytominer) with Metadata_ columns.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", type=Path, help="folder from `cellclr embed`")
    source.add_argument("--features", type=Path, help="feature table (CSV or parquet)")
    p.add_argument("--moa", type=Path, help="CSV of compound,concentration,moa to join")
    p.add_argument("--out", type=Path, required=True, help="profiles folder to create")
    _config_args(p, "--embeddings")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "evaluate",
        help="NSC, NSCB, drop (with intervals, k-NN, mAP) of profiles",
        description="MoA evaluation as in Ljosa et al. 2013 (see the README), for every "
        "post-processing variant of evaluate.variants (none, dmso, tvn), with bootstrap "
        "intervals, k-NN voting, per-MoA accuracy and mAP. Writes metrics.json, "
        "results.parquet, nsc.parquet and nscb.parquet. Input: a `profile` folder, or a "
        "per-cell or per-well feature table of another tool.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--profiles", type=Path, help="folder from `cellclr profile`")
    source.add_argument("--features", type=Path, help="feature table (CSV or parquet)")
    p.add_argument("--moa", type=Path, help="CSV of compound,concentration,moa to join")
    p.add_argument("--out", type=Path, required=True, help="evaluation folder to create")
    _config_args(p, "--profiles")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "predict",
        help="predict the MoA of new treatments from reference profiles",
        description="For each query treatment: the MoA of its nearest reference treatment "
        "(cosine), a confidence (similarity margin between the best and second-best MoA) and "
        "its nearest reference treatments. Writes OUT/predictions.parquet.",
    )
    p.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="profiles folder with MoA labels, e.g. RUN/profiles",
    )
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", type=Path, help="profiles folder of the new treatments")
    query.add_argument("--query-features", type=Path, help="feature table of the new treatments")
    query.add_argument("--query-crops", type=Path, help="crop store of the new treatments")
    p.add_argument("--model", type=Path, help="the model folder (with --query-crops)")
    p.add_argument(
        "--top", type=_at_least(1), default=5, help="nearest reference treatments to list"
    )
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    _config_args(p, "--reference")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "baseline",
        help="evaluate a baseline representation on a run's crops",
        description="Embed, profile and evaluate a baseline with the same code as the trained "
        "model, into RUN/baselines/KIND/: 'random' is the configured encoder with random "
        "weights, 'classic' CellProfiler-style features (shape, intensity, texture).",
    )
    p.add_argument("--kind", required=True, choices=["random", "classic"], help="which baseline")
    p.add_argument("--crops", type=Path, help="crop store (default: RUN/crops or data.crops)")
    p.add_argument("--run", type=Path, required=True, help="run folder")
    _config_args(p, "RUN/model")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "run",
        help="(crop,) train, embed, profile and evaluate in one go",
        description="Run every stage into OUT/crops (when the config's [crop] names images "
        "and no --crops is given), OUT/model, OUT/embeddings, OUT/profiles and OUT/eval. A "
        "stage whose output exists for the same inputs and config is skipped; an interrupted "
        "training resumes.",
    )
    _config_args(p)
    p.add_argument(
        "--crops", type=Path, help="crop store folder (default: data.crops of the config)"
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _overwrite_arg(p)
    return parser


def _config(args: argparse.Namespace, upstream: Path | None = None) -> Config:
    path = args.config
    if path is None and upstream is not None and (upstream / "config.toml").is_file():
        path = upstream / "config.toml"
    return load_config(path, args.set)


def _print_metrics(eval_dir: Path) -> None:
    from cellclr.profiling.evaluate import summary_lines

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    print("\n".join(summary_lines(metrics)))
    print(f"results: {eval_dir}")


def _print_results(run: Path) -> None:
    from cellclr.pipeline import collect_results, format_results

    results = collect_results(run)
    if not results.empty:
        print(format_results(results))
    print(f"results: {run}")


def _crop(args: argparse.Namespace) -> None:
    from cellclr.images.crop import crop, load_sites

    cfg = _config(args)
    c = cfg.crop
    if args.bbbc021 or args.images_table:
        c.bbbc021 = str(args.bbbc021 or "")
        c.images_table = str(args.images_table or "")
    if args.channels:
        c.channels = [x.strip() for x in args.channels.split(",")]
    for name in ("box", "workers", "plates", "wells"):
        if getattr(args, name) is not None:
            setattr(c, name, getattr(args, name))
    if args.root:
        c.images_root = str(args.root)
    if args.locations:
        c.locations = str(args.locations)
    c.skip_incomplete = c.skip_incomplete or args.skip_incomplete
    c.illumination = c.illumination and not args.no_illumination
    table, channels = load_sites(c)
    summary = crop(table, channels, args.out, cfg, overwrite=args.overwrite)
    print(
        f"cropped {summary['cells']} cells from {summary['sites_cropped']} sites "
        f"({summary['off_edge']} boxes off the image edge skipped); "
        f"plates in the store: {len(summary['plates_in_store'])}"
    )
    if summary["skipped_incomplete"]:
        print(
            f"skipped {len(summary['skipped_incomplete'])} incomplete sites: "
            + ", ".join(summary["skipped_incomplete"][:20])
        )
    print(f"crop store: {args.out}")


def _profile(args: argparse.Namespace) -> None:
    from cellclr.outputs import check_new_output
    from cellclr.profiling.profiles import (
        file_fingerprint,
        profile,
        read_feature_table,
        write_profiles,
    )

    if args.embeddings:
        cfg = _config(args, args.embeddings)
        print(f"profiles: {profile(args.embeddings, args.out, cfg, overwrite=args.overwrite)}")
        return
    cfg = _config(args)
    check_new_output(args.out, args.overwrite)
    wells = read_feature_table(args.features, args.moa)
    fp = file_fingerprint("profile", [args.features, args.moa], cfg, ("profile",))
    write_profiles(wells, args.out, cfg, fp, 0.0, args.overwrite, features=str(args.features))
    print(f"profiles: {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from cellclr.outputs import check_new_output
    from cellclr.profiling.evaluate import combine, evaluate, evaluate_wells, write_evaluation
    from cellclr.profiling.profiles import file_fingerprint, read_feature_table

    if args.profiles:
        evaluate(args.profiles, args.out, _config(args, args.profiles), overwrite=args.overwrite)
    else:
        cfg = _config(args)
        check_new_output(args.out, args.overwrite)
        result = combine(evaluate_wells(read_feature_table(args.features, args.moa), cfg.evaluate))
        fp = file_fingerprint("evaluate", [args.features, args.moa], cfg, ("evaluate",))
        write_evaluation(
            result, args.out, cfg, fp, 0.0, args.overwrite, features=str(args.features)
        )
    _print_metrics(args.out)


def _predict(args: argparse.Namespace) -> None:
    from cellclr.profiling.predict import predict

    predictions = predict(
        args.reference,
        args.out,
        _config(args, args.reference),
        query_profiles=args.query,
        query_table=args.query_features,
        query_crops=args.query_crops,
        model=args.model,
        top=args.top,
        overwrite=args.overwrite,
    )
    columns = [
        "Metadata_Compound",
        "Metadata_Concentration",
        "Predicted_MoA",
        "Confidence",
        "Neighbor1_Compound",
        "Neighbor1_Distance",
    ]
    print(predictions[columns].to_string(index=False, max_rows=30))
    print(f"predictions: {args.out / 'predictions.parquet'}")


def dispatch(args: argparse.Namespace) -> None:
    if args.verb == "import-crops":
        from cellclr.store.import_crops import import_crops

        channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
        out = import_crops(args.images, args.cells, args.out, channels, args.key, args.overwrite)
        print(f"crop store: {out}")
    elif args.verb == "demo":
        from cellclr.demo import demo

        report = demo(args.out, args.set, seed=args.seed, overwrite=args.overwrite)
        _print_results(args.out)
        print(f"report: {report}")
    elif args.verb == "simulate":
        from cellclr.images.simulate import simulate_screen

        summary = simulate_screen(args.out, seed=args.seed, overwrite=args.overwrite)
        print(", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, int)))
        print(f"screen: {args.out}  (next: cellclr crop --bbbc021 {args.out} --out ...)")
    elif args.verb == "report":
        from cellclr.report.page import write_report

        print(f"report: {write_report(args.run, args.out, overwrite=args.overwrite)}")
    elif args.verb == "download":
        from cellclr.images.download import download_bbbc021

        done = download_bbbc021(args.out, args.plates, retries=args.retries)
        print(f"{len(done)} plates in {args.out}")
    elif args.verb == "crop":
        _crop(args)
    elif args.verb == "train":
        from cellclr.learning.train import train

        out = train(
            args.crops, args.out, _config(args), overwrite=args.overwrite, resume=args.resume
        )
        print(f"model: {out}")
    elif args.verb == "embed":
        from cellclr.learning.embed import embed

        out = embed(
            args.model, args.crops, args.out, _config(args, args.model), overwrite=args.overwrite
        )
        print(f"embeddings: {out}")
    elif args.verb == "profile":
        _profile(args)
    elif args.verb == "evaluate":
        _evaluate(args)
    elif args.verb == "predict":
        _predict(args)
    elif args.verb == "baseline":
        from cellclr.pipeline import run_baseline

        cfg = _config(args, args.run / "model")
        run_baseline(args.kind, cfg, args.run, args.crops, overwrite=args.overwrite)
        _print_results(args.run)
    elif args.verb == "run":
        from cellclr.pipeline import run

        run(_config(args), args.out, args.crops, overwrite=args.overwrite)
        _print_results(args.out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dispatch(args)
    except CellclrError as e:
        print(f"cellclr: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"cellclr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "cellclr: interrupted (an interrupted training continues with --resume)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
