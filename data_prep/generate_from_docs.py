"""Generate 반말-question / 존댓말-answer training rows grounded in an index of your documents.

    python data_prep/generate_from_docs.py data/wms_index --model-path outputs/eeve_banmal/final --output data/wms_domain
    python data_prep/generate_from_docs.py INDEX_DIR --model-path PATH --output OUT_DIR \\
        [--questions-per-chunk N] [--limit N] [--banmal-share 0.5] [--config docgen.yaml] [--batch-size N]

    python data_prep/generate_from_docs.py data/wms_index --pairs data/wms_pairs.jsonl --output data/wms_domain_local

PATH is a base model, an adapter or a merged model (as for scripts/chat.py). With --pairs FILE instead, no model
runs: each written {"question", "answer"} pair gets its passages retrieved from the index and goes through the
same answer filters and 반말 rewrite as generated rows. Writes train.jsonl ({"messages", "sources"}), stats.json
and data_card.md; OUT_DIR works as a `path:` source of a mix file (`data_prep/mixes/wms_domain.yaml`) or
directly as a recipe's dataset_name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eeve_sft.errors import UserError, one_line_usage_errors, run_cli
from eeve_sft.hub import check_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index_dir", help="index folder written by data_prep/index_docs.py")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-path", help="base model, adapter or merged model that writes questions and answers")
    source.add_argument(
        "--pairs",
        metavar="FILE",
        help='written question/answer pairs, JSON Lines {"question": ..., "answer": ...}, instead of a model',
    )
    parser.add_argument("--output", required=True, help="output folder (train.jsonl, stats.json, data_card.md)")
    parser.add_argument(
        "--questions-per-chunk",
        type=int,
        help="questions the model writes about each chunk, each then answered from retrieved passages (default 2)",
    )
    parser.add_argument("--limit", type=int, help="use only the first N chunks")
    parser.add_argument("--banmal-share", type=float, help="share of questions rewritten into 반말 (default 0.5)")
    parser.add_argument("--top-k", type=int, help="passages retrieved per question (default 3)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="prompts generated together (default: automatic, as many as free GPU memory holds; 8 on a CPU)",
    )
    parser.add_argument("--config", help="YAML file of generation settings (eeve_sft.data_prep.docgen.DocGenConfig)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    return one_line_usage_errors(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.model_path:  # written pairs (--pairs) need no model
        check_model(args.model_path)  # before the heavy imports: a mistyped path fails at once
    from eeve_sft.data_prep.docgen import generate_from_docs, load_config, load_pairs, model_generator
    from eeve_sft.inference.loading import load_for_inference
    from eeve_sft.output_dir import check_output_dir
    from eeve_sft.retrieval import RetrievalIndex

    config = load_config(
        args.config,
        questions_per_chunk=args.questions_per_chunk,
        banmal_share=args.banmal_share,
        top_k=args.top_k,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    check_output_dir(Path(args.output), args.overwrite)
    index = RetrievalIndex(args.index_dir)
    pairs = load_pairs(args.pairs) if args.pairs else None
    generate = None
    if pairs is None:
        model, tokenizer = load_for_inference(args.model_path, load_in_4bit=args.load_in_4bit, device=args.device)
        generate = model_generator(model, tokenizer, config.batch_size)
    elif args.limit is not None:
        raise UserError("--limit picks chunks for a model to read; it does not apply to --pairs")
    result = generate_from_docs(
        index,
        generate,
        config,
        args.output,
        limit=args.limit,
        model_name=args.model_path or f"none: written pairs from {args.pairs}",
        overwrite=args.overwrite,
        pairs=pairs,
    )
    counts = result.stats["counts"]
    origin = f"{counts['written_pairs']} written pairs" if pairs is not None else f"{counts['chunks']} chunks"
    print(
        f"wrote {counts['rows']} rows ({counts['banmal_questions']} with 반말 questions) from {origin} to {result.output_dir}"
    )


if __name__ == "__main__":
    run_cli(main)
