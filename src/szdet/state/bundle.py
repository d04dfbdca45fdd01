"""The detector bundle: the one file `szdet export` writes and a user runs (`detect`, `evaluate`,
the SzCORE image), where a training checkpoint also carries an optimizer and a loop's position.

One ``torch.save`` dict of plain types and tensors, read as a checkpoint is (weights_only, CRCs
checked; state/checkpoint.py). Its keys:

- ``format``: FORMAT; ``config`` and ``fingerprint``: as in a checkpoint (state/contents.py);
- ``model``: the weights;
- ``channels``: the input channels, in order, of the montage the model reads (data.montage);
- ``preprocess_hash``: the preprocessing algorithm and settings (config.py PreprocessConfig);
- ``operating_points``: evaluate/operating_points.py ``calibrate``'s result;
- ``provenance``: szdet version, git commit, the checkpoint (path, sha256, run, step), the
  calibration split and its cache manifest's sha256.

A bundle whose channels or preprocessing hash this szdet computes differently (another version's
montage or algorithm) is refused in one line: its thresholds were calibrated on other inputs.

``python -m szdet.state.bundle FILE`` exits 0 for a bundle and refuses anything else in one line
(exit 1): the SzCORE image checks its weights with it when built and when run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from szdet import __version__
from szdet.config import Config, montage_channels
from szdet.errors import EXIT_USAGE, UserError
from szdet.fileio import atomic_path
from szdet.state.checkpoint import FORMAT as CHECKPOINT_FORMAT
from szdet.state.checkpoint import read_checkpoint

FORMAT = "szdet-detector-v1"


def git_commit() -> str | None:
    """The commit of the source tree szdet runs from, if it is a git checkout (None in a wheel)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def inputs_of(cfg: Config) -> dict[str, Any]:
    """What the model reads, as this szdet computes it from the config."""
    return {
        "channels": list(montage_channels(cfg.data.montage)),
        "preprocess_hash": cfg.preprocess.fingerprint(cfg.data.montage),
    }


def write_bundle(
    path: Path,
    cfg: Config,
    model_state: dict[str, torch.Tensor],
    operating_points: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    bundle = {
        "format": FORMAT,
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
        "model": model_state,
        **inputs_of(cfg),
        "operating_points": operating_points,
        "provenance": {"szdet_version": __version__, "git_commit": git_commit(), **provenance},
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(bundle, f)


def check_bundle(bundle: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse a bundle made for inputs this szdet would prepare differently."""
    made_by = bundle.get("provenance", {}).get("szdet_version", "an unknown version")
    expected = inputs_of(cfg)
    if bundle.get("channels") != expected["channels"]:
        raise UserError(
            f"{path}: detector made by szdet {made_by} reads channels {bundle.get('channels')}, "
            f"this szdet's {cfg.data.montage} montage is {expected['channels']}; export it again"
        )
    if bundle.get("preprocess_hash") != expected["preprocess_hash"]:
        raise UserError(
            f"{path}: detector made by szdet {made_by} with preprocessing "
            f"{bundle.get('preprocess_hash')}, this szdet computes {expected['preprocess_hash']} "
            "from the same settings; export it again with this version"
        )
    if not isinstance(bundle.get("operating_points"), dict):
        raise UserError(f"{path}: detector holds no operating points")


def require_bundle(path: Path) -> None:
    """Refuse a training checkpoint where only a detector may run (the SzCORE image): it has no
    operating points, so it would run at the uncalibrated ``evaluate.threshold_on``."""
    if read_checkpoint(path, formats=(FORMAT, CHECKPOINT_FORMAT))["format"] != FORMAT:
        raise UserError(
            f"{path}: a training checkpoint, not a detector (it would run at an uncalibrated "
            "threshold); `szdet export` it into a detector bundle and use that"
        )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m szdet.state.bundle FILE", file=sys.stderr)
        return EXIT_USAGE
    try:
        require_bundle(Path(argv[0]))
    except UserError as e:
        print(f"szdet: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
