"""The SzCORE detector image (the Dockerfile's `szcore` target) without a Docker engine: its
stage follows the challenge's contract, and its entry script, run as the challenge runs it (UID
10001, HOME=/nonexistent, only INPUT and OUTPUT set, /data read-only, no network), turns a 2 s and
a 10-minute EDF into valid events TSVs with a detector bundle, and refuses a training checkpoint
(which would run at an uncalibrated threshold) when the image is built and when it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from epilepsy2bids.annotations import Annotations

from edf_factory import recording_signals, write_edf
from szdet.config_load import load_config
from szdet.data.hed_tsv import COLUMNS
from test_image import REPO, lineage, stages
from train_support import build_tiny_cache, train, write_config

ENTRY = REPO / "scripts" / "szcore_detect.sh"
CHALLENGE_UID = 10001
EDF = "sub-01/ses-01/eeg/sub-01_ses-01_task-szMonitoring_run-{:02d}_eeg.edf"


def test_the_szcore_stage_follows_the_challenge_contract():
    all_stages = stages()
    assert list(all_stages)[-1] == "runtime"  # a plain `docker build` still makes the trainer
    szcore = all_stages["szcore"]
    assert szcore[0][1] == "app AS szcore"
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in szcore[1:]:
        by_keyword.setdefault(keyword, []).append(args)
    assert by_keyword["ARG"] == ["WEIGHTS=weights/szcore.pt"]
    assert by_keyword["COPY"] == ["${WEIGHTS} /opt/szdet/weights/szcore.pt"]
    # the baked-in file is checked by the command the entry script runs (tested below)
    check = "python -m szdet.state.bundle /opt/szdet/weights/szcore.pt"
    assert by_keyword["RUN"] == [check]
    assert szcore.index(("RUN", check)) > szcore.index(("COPY", by_keyword["COPY"][0]))
    assert 'python -m szdet.state.bundle "$detector"' in ENTRY.read_text()
    assert by_keyword["USER"] == [f"{CHALLENGE_UID}:{CHALLENGE_UID}"]
    assert by_keyword["ENV"] == ["HOME=/nonexistent"]
    assert by_keyword["VOLUME"] == ['["/data", "/output"]']
    assert by_keyword["ENTRYPOINT"] == ["[]"]  # else the CMD would be the trainer's arguments
    (cmd,) = by_keyword["CMD"]
    assert not cmd.startswith("[")  # shell form: the challenge's variables must expand
    assert cmd == "/opt/szdet/scripts/szcore_detect.sh"
    assert "scripts ./scripts" in [a for k, a in lineage("szcore") if k == "COPY"]
    assert os.access(ENTRY, os.X_OK)


def test_dockerignore_lets_only_the_weights_folder_pass_a_checkpoint():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    # .dockerignore's last matching line wins: the exception must come after the exclusion.
    assert lines.index("!weights/*.pt") > lines.index("**/*.pt")


@pytest.fixture(scope="module")
def challenge() -> Iterator[dict[str, Path]]:
    """A training checkpoint, the detector `szdet export` makes of it, and /data, /output
    stand-ins that UID 10001 can reach (pytest's own tmp is private to root), /data holding a 2 s
    and a 10-minute recording."""
    root = Path(tempfile.mkdtemp(prefix="szcore-"))
    try:
        root.chmod(0o755)
        build = root / "build"
        # The default 60 s windows, as a real checkpoint has: the 2 s EDF is one padded window.
        windows = {"length_s": 60.0, "train_stride_s": 30.0, "eval_stride_s": 30.0}
        cache = build_tiny_cache(build)
        config = write_config(build, cache, windows=windows)
        proc = train(config)
        assert proc.returncode == 0, proc.stderr[-2000:]
        checkpoint = load_config(config).run_dir / "checkpoints" / "best.pt"
        detector = build / "weights" / "szcore.pt"  # named as the image bakes it
        export = [sys.executable, "-m", "szdet.cli", "export", "--checkpoint", str(checkpoint)]
        export += ["--cache", str(cache), "--out", str(detector)]
        proc = subprocess.run(export, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        data, output = root / "data", root / "output"
        for run, seconds in ((0, 2), (1, 600)):
            write_edf(data / EDF.format(run), recording_signals(seconds, 256, seed=run), 256)
        for folder in [data, *data.rglob("*")]:
            folder.chmod(0o555 if folder.is_dir() else 0o444)  # read-only, as mounted
        output.mkdir()
        output.chmod(0o777)
        yield {
            "data": data,
            "output": output,
            "checkpoint": checkpoint,
            "detector": detector,
        }
    finally:
        for folder in root.rglob("*"):
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(root)


def as_the_challenge_runs_it(
    challenge, weights: str = "detector", **env: str
) -> subprocess.CompletedProcess:
    """The entry script with only the challenge's variables, as UID 10001 with no network (as
    root, through unshare and setpriv); as a non-root user it already runs unprivileged.
    ``weights``: the fixture's file baked in."""
    clean_env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/nonexistent"}
    command = [str(ENTRY), str(challenge["data"]), str(challenge["output"])]
    command.append(str(challenge[weights]))
    if os.geteuid() == 0:
        drop = ["setpriv", f"--reuid={CHALLENGE_UID}", f"--regid={CHALLENGE_UID}", "--clear-groups"]
        # This Python may live under /root (pyenv), which UID 10001 cannot enter; the image's is
        # in /opt/python. Reading and searching any folder is granted, writing nothing more.
        drop += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        command = ["unshare", "--net", *drop, *command]
    return subprocess.run(
        command, env={**clean_env, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(("run", "seconds"), [(0, 2.0), (1, 600.0)])
def test_an_edf_becomes_a_valid_events_tsv_as_uid_10001(challenge, run, seconds):
    out_name = f"sub-01/run-{run}_events.tsv"
    proc = as_the_challenge_runs_it(challenge, INPUT=EDF.format(run), OUTPUT=out_name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = challenge["output"] / out_name
    lines = written.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    theirs = Annotations.loadTsv(str(written))  # the challenge's own reader
    assert theirs.getMask(1).shape == (int(seconds),)
    assert {e["recordingDuration"] for e in theirs.events} == {seconds}
    assert all(str(e["eventType"].value).startswith(("sz", "bckg")) for e in theirs.events)
    assert not list(challenge["output"].rglob("*.tmp"))
    if os.geteuid() == 0:
        assert written.stat().st_uid == CHALLENGE_UID


def test_a_missing_input_or_variable_is_one_line_and_writes_nothing(challenge):
    proc = as_the_challenge_runs_it(challenge, INPUT="nope.edf", OUTPUT="nope_events.tsv")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"szcore: {challenge['data']}/nope.edf: no such EDF file (INPUT=nope.edf)"
    )
    proc = as_the_challenge_runs_it(challenge, OUTPUT="x_events.tsv")
    assert proc.returncode != 0 and "INPUT is not set" in proc.stderr
    assert not (challenge["output"] / "nope_events.tsv").exists()


def test_an_output_that_cannot_be_the_tsv_is_one_line_and_leaves_no_temporary(challenge):
    folder = challenge["output"] / "taken_events.tsv"
    folder.mkdir()
    folder.chmod(0o777)
    proc = as_the_challenge_runs_it(challenge, INPUT=EDF.format(0), OUTPUT="taken_events.tsv")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"szcore: {folder}: is a folder, not the events TSV to write (OUTPUT=taken_events.tsv)"
    )
    blocker = challenge["output"] / "plain-file"
    blocker.write_text("not a folder")
    blocker.chmod(0o666)
    proc = as_the_challenge_runs_it(
        challenge, INPUT=EDF.format(0), OUTPUT="plain-file/x_events.tsv"
    )
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"szcore: {blocker}/x_events.tsv: cannot write the events TSV (")
    assert not list(challenge["output"].rglob("*.tmp")) and list(folder.iterdir()) == []


def test_a_training_checkpoint_is_refused_in_one_line_and_writes_nothing(challenge):
    proc = as_the_challenge_runs_it(
        challenge, weights="checkpoint", INPUT=EDF.format(0), OUTPUT="ckpt_events.tsv"
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"szdet: error: {challenge['checkpoint']}: a training checkpoint, not a detector (it "
        "would run at an uncalibrated threshold); `szdet export` it into a detector bundle and "
        "use that"
    )
    assert not (challenge["output"] / "ckpt_events.tsv").exists()
