"""JSON and JSON Lines files as every part of the project writes them: UTF-8, Korean kept readable, a trailing
newline, and written whole (a reader never sees half a file)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """Write `text` (UTF-8) through a temporary file renamed into place: a kill leaves the old file or the new."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)


def write_json(path: Path, value: object) -> None:
    """Write `value` as indented JSON, whole (:func:`write_whole`)."""
    write_whole(path, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write one JSON object per line; returns the number of rows."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count
