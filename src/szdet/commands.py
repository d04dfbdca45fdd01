"""What each `szdet` command does with its parsed flags (szdet/cli.py parses them): hand plain
values to the stage that does the work. The stages are imported only when their command runs, so
`szdet --help` stays instant and a command never pays for torch unless it needs it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from szdet.errors import EXIT_INTERNAL, UserError, exit_code_for
from szdet.fileio import write_text_atomic

if TYPE_CHECKING:
    from szdet.state.run_dir import RunDir


def _config(
    args: argparse.Namespace, needs: tuple[str, ...] = (), overrides: list[str] | None = None
):  # -> szdet.config.Config
    """The command's config: --config (or the defaults) with its --set overrides (``overrides``
    when given), then its path flags, each only sugar for the paths.* field it names
    (szdet/cli.py's `_add_path_flag`): one code path, so what a run saves records what it used.
    Without --config, each paths.* field in ``needs`` must come from its flag or a --set."""
    from szdet.config_load import assignment, load_config

    flags: dict[str, str] = getattr(args, "path_flags", {})
    given = [
        assignment(field, getattr(args, field))
        for field in flags
        if getattr(args, field) is not None
    ]
    overrides = [*(args.overrides if overrides is None else overrides), *given]
    if args.config is None:
        assigned = {o.partition("=")[0].strip() for o in overrides}
        for field in needs:
            if field not in assigned:
                raise UserError(
                    f"no {field} given: pass {flags[field]} DIR, or --config FILE (its {field})"
                )
    return load_config(args.config, overrides)


def cmd_synth(args: argparse.Namespace) -> int:
    try:
        from szdet.synth.corpus import write_corpus
    except ModuleNotFoundError as e:  # its EDF writer is the synth extra, not a dependency
        if e.name != "pyedflib":
            raise
        raise UserError("szdet synth needs pyEDFlib: pip install 'szdet[synth]'") from e

    write_corpus(
        args.out,
        patients=args.patients,
        minutes=args.minutes,
        seed=args.seed,
        difficulty=args.difficulty,
    )
    return 0


def cmd_cache_build(args: argparse.Namespace) -> int:
    cfg = _config(args, needs=("paths.data_root", "paths.cache_dir"))
    from szdet.data.cache import build_cache

    report = build_cache(
        data_root=cfg.paths.data_root,
        split=args.split,
        out=cfg.paths.cache_dir,
        preprocess=cfg.preprocess,
        montage=cfg.data.montage,
        workers=args.workers,
        shard=args.shard,
        max_recordings=args.max_recordings,
        splits_file=args.splits,
    )
    if args.strict and report.skipped:
        raise UserError(
            f"{cfg.paths.cache_dir / args.split}: {len(report.skipped)} file(s) skipped (--strict)"
        )
    return 0


def cmd_cache_merge(args: argparse.Namespace) -> int:
    from szdet.data.manifest import merge_shards

    merge_shards(args.dir, split=args.split)
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    from szdet.data.cache import verify_command

    return verify_command(args.dir, expect=args.expect or {}, as_json=args.json)


def cmd_cache_push(args: argparse.Namespace) -> int:
    from szdet.cloud.s3 import push

    push(args.dir, args.url, endpoint_url=args.endpoint_url, workers=args.workers, force=args.force)
    return 0


def cmd_cache_pull(args: argparse.Namespace) -> int:
    from szdet.cloud.s3 import pull

    pull(args.url, args.dir, endpoint_url=args.endpoint_url, workers=args.workers)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    code = EXIT_INTERNAL
    try:
        cfg = _config(args)  # config errors surface before torch is imported
        from szdet.train.loop import run_training

        code = run_training(cfg, resume=args.resume)
        return code
    except BaseException as e:
        code = exit_code_for(e)
        raise
    finally:
        # torchrun reports any failed worker as exit 1: its launcher reads the real code here.
        # One writer per node (torchrun's LOCAL_RANK); a file on local disk, not shared.
        if args.exit_status is not None and os.environ.get("LOCAL_RANK", "0") == "0":
            write_text_atomic(args.exit_status, f"{code}\n")


def _run_files(
    args: argparse.Namespace, out_of_run: Callable[[RunDir], Path], out_flag: str
) -> tuple[Path, Path, Path, list[str]]:
    """evaluate's and export's checkpoint, cache and output, each its flag or else from --config:
    its run's best.pt, its paths.cache_dir, ``out_of_run`` of its run folder. Their --set
    overrides of paths.* apply to --config; the rest (evaluate.*) to the checkpoint's own config,
    which decides the model and how it is evaluated. Returns those three and the rest."""
    from szdet.state.run_dir import RunDir

    where = [o for o in args.overrides if o.startswith("paths.")]
    cfg = _config(args, needs=("paths.cache_dir",), overrides=where)
    run = RunDir(cfg.run_dir)
    if args.config is None:
        for what, flag, value in (
            ("no checkpoint", "--checkpoint PT", args.checkpoint),
            ("no output", out_flag, args.out),
        ):
            if value is None:
                raise UserError(f"{what} given: pass {flag}, or --config FILE (its run's paths.*)")
    rest = [o for o in args.overrides if o not in where]
    return args.checkpoint or run.best, cfg.paths.cache_dir, args.out or out_of_run(run), rest


def cmd_evaluate(args: argparse.Namespace) -> int:
    checkpoint, cache, out, overrides = _run_files(
        args, lambda run: run.evaluation(args.split), "--out DIR"
    )
    from szdet.evaluate.report import evaluate_command

    return evaluate_command(checkpoint, cache, args.split, out, overrides, args.min_auroc)


def cmd_detect(args: argparse.Namespace) -> int:
    from szdet.evaluate.detect import detect_command

    return detect_command(
        args.edf,
        checkpoint=args.checkpoint,
        out=args.out,
        plot=args.plot,
        overrides=args.overrides,
        output_format=args.format,
        fa_per_24h=args.fa_per_24h,
        threshold=args.threshold,
        engine=args.engine,
    )


def cmd_export(args: argparse.Namespace) -> int:
    checkpoint, cache, out, overrides = _run_files(args, lambda run: run.detector, "--out DETECTOR")
    from szdet.evaluate.export import export_command

    return export_command(
        checkpoint=checkpoint,
        cache=cache,
        split=args.split,
        out=out,
        overrides=overrides,
        onnx=args.onnx,
    )


def cmd_score(args: argparse.Namespace) -> int:
    from szdet.evaluate.score_files import score_command

    return score_command(args.ref, args.hyp, method=args.method, as_json=args.json)


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not args.keys:
        print(cfg.to_yaml(), end="")
        return 0
    from szdet.config_load import config_value

    print("\n".join(config_value(cfg, key) for key in args.keys))
    return 0


def cmd_check_kernels(args: argparse.Namespace) -> int:
    cfg = _config(args)  # the sizes to check: the reference ones by default
    if args.interpret:
        from szdet.kernel_proof.report import check_interpret

        return check_interpret(cfg, as_json=args.json)
    from szdet.kernel_proof.check import check_kernels

    return check_kernels(cfg, require_cuda_kernels=args.require_cuda_kernels)


def cmd_model_summary(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from szdet.models.summary import print_summary

    print_summary(cfg)
    return 0
