"""Label or rewrite the speech level (존댓말 / 반말) of JSON lines.

    python data_prep/speech_level.py classify < turns.jsonl > labelled.jsonl
    python data_prep/speech_level.py convert --to banmal < questions.jsonl > banmal.jsonl

Each input line is an object with a string "text"; it is written back with "label" (classify) or
"converted" (convert) added, in input order. A bad line is written back with an "error" field instead
(invalid JSON or a non-object becomes {"line": N, "error": ...}); the rest is still processed, the exit
status stays 0 and the number of bad lines is reported on stderr. Blank lines are skipped.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

from eeve_sft import speech_level


def parse(number: int, line: str) -> tuple[dict, str | None]:
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


def run(texts: list[str], args: argparse.Namespace) -> list[str]:
    if args.command == "classify":
        return speech_level.classify_batch(texts, batch_size=args.batch_size)
    return (speech_level.to_banmal_batch if args.to == "banmal" else speech_level.to_polite_batch)(texts)


def process(batch: list[tuple[dict, str | None]], args: argparse.Namespace) -> int:
    """Write one batch back in order; returns how many lines failed inside the analysis itself."""
    field = "label" if args.command == "classify" else "converted"
    texts = [text for _, text in batch if text is not None]
    try:
        answers: list[tuple[str, str]] = [(field, result) for result in run(texts, args)]
    except Exception:  # one text the analyser cannot take must not lose the batch: redo it line by line
        answers = []
        for one in texts:
            try:
                answers.append((field, run([one], args)[0]))
            except Exception as err:
                answers.append(("error", " ".join(f"{type(err).__name__}: {err}".split())))
    pending = iter(answers)
    for row, text in batch:
        if text is not None:
            key, value = next(pending)
            row = {**row, key: value}
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return sum(key == "error" for key, _ in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--batch-size", type=int, default=1024, help="lines analysed together (default 1024)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("classify", parents=[common], help='add "label": polite, banmal, mixed or neutral')
    convert = commands.add_parser(
        "convert", parents=[common], help='add "converted": the text rewritten to another speech level'
    )
    convert.add_argument("--to", choices=("banmal", "polite"), required=True, help="target speech level")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    for stream in (sys.stdin, sys.stdout):  # UTF-8 whatever the locale says
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(encoding="utf-8", errors="replace" if stream is sys.stdin else "strict")
    batch: list[tuple[dict, str | None]] = []
    bad = total = 0
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        batch.append(parse(number, line))
        total += 1
        bad += batch[-1][1] is None
        if len(batch) >= args.batch_size:
            bad += process(batch, args)
            batch = []
    if batch:
        bad += process(batch, args)
    if bad:
        print(f'speech_level: {bad} of {total} lines had errors (see their "error" field)', file=sys.stderr)


if __name__ == "__main__":
    main()
