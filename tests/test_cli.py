"""The command line itself: help for every command, one-line errors, exit codes."""

import argparse
import subprocess
import sys

import pytest

from szdet.cli import build_parser, main

COMMANDS = [
    ["synth"], ["cache", "build"], ["cache", "verify"], ["cache", "merge"], ["cache", "push"],
    ["cache", "pull"], ["train"], ["evaluate"], ["detect"], ["score"], ["check-kernels"],
    ["model-summary"],
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
    monkeypatch.delitem(sys.modules, "szdet.synth.corpus", raising=False)
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
