"""The build's files: JSON Lines splits and JSON reports (written into the folder that
:func:`eeve_sft.output_dir.atomic_output_dir` renames into place when the build is done)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write one JSON object per line (UTF-8, non-ASCII kept readable); returns the number of rows."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count


def write_json(path: Path, value: object) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
