"""Search an index built by data_prep/index_docs.py.

    python data_prep/retrieve.py data/wms_index --query "냉장 상품은 몇 번 도크로 받아?"
    echo '{"query": "비밀번호 규칙"}' | python data_prep/retrieve.py data/wms_index --json --top-k 3

Without --query, queries are read as JSON Lines ({"query": ...}) from stdin. With --json, one object per query:
{"query", "mode", "results": [{"rank", "score", "source", "headings", "start", "end", "text"}]}.
--mode defaults to hybrid (reciprocal rank fusion) when the index has a dense part, else bm25.
"""

from __future__ import annotations

import argparse
import json
import sys

from eeve_sft.errors import UserError, one_line_usage_errors, run_cli
from eeve_sft.retrieval.index import MODES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index_dir")
    parser.add_argument("--query", help='one query (default: JSON Lines {"query": ...} on stdin)')
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--mode", choices=MODES, help="bm25, dense or hybrid (default: hybrid when possible)")
    parser.add_argument("--embedding-model", help="must be the model the index was built with (checked)")
    parser.add_argument("--json", action="store_true", help="one JSON object per query")

    return one_line_usage_errors(parser).parse_args(argv)


def read_queries(lines) -> list[str]:
    queries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f'stdin line {number} is not JSON; expected {{"query": "..."}}') from None
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip():
            raise UserError(f"stdin line {number} has no non-empty string 'query'")
        queries.append(row["query"])
    if not queries:
        raise UserError('no query: give --query TEXT or JSON Lines {"query": ...} on stdin')
    return queries


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.query is not None and not args.query.strip():
        raise UserError("--query is empty")
    queries = [args.query] if args.query is not None else read_queries(sys.stdin)
    from eeve_sft.retrieval import RetrievalIndex

    index = RetrievalIndex(args.index_dir, embedding_model=args.embedding_model)
    mode = args.mode or index.default_mode()
    for query, hits in zip(queries, index.search_batch(queries, args.top_k, mode), strict=True):
        if args.json:
            print(
                json.dumps({"query": query, "mode": mode, "results": [h.as_result() for h in hits]}, ensure_ascii=False)
            )
            continue
        print(f"query: {query}  ({mode})")
        for hit in hits or []:
            where = " > ".join(hit.chunk.headings)
            print(f"  {hit.rank}. [{hit.score:.4f}] {hit.chunk.source}" + (f" · {where}" if where else ""))
            print("     " + " ".join(hit.chunk.text.split())[:200])
        if not hits:
            print("  (no chunk shares a word with this query)")


if __name__ == "__main__":
    run_cli(main)
