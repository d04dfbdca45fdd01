"""The one exception type that reaches the user as a one-line message instead of a traceback,
and the exit codes every command shares.

Exit codes: 0 success, 1 bad input (one line), 2 usage, 3/4/75 from `szdet train` (see
szdet.train.loop), 70 an internal error (EX_SOFTWARE: a bug or a failing device; the traceback is
the report), 130 interrupted. Launchers retry 70 and 75, never 1-4.
"""

EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 70, 130


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config): printed as one line, exit non-zero.

    The message should name the file (or field) and the problem, e.g.
    ``configs/x.yaml: train.lr: Input should be a valid number (got 'fast')``.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (its type name if it has none): the reason
    part of a one-line error."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def exit_code_for(error: BaseException) -> int:
    """The exit code a command ends with when ``error`` escapes it."""
    if isinstance(error, UserError):
        return error.exit_code
    if isinstance(error, OSError):  # a path the user gave: a folder, unreadable, a full disk...
        return EXIT_BAD_INPUT
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_INTERNAL
