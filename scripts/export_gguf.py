"""Export a trained adapter or a merged model as GGUF files for llama.cpp and Ollama, with an Ollama Modelfile and a
model card. An adapter is merged into its base first. Needs the gguf extra: pip install -e ".[gguf]".

    python scripts/export_gguf.py --model-path RUN/final|MERGED_DIR --output DIR [--quant f16,q8_0,q4_k_m]
                                  [--overwrite] [--llama-cpp DIR] [--push-to-hub ORG/NAME [--public]]
"""

import argparse
import sys

from eeve_sft.errors import one_line_usage_errors, run_cli


def main(argv: list[str]) -> None:
    from eeve_sft.inference.gguf import DEFAULT_QUANTS, QUANT_TYPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-path", required=True, help="an adapter (RUN/final, RUN/checkpoint-N) or a model folder"
    )
    parser.add_argument("--output", required=True, help="directory for the GGUF files (must not exist or be empty)")
    parser.add_argument(
        "--quant",
        default=",".join(DEFAULT_QUANTS),
        help=f"comma-separated types, the first is the Modelfile's (default %(default)s; any of {', '.join(QUANT_TYPES)})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument(
        "--llama-cpp",
        metavar="DIR",
        help="a llama.cpp source folder to take convert_hf_to_gguf.py (and build/bin/llama-quantize) from "
        "(default: LLAMA_CPP_DIR, else the pinned release unpacked into ~/.cache/eeve-sft)",
    )
    parser.add_argument("--merge-dtype", default="bfloat16", help="dtype an adapter is merged in (default bfloat16)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the GGUF folder to this Hub repo")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    args = one_line_usage_errors(parser).parse_args(argv)
    from eeve_sft.inference.gguf import export_gguf, push_gguf

    export = export_gguf(
        args.model_path,
        args.output,
        args.quant,
        overwrite=args.overwrite,
        llama_cpp_dir=args.llama_cpp,
        merge_dtype=args.merge_dtype,
    )
    for quant, name in export.files.items():
        print(f"{quant}: {export.output / name} ({export.sizes[quant] / 2**20:,.1f} MiB)")
    print(f"Ollama: ollama create NAME -f {export.output / 'Modelfile'}")
    if args.push_to_hub:
        print(f"pushed to {push_gguf(export, args.push_to_hub, private=not args.public)}")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
