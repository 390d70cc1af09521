"""Errors that reach a user as one clear line (the CLI prints ``str(error)`` and exits non-zero)."""


class VecfmtError(Exception):
    """Base class: the message is complete and safe to show (no secrets, no traceback needed)."""


class DumpError(VecfmtError):
    """A dump is missing, incomplete, corrupt, or of a version this vecfmt cannot read."""


class InvalidDataError(VecfmtError):
    """Rows that the format forbids: wrong dimensions, NaN/inf, duplicate or null ids, bad JSON."""


class StoreError(VecfmtError):
    """A store is unreachable, missing, refuses the operation, or its SDK is not installed."""


def one_line(text: str, limit: int = 500) -> str:
    """``text`` (a driver's message, perhaps several lines) as one line of at most ``limit`` characters."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:limit] or "unknown error"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name): what a one-line error can quote."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
