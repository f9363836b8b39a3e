"""JSON lines in, the same lines out with a speech-level result added: the engine of ``data_prep/speech_level.py``.

Each input line is an object with a string "text"; it is written back with the result under `field`, in
input order. A bad line is written back with an "error" field instead (invalid JSON or a non-object becomes
``{"line": N, "error": ...}``) and the rest is still processed. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TextIO

Analyse = Callable[[list[str]], list[str]]  # texts -> one result per text


def parse_line(number: int, line: str) -> tuple[dict, str | None]:
    """The object to write back and its text, or the object with its error and None."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return {"line": number, "error": f"invalid JSON: {err.msg} at column {err.colno}"}, None
    if not isinstance(row, dict):
        return {"line": number, "error": f"expected a JSON object, got {type(row).__name__}"}, None
    text = row.get("text")
    if not isinstance(text, str):
        got = "no such field" if "text" not in row else type(text).__name__
        return {**row, "error": f'field "text" must be a string ({got})'}, None
    return row, text


def _write_batch(batch: list[tuple[dict, str | None]], analyse: Analyse, field: str, out: TextIO) -> int:
    """Write one batch back in order; returns how many lines failed inside the analysis itself."""
    texts = [text for _, text in batch if text is not None]
    try:
        answers: list[tuple[str, str]] = [(field, result) for result in analyse(texts)]
    except Exception:  # one text the analyser cannot take must not lose the batch: redo it line by line
        answers = []
        for one in texts:
            try:
                answers.append((field, analyse([one])[0]))
            except Exception as err:
                answers.append(("error", " ".join(f"{type(err).__name__}: {err}".split())))
    pending = iter(answers)
    for row, text in batch:
        if text is not None:
            key, value = next(pending)
            row = {**row, key: value}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    return sum(key == "error" for key, _ in answers)


def annotate_lines(lines: Iterable[str], out: TextIO, analyse: Analyse, field: str, batch_size: int) -> tuple[int, int]:
    """Process every line (see the module doc); returns (lines with an error, lines read)."""
    batch: list[tuple[dict, str | None]] = []
    bad = total = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        batch.append(parse_line(number, line))
        total += 1
        bad += batch[-1][1] is None
        if len(batch) >= batch_size:
            bad += _write_batch(batch, analyse, field, out)
            batch = []
    if batch:
        bad += _write_batch(batch, analyse, field, out)
    return bad, total
