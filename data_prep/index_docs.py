"""Index a folder of documents (.txt, .md, .pdf, .html) for retrieval: chunks, BM25 over Kiwi morphemes, FAISS.

    python data_prep/index_docs.py data/wms_docs --output data/wms_index
    python data_prep/index_docs.py DOCS_DIR --output INDEX_DIR --chunk-chars 800 --overlap 100 --embedding-model BAAI/bge-m3

Files that cannot be read (unknown format, encrypted or broken PDF, not UTF-8) are skipped, counted and listed in
the manifest; a missing or empty folder is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from eeve_sft.errors import one_line_usage_errors, run_cli
from eeve_sft.hub import check_model
from eeve_sft.retrieval.chunking import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs_dir", help="folder of documents, read recursively")
    parser.add_argument("--output", required=True, help="index folder to write")
    parser.add_argument(
        "--chunk-chars",
        type=int,
        default=DEFAULT_CHUNK_CHARS,
        help=f"longest chunk in characters; longer paragraphs split on sentences (default {DEFAULT_CHUNK_CHARS})",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"characters of whole sentences shared by the pieces of a split paragraph (default {DEFAULT_OVERLAP})",
    )
    parser.add_argument("--embedding-model", help="sentence-transformers model id or folder for a dense FAISS index")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty index folder")

    return one_line_usage_errors(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.embedding_model:  # before the heavy imports: a mistyped path fails at once
        check_model(args.embedding_model, "embedding model", cached_file="modules.json")
    from eeve_sft.retrieval import build_index

    report = build_index(
        args.docs_dir,
        args.output,
        chunk_chars=args.chunk_chars,
        overlap=args.overlap,
        embedding_model=args.embedding_model,
        overwrite=args.overwrite,
    )
    for skipped in report.skipped:
        print(f"skipped {skipped.path}: {skipped.detail}", file=sys.stderr)
    dense = f", dense index with {args.embedding_model}" if args.embedding_model else ""
    print(
        f"indexed {report.chunks} chunks from {report.documents} documents into {report.index_dir}{dense}; "
        f"{len(report.skipped)} file(s) skipped"
    )


if __name__ == "__main__":
    run_cli(main)
