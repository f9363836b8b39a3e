"""Compare training runs: recipe keys that differ, eval/train loss, throughput, memory, wall time, 존댓말 rate,
and loss curves against step and tokens seen.

    python scripts/compare.py RUN_DIR [RUN_DIR ...] [--output DIR]

Writes DIR/compare.md (with the plot embedded), DIR/loss_curves.png and DIR/compare.json.
"""

import argparse
import sys

from eeve_sft.errors import run_cli
from eeve_sft.evaluation.run_comparison import compare_runs


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training output directories")
    parser.add_argument("--output", default="outputs/compare", help="report directory (default outputs/compare)")
    args = parser.parse_args(argv)
    output = compare_runs(args.run_dirs, args.output)
    print(f"report written to {output / 'compare.md'}")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
