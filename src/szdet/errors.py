"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config): printed as one line, exit non-zero.

    The message should name the file (or field) and the problem, e.g.
    ``configs/x.yaml: train.lr: Input should be a valid number (got 'fast')``.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
