"""Build a training set from a mix file: train.jsonl, eval.jsonl, stats.json and data_card.md.

    python data_prep/build_dataset.py data_prep/mixes/banmal_100k.yaml            # into data/banmal_100k
    python data_prep/build_dataset.py MIX.yaml --output data/my_mix --overwrite

Any mistake in the mix file or the sources is one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eeve_sft.errors import one_line_usage_errors, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mix", help="mix file (YAML): sources, column mappings and stage settings")
    parser.add_argument("--output", help="output directory (default: data/<mix name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    return one_line_usage_errors(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from eeve_sft.data_prep import build_dataset, load_mix  # after argument parsing: --help stays fast

    mix = load_mix(args.mix)
    output = Path(args.output) if args.output else Path("data") / str(mix.name)
    result = build_dataset(mix, output, overwrite=args.overwrite, show_progress=not args.no_progress)
    out = result.stats["output"]
    print(f"wrote {out['train']} train and {out['eval']} eval rows to {result.output_dir}", file=sys.stdout)


if __name__ == "__main__":
    run_cli(main)
