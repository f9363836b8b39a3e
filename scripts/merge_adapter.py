"""Merge a LoRA adapter into its base model and save a standalone model (safetensors, tokenizer, template,
generation config, model card) ready for vLLM or TGI.

    python scripts/merge_adapter.py --model-path OUTPUT_DIR/final --output DIR [--dtype bfloat16]
                                    [--overwrite] [--push-to-hub ORG/NAME [--public]]
"""

import argparse
import sys

from eeve_sft.errors import run_cli
from eeve_sft.hub import check_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True, help="the adapter: OUTPUT_DIR/final or OUTPUT_DIR/checkpoint-N")
    parser.add_argument("--output", required=True, help="directory for the merged model (must be empty)")
    parser.add_argument("--dtype", default="bfloat16", help="weight dtype: bfloat16 (default), float16 or float32")
    parser.add_argument("--device", default="cpu", help="where to merge (default cpu; cuda is faster)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the merged model to this Hub repo")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    args = parser.parse_args(argv)
    check_model(args.model_path)  # before the heavy imports: a mistyped path fails at once
    from eeve_sft.inference.export import merge_adapter, push_to_hub

    output = merge_adapter(args.model_path, args.output, dtype=args.dtype, overwrite=args.overwrite, device=args.device)
    print(f"merged model saved to {output}")
    if args.push_to_hub:
        from eeve_sft.inference.loading import resolve_model_source

        source = resolve_model_source(args.model_path)
        url = push_to_hub(output, args.push_to_hub, source.path, source.base, private=not args.public)
        print(f"pushed to {url}")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
