"""The command line itself: help for every command, one-line errors, exit codes."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from szdet.cli import build_parser, main

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "local" / "smoke.yaml"

COMMANDS = [
    ["synth"], ["cache", "build"], ["cache", "verify"], ["cache", "merge"], ["cache", "push"],
    ["cache", "pull"], ["train"], ["evaluate"], ["detect"], ["score"], ["config"],
    ["check-kernels"], ["model-summary"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*command, "--help"])
    assert e.value.code == 0
    assert "usage: szdet" in capsys.readouterr().out


def test_config_error_is_one_line_with_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n")
    proc = subprocess.run(
        [sys.executable, "-m", "szdet.cli", "model-summary", "--config", str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"szdet: error: {bad}: train.lr: Input should be a valid number, unable to parse string as a number (got 'fast')"
    ]


def test_bad_shard_and_expect_are_usage_errors(capsys):
    for argv in (
        ["cache", "build", "--data-root", "x", "--split", "train", "--out", "y", "--shard", "4/4"],
        ["cache", "verify", "x", "--expect", "train:3"],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_filesystem_errors_are_one_line(tmp_path, capsys):
    # A folder where a config file should be: the OS error, named, without a traceback.
    assert main(["model-summary", "--config", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"szdet: error: {tmp_path}: Is a directory"


def test_an_internal_error_exits_70_with_its_traceback(tmp_path, capsys, monkeypatch):
    # Not bad input: launchers retry exit 70 (a crash), never 1 (the user's input).
    import szdet.synth.corpus

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(szdet.synth.corpus, "write_corpus", crash)
    assert main(["synth", str(tmp_path / "x")]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "illegal memory access" in err
    assert err.strip().splitlines()[-1] == "szdet: internal error (exit 70)"


def test_synth_without_pyedflib_names_the_extra_in_one_line(tmp_path, capsys, monkeypatch):
    # pyEDFlib, the synthetic corpus's EDF writer, is the synth extra, not a dependency.
    monkeypatch.setitem(sys.modules, "pyedflib", None)  # `import pyedflib` now fails
    for module in ("szdet.synth.corpus", "szdet.synth.edf_files"):  # the writer imports it
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["synth", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "szdet: error: szdet synth needs pyEDFlib: pip install 'szdet[synth]'"
    ]
    assert not (tmp_path / "x").exists()


def _subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["detect", "evaluate", "score"])
def test_every_flag_of_the_evaluation_commands_has_help(command):
    parser = _subcommand(command)
    undocumented = [
        a.dest for a in parser._actions if not (a.help and a.help.strip()) and a.dest != "help"
    ]
    assert undocumented == []


def test_detect_help_says_how_an_operating_point_is_chosen(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--fa-per-24h B picks the one for a false-alarm budget B" in text
    assert "szdet export" in text and "calibrated on dev" in text
    assert "evaluate.threshold_on (0.5: uncalibrated)" in text and "--threshold T" in text


def one_error(capsys, *argv: str) -> str:
    assert main([str(a) for a in argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_path_with_neither_a_config_nor_its_flag_is_one_line_naming_both(tmp_path, capsys):
    # The config's paths.* own where things are; a path flag only overrides its field. Without
    # --config nothing says where, and the one line names both ways of saying it.
    assert one_error(capsys, "cache", "build", "--split", "dev") == (
        "szdet: error: no paths.data_root given: pass --data-root DIR, or --config FILE "
        "(its paths.data_root)"
    )
    assert one_error(capsys, "cache", "build", "--split", "dev", "--data-root", tmp_path) == (
        "szdet: error: no paths.cache_dir given: pass --out DIR, or --config FILE "
        "(its paths.cache_dir)"
    )
    for command in ("evaluate", "export"):
        assert one_error(capsys, command) == (
            "szdet: error: no paths.cache_dir given: pass --cache DIR, or --config FILE "
            "(its paths.cache_dir)"
        )
        assert one_error(capsys, command, "--cache", tmp_path) == (
            "szdet: error: no checkpoint given: pass --checkpoint PT, or --config FILE "
            "(its run's paths.*)"
        )
    assert one_error(capsys, "evaluate", "--set", f"paths.cache_dir={tmp_path}", "--checkpoint",
                     tmp_path / "x.pt") == (
        "szdet: error: no output given: pass --out DIR, or --config FILE (its run's paths.*)"
    )  # fmt: skip
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_config_prints_the_resolved_fields_a_script_needs(capsys):
    argv = ["config", "--config", str(SMOKE), "--set", "paths.run_name=r2"]
    assert main([*argv, "paths.data_root", "paths.cache_dir", "run_dir", "train.epochs"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "runs/smoke/corpus", "runs/smoke/cache", "runs/smoke/r2", "4"
    ]  # fmt: skip
    assert main(argv) == 0  # no key: the whole resolved config, as YAML
    assert "  run_name: r2\n" in capsys.readouterr().out
    assert one_error(capsys, *argv, "paths.nope") == (
        "szdet: error: paths.nope: no such config field (e.g. paths.cache_dir, or run_dir)"
    )
