"""Result tables as CSV files in the lake (atomic writes; nested values as JSON)."""

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rice_models.paths import atomic_path


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else value


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write `rows` (dicts; columns in first-seen order) as CSV; return `path`."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return path
