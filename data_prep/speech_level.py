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
import sys

from eeve_sft import speech_level
from eeve_sft.errors import run_cli
from eeve_sft.speech_level.jsonl import annotate_lines


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
    if args.command == "classify":
        field, analyse = "label", lambda texts: speech_level.classify_batch(texts, batch_size=args.batch_size)
    else:
        field = "converted"
        analyse = speech_level.to_banmal_batch if args.to == "banmal" else speech_level.to_polite_batch
    bad, total = annotate_lines(sys.stdin, sys.stdout, analyse, field, args.batch_size)
    if bad:
        print(f'speech_level: {bad} of {total} lines had errors (see their "error" field)', file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
