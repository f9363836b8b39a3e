"""JSON and JSON Lines files as every part of the project writes and reads them: UTF-8, Korean kept readable, a
trailing newline, written whole (a reader never sees half a file), and read with every problem named by its file and
1-based line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError


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


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """The rows of a JSON Lines file with their 1-based line numbers; blank lines hold no row and are skipped.

    A line that is not UTF-8, not JSON or not a JSON object stops the read with ``FILE line N: ...``: the line a
    user opens in an editor, not a parser's 0-based row index.
    """
    path = Path(path)
    for number, raw in _numbered_lines(path):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path} line {number}: not UTF-8 text (byte {err.start + 1})") from None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise UserError(f"{path} line {number}: not valid JSON (nested too deep)") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, got {_json_kind(row)}")
        yield number, row


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open(path, "rb") as handle:
            yield from enumerate(handle, start=1)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Every row of a JSON Lines file with its line number (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path))


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string"}.get(type(value), "a number")
