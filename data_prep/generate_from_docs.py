"""Generate 반말-question / 존댓말-answer training rows grounded in an index of your documents.

    python data_prep/generate_from_docs.py data/wms_index --model-path outputs/eeve_banmal/final --output data/wms_domain
    python data_prep/generate_from_docs.py INDEX_DIR --model-path PATH --output OUT_DIR \\
        [--questions-per-chunk N] [--limit N] [--banmal-share 0.5] [--config docgen.yaml] [--batch-size N]

PATH is a base model, an adapter or a merged model (as for scripts/chat.py). Writes train.jsonl
({"messages", "sources"}), stats.json and data_card.md; OUT_DIR works as a `path:` source of a mix file
(`data_prep/mixes/wms_domain.yaml`) or directly as a recipe's dataset_name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eeve_sft.errors import one_line_usage_errors, run_cli
from eeve_sft.hub import check_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index_dir", help="index folder written by data_prep/index_docs.py")
    parser.add_argument("--model-path", required=True, help="base model, adapter or merged model")
    parser.add_argument("--output", required=True, help="output folder (train.jsonl, stats.json, data_card.md)")
    parser.add_argument("--questions-per-chunk", type=int)
    parser.add_argument("--limit", type=int, help="use only the first N chunks")
    parser.add_argument("--banmal-share", type=float, help="share of questions rewritten into 반말 (default 0.5)")
    parser.add_argument("--top-k", type=int, help="passages retrieved per question (default 3)")
    parser.add_argument(
        "--batch-size", type=int, help="generation batch size (default: automatic, from free GPU memory)"
    )
    parser.add_argument("--config", help="YAML file of generation settings (eeve_sft.data_prep.docgen.DocGenConfig)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    return one_line_usage_errors(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_model(args.model_path)  # before the heavy imports: a mistyped path fails at once
    from eeve_sft.data_prep.docgen import generate_from_docs, load_config, model_generator
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
    model, tokenizer = load_for_inference(args.model_path, load_in_4bit=args.load_in_4bit, device=args.device)
    result = generate_from_docs(
        index,
        model_generator(model, tokenizer, config.batch_size),
        config,
        args.output,
        limit=args.limit,
        model_name=args.model_path,
        overwrite=args.overwrite,
    )
    counts = result.stats["counts"]
    print(
        f"wrote {counts['rows']} rows ({counts['banmal_questions']} with 반말 questions) from {counts['chunks']} "
        f"chunks to {result.output_dir}"
    )
    if not counts["rows"]:
        print(
            "warning: no generated row passed the filters; see stats.json and data_card.md for the reasons",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run_cli(main)
