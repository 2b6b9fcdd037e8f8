"""Read a small CSV the user supplies (groups, tiers) as strings, with errors that say the fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from entromix.common.errors import DataError


def read_user_csv(path: str | Path, what: str, key: str, columns: Sequence[str], path_column: str) -> pd.DataFrame:
    """All cells as stripped strings; ``path_column`` with ``/`` separators.

    Args:
        what: how the message names the file ("groups CSV").
        key: the params key that points at it ("ingest.groups_csv").
        columns: required header names.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found. Fix {key}, or set it to null.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc}).") from None
    if not set(columns) <= set(table.columns):
        raise DataError(
            f"{path}: needs columns {', '.join(repr(c) for c in columns)} (found {', '.join(table.columns)}). "
            "Rename the header row."
        )
    table = table.apply(lambda col: col.str.strip())
    table[path_column] = table[path_column].str.replace("\\", "/", regex=False)
    return table
