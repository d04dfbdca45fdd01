"""The one restart policy of every launcher: Modal (modal/app.py), SkyPilot (sky/train.yaml's
``recover_on_exit_codes``, checked against this file by tests/launch) and scripts/torchrun.sh.

What a launcher does with `szdet train`'s exit code:

- 0: done;
- 75: it checkpointed and stopped (time limit, SIGTERM, preemption): start it again, always;
- 1-4: bad input, usage, non-finite losses, collapse: final, a restart would repeat them;
- anything else is a crash (szdet's internal error 70, a signal, a CUDA or I/O failure): start it
  again from the last checkpoint, at most MAX_CRASH_RESTARTS times in a row, so that a crash that
  repeats cannot restart forever.

Standard library only (errors.py too): modal/app.py imports this on a machine with nothing but
``modal``.
``python -m szdet.cloud.restart CODE COUNT_FILE`` applies the crash bound for a shell launcher.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from szdet.errors import (
    EXIT_BAD_INPUT,
    EXIT_COLLAPSE,
    EXIT_INTERNAL,
    EXIT_NONFINITE,
    EXIT_STOPPED,
    EXIT_USAGE,
)

EXIT_CRASH = EXIT_INTERNAL  # also what scripts/torchrun.sh reports for any crash
FINAL_EXIT_CODES = frozenset({EXIT_BAD_INPUT, EXIT_USAGE, EXIT_NONFINITE, EXIT_COLLAPSE})
RESTART_EXIT_CODES = (EXIT_STOPPED, EXIT_CRASH)  # what SkyPilot is told to recover on
MAX_CRASH_RESTARTS = 3

Outcome = Literal["done", "resume", "final", "crash"]


def outcome(code: int) -> Outcome:
    if code == 0:
        return "done"
    if code == EXIT_STOPPED:
        return "resume"
    return "final" if code in FINAL_EXIT_CODES else "crash"


def bound_crashes(code: int, crashes_before: int) -> tuple[int, int]:
    """(the exit code to hand the launcher, crashes in a row after this exit): a crash becomes
    EXIT_CRASH, or 1 once it would be restart number MAX_CRASH_RESTARTS + 1; any other exit ends
    the streak."""
    if outcome(code) != "crash":
        return code, 0
    crashes = crashes_before + 1
    return (EXIT_CRASH if crashes <= MAX_CRASH_RESTARTS else 1), crashes


def main(argv: list[str]) -> int:
    """``CODE COUNT_FILE``: exit with the launcher's code, keeping the streak in COUNT_FILE."""
    code, count_file = int(argv[0]), Path(argv[1])
    before = int(count_file.read_text()) if count_file.is_file() else 0
    launcher_code, crashes = bound_crashes(code, before)
    if crashes:
        count_file.parent.mkdir(parents=True, exist_ok=True)
        count_file.write_text(f"{crashes}\n")
    else:
        count_file.unlink(missing_ok=True)
    if launcher_code == 1 and code != 1:
        print(
            f"szdet: crashed {crashes} times in a row; not asking for another restart",
            file=sys.stderr,
        )
    return launcher_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
