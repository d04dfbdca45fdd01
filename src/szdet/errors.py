"""The exceptions that reach the user as a one-line message instead of a traceback (UserError: bad
input; ResourceError: a machine limit ran out), and the exit codes every command shares.

Exit codes (defined here, the one owner; standard library only, so the launchers' restart policy,
cloud/restart.py, imports them anywhere): 0 success, 1 bad input (one line), 2 usage, 3/4/75 from
`szdet train` (see szdet.train.loop), 70 an internal error (EX_SOFTWARE: a bug, a failing device, or a machine limit
such as open files running out; the traceback or the one-line ResourceError is the report), 130
interrupted. Launchers retry 70 and 75, never 1-4. A full disk is a machine limit (70): the
file being written is fine, and space freed (or a fresh machine) is what helps.
"""

import errno
import os
import re
import resource
import shutil

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2  # 2: argparse's own
EXIT_NONFINITE, EXIT_COLLAPSE = 3, 4  # `szdet train` stopped: non-finite losses, a collapsed model
EXIT_BELOW_TARGET = 5  # `szdet evaluate --min-auroc`: the model scored below it (metrics written)
EXIT_INTERNAL, EXIT_STOPPED, EXIT_INTERRUPTED = 70, 75, 130  # 75: checkpointed and stopped


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config): printed as one line, exit non-zero.

    The message should name the file (or field) and the problem, e.g.
    ``configs/x.yaml: train.lr: Input should be a valid number (got 'fast')``.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ResourceError(Exception):
    """A limit of the machine ran out (open files, memory) while reading a file that is fine:
    printed as one line, exit 70 (a retry or a raised limit helps, fixing the input would not)."""


# errno -> what ran out; {nofile} and {nproc} are filled in with the process's soft limits.
_SHORTAGES = {
    errno.EMFILE: "too many open files (ulimit -n {nofile})",
    errno.ENFILE: "too many open files on this machine (sysctl fs.file-max)",
    errno.ENOMEM: "out of memory",
    errno.EAGAIN: "resource temporarily unavailable (processes: ulimit -u {nproc})",
    errno.ENOSPC: "no space left on device{space}",
    errno.EDQUOT: "disk quota exceeded{space}",
}
_WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\n")


def resource_shortage(error: OSError) -> str | None:
    """What ran out if ``error`` is a machine limit rather than a bad path, e.g.
    ``too many open files (ulimit -n 1024)``; None for a bad path."""
    if error.errno not in _SHORTAGES:
        return None
    return _SHORTAGES[error.errno].format(
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        nproc=resource.getrlimit(resource.RLIMIT_NPROC)[0],
        space=_free_space(error.filename),
    )


def _free_space(filename: str | None) -> str:
    """`` (N bytes free on MOUNT)`` for the filesystem holding ``filename``, or "" if unknown."""
    if not filename:
        return ""
    mount = os.path.realpath(filename)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    try:
        free = shutil.disk_usage(mount).free
    except OSError:
        return ""
    return f" ({free} bytes free on {mount})"


def original_message(error: BaseException) -> str:
    """An exception's message as raised: torch re-raises a DataLoader worker's exception as
    "Caught X in DataLoader worker process N." and the worker's traceback, which ends in
    "module.X: message"."""
    text = str(error)
    if _WORKER_ERROR.match(text):
        return text.rstrip().splitlines()[-1].partition(": ")[2] or text
    return text


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (its type name if it has none): the reason
    part of a one-line error."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def exit_code_for(error: BaseException) -> int:
    """The exit code a command ends with when ``error`` escapes it."""
    if isinstance(error, UserError):
        return error.exit_code
    if isinstance(error, OSError) and resource_shortage(error) is None:
        return EXIT_BAD_INPUT  # a path the user gave: a folder, unreadable...
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_INTERNAL
