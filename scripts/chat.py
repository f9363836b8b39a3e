"""Chat with EEVE: the base model, a LoRA adapter from a training run, or a merged model.

    python scripts/chat.py [--model-path PATH] [--load-in-4bit] [--prompt TEXT] [--rag INDEX_DIR [--rag-top-k K]]

PATH is OUTPUT_DIR/final, OUTPUT_DIR/checkpoint-N, a merged model directory, or a Hub id (default: the
base model yanolja/EEVE-Korean-Instruct-10.8B-v1.0). An adapter names its base model and carries the template.
Without --prompt it is an interactive multi-turn chat (/reset starts over, /exit quits); with --prompt it
prints one answer and exits. With --rag, every user turn is answered from the passages retrieved for it from
INDEX_DIR (data_prep/index_docs.py), laid out as in the rows of data_prep/generate_from_docs.py, and the sources
are printed under each answer.
"""

import argparse
import sys
from dataclasses import asdict

from eeve_sft.errors import UserError, run_cli
from eeve_sft.hub import check_model
from eeve_sft.inference.sampling import add_chat_sampling_flags, chat_sampling


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", help="adapter, merged model or Hub id (default: the EEVE base model)")
    parser.add_argument("--load-in-4bit", action="store_true", help="load the weights in NF4 (needs a CUDA GPU)")
    parser.add_argument("--prompt", help="answer this one message and exit")
    parser.add_argument("--system", help="system prompt (default: the one saved in the template)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    add_chat_sampling_flags(parser)
    parser.add_argument("--rag", metavar="INDEX_DIR", help="retrieve passages from this index for every user turn")
    parser.add_argument("--rag-top-k", type=int, default=3, help="passages retrieved per turn with --rag (default 3)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    sampling = chat_sampling(args)
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("--prompt is empty")
    if args.model_path:
        check_model(args.model_path)  # before the heavy imports: a mistyped path fails at once
    from eeve_sft.inference.answer import chat_loop, generate, warm_up_chat
    from eeve_sft.inference.loading import load_for_inference

    augment = None
    if args.rag:
        from eeve_sft.retrieval import RetrievalIndex
        from eeve_sft.retrieval.context import rag_augmenter

        if args.rag_top_k < 1:
            raise UserError(f"--rag-top-k must be at least 1, got {args.rag_top_k}")
        augment = rag_augmenter(RetrievalIndex(args.rag), args.rag_top_k)
    model, tokenizer = load_for_inference(args.model_path, load_in_4bit=args.load_in_4bit, device=args.device)
    system = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        content, sources = augment(args.prompt) if augment else (args.prompt, [])
        messages = [*system, {"role": "user", "content": content}]
        # One answer does not repay compiling the decoding step (about a minute): plain generate.
        print(generate(model, tokenizer, messages, fast=False, **asdict(sampling)))
        for source in sources:
            print(f"  출처 {source}")
        return
    warm_up_chat(model, tokenizer, sampling, system_prompt=args.system)  # compiles once; then every answer streams
    chat_loop(model, tokenizer, sampling, system_prompt=args.system, augment=augment)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
