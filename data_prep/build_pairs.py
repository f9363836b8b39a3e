"""Build preference pairs (존댓말 chosen, 반말 rejected) for DPO: train.jsonl, eval.jsonl, stats.json, data_card.md.

    python data_prep/build_pairs.py data/banmal_100k --output data/banmal_pairs
    python data_prep/build_pairs.py data/demo --output data/demo_pairs --limit 100
    python data_prep/build_pairs.py data/banmal_100k --from-eval outputs/eeve_banmal/eval --output data/pairs_onpolicy
    python data_prep/build_pairs.py --generate outputs/eeve_banmal/final --prompts my_prompts.jsonl --output DIR

SOURCE is a chat dataset (the folder data_prep/build_dataset.py writes, or a {"messages": ...} JSONL file): each
conversation's last answer is the chosen side and the converter's 반말 rewrite of it the rejected side. --from-eval
and --generate add answers a trained model really gave that the classifier labels 반말 or mixed, as rejected
sides. Any mistake is one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse

from eeve_sft.errors import one_line_usage_errors, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="chat dataset: a data build folder or a .jsonl file")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--from-eval", metavar="EVAL_DIR", help="answers saved by scripts/evaluate.py (its eval/)")
    parser.add_argument("--generate", metavar="MODEL", help="answer --prompts with this adapter or model now")
    parser.add_argument("--prompts", metavar="FILE", help="prompts for --generate (JSONL or .txt, as evaluate.py)")
    parser.add_argument("--batch-size", default="auto", help="prompts per generation batch, or auto")
    parser.add_argument("--limit", type=int, help="use only the first N rows of each input")
    parser.add_argument(
        "--eval-fraction", type=float, default=0.1, help="share of a single file's prompts held out (default 0.1)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the hold-out (default 42)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    return one_line_usage_errors(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from eeve_sft.data_prep.pairs import PairsRequest, build_pairs

    batch = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    request = PairsRequest(
        args.source, args.from_eval, args.generate, args.prompts, args.limit, args.eval_fraction, args.seed, batch
    )
    stats = build_pairs(request, args.output, overwrite=args.overwrite)
    out, dropped = stats["output"], sum(stats["dropped"].values())
    print(
        f"wrote {out['train']} train and {out['eval']} eval pairs to {args.output} ({dropped} dropped, see data_card.md)"
    )


if __name__ == "__main__":
    run_cli(main)
