"""`szdet`: the one command line.

Each subcommand's flags are parsed here and handed to its handler in szdet/commands.py; an error
becomes one line and an exit code here (bad input raises `UserError`, printed as one line).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from szdet import __version__
from szdet.cli_args import (
    add_config_args,
    add_overrides,
    add_path_flag,
    expect,
    positive_int,
    shard,
)
from szdet.commands import (
    cmd_cache_build,
    cmd_cache_merge,
    cmd_cache_pull,
    cmd_cache_push,
    cmd_cache_verify,
    cmd_check_kernels,
    cmd_config,
    cmd_detect,
    cmd_evaluate,
    cmd_export,
    cmd_model_summary,
    cmd_score,
    cmd_synth,
    cmd_train,
)
from szdet.errors import (
    EXIT_INTERNAL,
    ResourceError,
    UserError,
    exit_code_for,
    original_message,
    resource_shortage,
)

log = logging.getLogger("szdet")


# --- shared argument parsing (the rest: szdet/cli_args.py) ------------------------------------


def _add_evaluate_overrides(p: argparse.ArgumentParser, example: str, paths: bool = False) -> None:
    where = "a paths.* field of --config, or " if paths else ""
    add_overrides(
        p, f"override {where}an evaluate.* setting of the checkpoint's config, e.g. {example}"
    )


def _add_run_files(p: argparse.ArgumentParser, out: str) -> None:
    """evaluate's and export's --config, the run whose files are their defaults."""
    p.add_argument(
        "--config",
        type=Path,
        help="the run's config (its training's, or <run>/config.yaml): the defaults of "
        f"--checkpoint (the run's checkpoints/best.pt), --cache and --out ({out})",
    )


# Kept in step with the README's `szdet detect` paragraph.
DETECT_THRESHOLD = (
    "Events start where the seizure probability rises above the on-threshold and end below it "
    "times evaluate.threshold_off_ratio. A detector made by `szdet export` runs at an operating "
    "point calibrated on dev: --fa-per-24h B picks the one for a false-alarm budget B (default: "
    "its first, evaluate.fa_targets_per_24h[0]). A training checkpoint has none and runs at "
    "evaluate.threshold_on (0.5: uncalibrated); --threshold T sets the on-threshold by hand."
)


# --- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="szdet", description="Seizure detection for scalp EEG: TUSZ cache, V3 model, scoring."
    )
    parser.add_argument("--version", action="version", version=f"szdet {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (
        _add_synth, _add_cache, _add_train, _add_evaluate, _add_export, _add_detect, _add_score,
        _add_config, _add_check_kernels, _add_model_summary,
    ):  # fmt: skip
        add_command(sub)
    return parser


Subparsers = argparse._SubParsersAction  # what add_subparsers returns


def _add_synth(sub: Subparsers) -> None:
    p = sub.add_parser("synth", help="write a synthetic corpus laid out exactly like TUSZ v2.0.x")
    p.add_argument(
        "out", type=Path, help="corpus root (edf/{train,dev,eval}/... is written inside)"
    )
    p.add_argument(
        "--patients", type=positive_int, default=12, help="patients in all (split 60/20/20)"
    )
    p.add_argument("--minutes", type=float, default=10.0, help="EEG minutes per patient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--difficulty",
        choices=["easy", "hard"],
        default="easy",
        help="hard: weaker, shorter, rarer seizures among more seizure-like artefacts",
    )
    p.set_defaults(func=cmd_synth)


def _add_cache(sub: Subparsers) -> None:
    cache = sub.add_parser("cache", help="build, verify, merge and transfer the preprocessed cache")
    csub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    _add_cache_build(csub)

    p = csub.add_parser("merge", help="merge the shard manifests of a split into manifest.json")
    p.add_argument("dir", type=Path, help="cache root")
    p.add_argument("--split", required=True)
    p.set_defaults(func=cmd_cache_merge)

    p = csub.add_parser("verify", help="re-check sizes and checksums; exit 1 on any mismatch")
    p.add_argument("dir", type=Path, help="cache root (holding <split>/manifest.json)")
    p.add_argument("--expect", type=expect, default=None, help="e.g. train=4667,dev=1832")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_cache_verify)
    _add_cache_transfers(csub)


def _add_cache_build(csub: Subparsers) -> None:
    p = csub.add_parser(
        "build",
        help="EDF + annotations -> cache (parallel, resumable)",
        description="Reads the config's paths.data_root, writes its paths.cache_dir; without "
        "--config both come from --data-root and --out.",
    )
    add_path_flag(
        p,
        "--data-root",
        "data_root",
        "a TUSZ corpus (holding edf/<split>/) or a BIDS tree (sub-*/ses-*/eeg/*_eeg.edf)",
    )
    p.add_argument("--split", required=True, help="train, dev or eval")
    p.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="BIDS: a subject<TAB>split file (default: by a hash of the subject id, 70/15/15); "
        "the assignment used is written to <cache>/splits.tsv",
    )
    add_path_flag(p, "--out", "cache_dir", "cache root; writes <cache>/<split>/")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes")
    p.add_argument("--shard", type=shard, default=None, help="build only shard I of N (I/N)")
    p.add_argument(
        "--max-recordings",
        type=positive_int,
        default=None,
        help="first N recordings only (the manifest then lists those N)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")
    add_config_args(p, required=False)
    p.set_defaults(func=cmd_cache_build)


def _add_cache_transfers(csub: Subparsers) -> None:
    for name, helptext in (("push", "upload a cache to S3"), ("pull", "download a cache from S3")):
        p = csub.add_parser(name, help=helptext + " (parallel, resumable, checksum-verified)")
        if name == "push":
            p.add_argument("dir", type=Path)
            p.add_argument("url", help="s3://bucket/prefix")
            p.add_argument(
                "--force",
                action="store_true",
                help="upload every file, even those already there (repairs objects a pull "
                "found corrupt: their size and stored sha256 still look right)",
            )
        else:
            p.add_argument("url", help="s3://bucket/prefix")
            p.add_argument("dir", type=Path)
        p.add_argument("--endpoint-url", default=None, help="S3-compatible store, e.g. MinIO")
        p.add_argument("--workers", type=positive_int, default=16, help="parallel transfers")
        p.set_defaults(func=cmd_cache_push if name == "push" else cmd_cache_pull)


def _add_train(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train the detector; writes the run directory")
    add_config_args(p, required=True)
    add_path_flag(p, "--cache", "cache_dir", "cache root holding <split>/")
    p.add_argument(
        "--resume",
        default="auto",
        help="auto (latest checkpoint of this run if any), true (must exist), false, or a PATH",
    )
    p.add_argument(
        "--exit-status",
        type=Path,
        metavar="FILE",
        help="also write the exit code to FILE (for launchers: torchrun turns every failure into 1)",
    )
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: Subparsers) -> None:
    p = sub.add_parser("evaluate", help="stitched per-recording evaluation: metrics.json + plots")
    _add_run_files(p, "the run's eval-<split>/")
    p.add_argument("--checkpoint", type=Path, help="a detector (szdet export) or checkpoint")
    add_path_flag(p, "--cache", "cache_dir", "cache root holding <split>/")
    p.add_argument("--split", default="dev", help="split to score, at thresholds chosen on dev")
    p.add_argument("--out", type=Path, help="folder for metrics.json and the plots")
    p.add_argument(
        "--min-auroc",
        type=float,
        metavar="A",
        help="exit with code 5 (after writing everything) if the split's AUROC is below A",
    )
    _add_evaluate_overrides(p, "--set evaluate.fa_targets_per_24h=[10,1]", paths=True)
    p.set_defaults(func=cmd_evaluate)


def _add_detect(sub: Subparsers) -> None:
    p = sub.add_parser(
        "detect",
        help="seizure events of EDF recordings as TUSZ .csv_bi or SzCORE _events.tsv files",
        description=DETECT_THRESHOLD,
    )
    p.add_argument(
        "edf",
        type=Path,
        nargs="+",
        help="EDF recordings (any montage the checkpoint's can be made from)",
    )
    p.add_argument(
        "--checkpoint", type=Path, required=True, help="a detector (szdet export) or checkpoint"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for <edf name>.csv_bi, .csv and/or <edf name minus _eeg>_events.tsv",
    )
    p.add_argument(
        "--format",
        choices=["csv_bi", "csv", "szcore", "both", "all"],
        default="csv_bi",
        help="TUSZ .csv_bi (default), TUSZ's per-channel .csv (each event on the channels that "
        "carry it), the SzCORE events TSV (channels filled), both .csv_bi and TSV, or all three",
    )
    p.add_argument("--plot", action="store_true", help="also write a PNG timeline per recording")
    point = p.add_mutually_exclusive_group()
    point.add_argument(
        "--fa-per-24h",
        type=float,
        metavar="B",
        help="a detector's operating point for at most B false alarms per 24 h (see above)",
    )
    point.add_argument("--threshold", type=float, metavar="T", help="the on-threshold, by hand")
    p.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: a detector's network on onnxruntime's CPU engine (szdet export --onnx)",
    )
    _add_evaluate_overrides(p, "--set evaluate.min_duration_s=10")
    p.set_defaults(func=cmd_detect)


def _add_export(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help="checkpoint -> detector: one file with operating points calibrated on dev",
        description="The model runs over the calibration split; for each FA/24h budget "
        "(evaluate.fa_targets_per_24h) the threshold of highest OVLP sensitivity within it is "
        "chosen, and every method's sensitivity and FA/24h there is given a 95% interval from a "
        "bootstrap over patients. Writes DETECTOR and DETECTOR.png.",
    )
    _add_run_files(p, "the run's <run_name>.detector")
    p.add_argument("--checkpoint", type=Path, help="a training checkpoint (.pt)")
    add_path_flag(p, "--cache", "cache_dir", "cache root holding <split>/")
    p.add_argument("--split", default=None, help="calibration split (default: data.dev_split)")
    p.add_argument("--out", type=Path, metavar="DETECTOR", help="the detector file to write")
    p.add_argument(
        "--onnx", action="store_true", help="also write the network as DETECTOR.onnx (onnxruntime)"
    )
    _add_evaluate_overrides(p, "--set evaluate.fa_targets_per_24h=[1,5]", paths=True)
    p.set_defaults(func=cmd_export)


def _add_score(sub: Subparsers) -> None:
    p = sub.add_parser(
        "score",
        help="score .csv_bi or SzCORE _events.tsv hypotheses against references",
        description="Folders are paired by file name; a reference without a hypothesis counts "
        "as no detections. For _events.tsv files the SzCORE challenge's per-subject averages "
        "(szcore-evaluation 0.0.7's numbers) print as well.",
    )
    for side in ("ref", "hyp"):
        p.add_argument(
            f"--{side}",
            type=Path,
            required=True,
            help="a .csv_bi or _events.tsv file, or a folder (e.g. a BIDS tree) of them",
        )
    p.add_argument(
        "--method",
        choices=["ovlp", "taes", "szcore", "all"],
        default="all",
        help="NEDC OVLP or TAES, SzCORE event scoring, or all three (default)",
    )
    p.add_argument("--json", action="store_true", help="print the scores as JSON, not a table")
    p.set_defaults(func=cmd_score)


def _add_config(sub: Subparsers) -> None:
    p = sub.add_parser(
        "config",
        help="print the resolved config, or some of its fields (e.g. for a shell script)",
        description="Prints the config as every command reads it (extends: followed, --set "
        "applied, every default filled in), or the value of each KEY on a line of its own.",
    )
    add_config_args(p, required=False)
    p.add_argument(
        "keys", nargs="*", metavar="KEY", help="a dotted field such as paths.cache_dir, or run_dir"
    )
    p.set_defaults(func=cmd_config)


def _add_check_kernels(sub: Subparsers) -> None:
    p = sub.add_parser("check-kernels", help="mamba_ssm CUDA kernels vs the pure-PyTorch path")
    p.add_argument(
        "--require-cuda-kernels", action="store_true", help="fail if mamba_ssm is not usable"
    )
    p.add_argument(
        "--interpret",
        action="store_true",
        help="no GPU needed: the fused path under Triton's interpreter vs the pure path, every "
        "launch of a training step against CUDA's grid limits, and every kernel variant compiled "
        "for sm_80/sm_90 (needs `make kernel-tools`)",
    )
    add_config_args(p, required=False)  # the sizes to check (default: the reference)
    p.add_argument("--json", action="store_true", help="--interpret: print the report as JSON")
    p.set_defaults(func=cmd_check_kernels)


def _add_model_summary(sub: Subparsers) -> None:
    p = sub.add_parser("model-summary", help="parameter count per component")
    add_config_args(p, required=True)
    p.set_defaults(func=cmd_model_summary)


def _resource_limit(message: str, error: BaseException) -> int:
    """A machine limit ran out: one line that says so, and exit 70, which launchers retry."""
    code = exit_code_for(error)
    print(
        f"szdet: error: {message} (a resource limit, not bad input: exit {code})", file=sys.stderr
    )
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"szdet: error: {original_message(e)}", file=sys.stderr)
        return exit_code_for(e)
    except ResourceError as e:
        return _resource_limit(original_message(e), e)
    except OSError as e:
        log.debug("traceback", exc_info=True)
        where = f"{e.filename}: " if e.filename else ""
        if shortage := resource_shortage(e):
            return _resource_limit(f"{where}{shortage}", e)
        # a path the user gave that is a folder, unreadable, on a full disk...
        print(f"szdet: error: {where}{e.strerror or e}", file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt as e:
        print("szdet: interrupted", file=sys.stderr)
        return exit_code_for(e)
    except Exception as e:  # a bug or a failing device, not bad input: the traceback is the report
        traceback.print_exc()
        print(f"szdet: internal error (exit {EXIT_INTERNAL})", file=sys.stderr)
        return exit_code_for(e)


if __name__ == "__main__":
    sys.exit(main())
