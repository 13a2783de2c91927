"""Value conversions between Python and the catalog's JSON and TIMESTAMP columns."""

import json
import os
from datetime import UTC, date, datetime
from typing import Any


def utc_now() -> datetime:
    """The current UTC time as a naive datetime (the catalog's TIMESTAMP convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _default(value: Any) -> Any:
    # numpy arrays and scalars (duck-typed: data_catalog does not import numpy), paths, dates.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def to_json(value: Any) -> str | None:
    """Serialise `value` for a JSON column (None stays NULL).

    Raises:
        TypeError: The value holds something JSON cannot represent.
        ValueError: The value holds NaN or infinity (not valid JSON).
    """
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, allow_nan=False, default=_default)


def from_json(text: str | None) -> Any:
    """Parse a JSON column value (NULL becomes None)."""
    return None if text is None else json.loads(text)
