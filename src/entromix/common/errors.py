"""User-facing errors.

Anything the user can fix (a bad param, a missing folder, an unmapped class) raises a subclass of
:class:`EntromixError` with a message that says what is wrong, where, and how to fix it. The stage
scripts catch these and print the message without a traceback; any other exception is a bug.
"""


class EntromixError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class ParamsError(EntromixError):
    """A key in params.yaml is missing, unknown, of the wrong type or out of range."""


class DataError(EntromixError):
    """The input images or folders are not what the pipeline needs."""


def listing(items, limit: int = 10) -> str:
    """``a, b, c, ... and N more``: the first ``limit`` items of a long list, for error messages."""
    items = [str(i) for i in items]
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


class DiskFullError(EntromixError):
    """The file system ran out of space while a stage wrote its outputs (which were not replaced)."""
