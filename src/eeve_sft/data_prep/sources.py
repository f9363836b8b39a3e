"""Reading sources: a Hub dataset or a local JSON/JSONL/CSV/Parquet file, as raw rows plus the columns it has.

Rows that cannot even be read as an object (a line that is not JSON, a JSON value that is not an object) are
kept as :class:`BadRow` so that they are counted, not lost. Column mappings are checked against every source
before any row is processed (:func:`check_columns`).
"""

from __future__ import annotations

import csv
import json
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError
from ..hub import dataset_hub_problem
from .mix import Source

PREVIEW_CHARS = 200


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read as an object: why, and the start of what was there."""

    reason: str
    preview: str


@dataclass
class LoadedSource:
    """One source's rows. `numbers[i]` is the 1-based row (for JSON Lines: line) number of `rows[i]`."""

    spec: Source
    columns: list[str]
    rows: Sequence  # dicts and BadRows, or a datasets.Dataset for Hub sources
    numbers: Sequence[int]
    rows_available: int  # before `max_rows` picked a subset

    def __len__(self) -> int:
        return len(self.rows)

    def iter_rows(self) -> Iterator[tuple[int, dict | BadRow]]:
        return zip(self.numbers, self.rows, strict=True)


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _json_lines(data: bytes, desc: str = "", show_progress: bool = False) -> tuple[list[dict | BadRow], list[int]]:
    rows: list[dict | BadRow] = []
    numbers: list[int] = []
    lines = data.split(b"\n")
    bar = tqdm(
        enumerate(lines, start=1), total=len(lines), desc=desc, unit="line", disable=not show_progress, leave=False
    )
    for number, raw in bar:
        if not raw.strip():
            continue  # blank lines (a trailing newline, spacing) hold no row
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            rows.append(BadRow("invalid_utf8", _preview(raw.decode("utf-8", errors="replace"))))
            numbers.append(number)
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            rows.append(BadRow("invalid_json", _preview(line.strip())))
        else:
            rows.append(value if isinstance(value, dict) else BadRow("not_an_object", _preview(line.strip())))
        numbers.append(number)
    return rows, numbers


def _json_document(path: Path, data: bytes) -> tuple[list[dict | BadRow], list[int]]:
    """A .json file: one array of objects, or (as the Hub's json loader also accepts) JSON Lines."""
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return _json_lines(data)
    if isinstance(value, dict):
        return [value], [1]
    if not isinstance(value, list):
        raise UserError(f"{path} holds a JSON {type(value).__name__}; expected an array of objects or JSON Lines")
    rows: list[dict | BadRow] = [
        item if isinstance(item, dict) else BadRow("not_an_object", _preview(json.dumps(item, ensure_ascii=False)))
        for item in value
    ]
    return rows, list(range(1, len(rows) + 1))


def _csv_rows(path: Path, data: bytes) -> tuple[list[str], list[dict | BadRow], list[int]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start})") from None
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # answers can be longer than csv's 128 KiB default
    reader = csv.DictReader(text.splitlines(keepends=True), restval=None)
    try:
        header = list(reader.fieldnames or [])
        rows: list[dict | BadRow] = []
        for record in reader:
            record.pop(None, None)  # cells beyond the header have no column to belong to
            rows.append(record)
    except csv.Error as err:
        raise UserError(f"{path} is not valid CSV (line {reader.line_num}): {err}") from None
    return header, rows, list(range(1, len(rows) + 1))


def _columns_of(rows: Sequence[dict | BadRow]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            for key in row:
                seen.setdefault(str(key), None)
    return list(seen)


def _read_local(spec: Source, show_progress: bool) -> tuple[list[str], list[dict | BadRow], list[int]]:
    path = Path(str(spec.path))
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    if spec.format == "jsonl":
        rows, numbers = _json_lines(data, f"read {spec.name}", show_progress)
        return _columns_of(rows), rows, numbers
    if spec.format == "json":
        rows, numbers = _json_document(path, data)
        return _columns_of(rows), rows, numbers
    if spec.format == "csv":
        return _csv_rows(path, data)
    if spec.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"cannot read {path} as Parquet: {' '.join(str(err).split())[:200]}") from None
        rows = table.to_pylist()
        return list(table.column_names), rows, list(range(1, len(rows) + 1))
    raise AssertionError(f"unhandled format {spec.format}")  # the mix loader only lets known formats through


def _read_hub(spec: Source):
    import datasets

    if problem := dataset_hub_problem():
        raise UserError(f"cannot load Hub dataset '{spec.hub}': {problem}")
    try:
        dataset = datasets.load_dataset(spec.hub, name=spec.config, split=spec.split, revision=spec.revision)
    except (FileNotFoundError, ValueError, ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as err:
        raise UserError(f"cannot load Hub dataset '{spec.hub}': {' '.join(str(err).split())[:300]}") from None
    return dataset


def _subset(count: int, max_rows: int | None, seed: int, name: str) -> list[int] | None:
    """Sorted indices of a seeded random `max_rows` subset, or None to keep every row."""
    if max_rows is None or max_rows >= count:
        return None
    rng = random.Random(f"{seed}:subset:{name}")
    return sorted(rng.sample(range(count), max_rows))


def load_source(spec: Source, seed: int, show_progress: bool = False) -> LoadedSource:
    """Read one source; with `max_rows`, keep a seeded random subset of that many rows."""
    if spec.hub is not None:
        dataset = _read_hub(spec)
        available = len(dataset)
        keep = _subset(available, spec.max_rows, seed, str(spec.name))
        if keep is not None:
            dataset = dataset.select(keep)
        numbers = range(1, available + 1) if keep is None else [i + 1 for i in keep]
        return LoadedSource(spec, list(dataset.column_names), dataset, numbers, available)
    columns, rows, numbers = _read_local(spec, show_progress)
    available = len(rows)
    keep = _subset(available, spec.max_rows, seed, str(spec.name))
    if keep is not None:
        rows = [rows[i] for i in keep]
        numbers = [numbers[i] for i in keep]
    return LoadedSource(spec, columns, rows, numbers, available)


def check_columns(loaded: LoadedSource) -> None:
    """Fail, naming the column and the columns that exist, when the mapping reads a column the source lacks; an
    empty source, or one with no readable row, says that instead (it has no columns to name)."""
    where = f"source '{loaded.spec.name}' ({loaded.spec.location})"
    if not loaded.rows_available:
        raise UserError(f"{where} is empty: it holds no rows")
    if not loaded.columns:
        bad = next(((n, r.reason) for n, r in loaded.iter_rows() if isinstance(r, BadRow)), None)
        unit = "line" if loaded.spec.format == "jsonl" else "row"
        first = f" ({unit} {bad[0]}: {bad[1]})" if bad else ""
        raise UserError(f"{where}: none of its {loaded.rows_available} rows has a column to read{first}")
    for key, column in loaded.spec.columns.named_columns().items():
        if column not in loaded.columns:
            have = ", ".join(loaded.columns) if loaded.columns else "none"
            raise UserError(
                f"source '{loaded.spec.name}' ({loaded.spec.location}): column '{column}' "
                f"(columns.{key}) not found; it has: {have}"
            )
