"""Retrieval: quality on the shipped WMS questions, and indexing/query speed on 10,000 synthetic manual pages.

    python -m benchmarks.bench_retrieval                              # BM25, recorded (see below)
    python -m benchmarks.bench_retrieval --embedding-model PATH       # also dense and hybrid quality
    python -m benchmarks.bench_retrieval --embedding-model PATH --model-label "English all-MiniLM-L6-v2"
    python -m benchmarks.bench_retrieval --pages 1000 --no-record

Quality: data/wms_docs indexed in paragraph chunks (the default --chunk-chars), recall@1/3/5 and MRR of the
53 questions in eval/wms_questions.jsonl (bar for BM25: recall@1 >= 0.9, recall@5 = 1.0). Speed: `--pages`
synthetic Markdown pages of warehouse-manual text (headings, paragraphs of 5-8 sentences, ~1,300 characters, with item codes and
quantities so that many words are distinct)
indexed with BM25 (bar: under 300 s for 10,000 pages on 2 cores), then `--queries` queries timed one by one
(bar: under 50 ms per query). A recorded run writes `benchmarks/results/retrieval/<date>_cpu/retrieval.json` and
renders the newest result into its block of RESULTS.md (`python -m benchmarks.render_results --write` does that for
every block).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    RESULTS_MD,
    RESULTS_ROOT,
    machine,
    newest_result,
    versions,
    write_block,
    write_result,
)
from eeve_sft.retrieval import RetrievalIndex, build_index
from eeve_sft.retrieval.chunking import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP
from eeve_sft.retrieval.evaluate import evaluate, load_questions

BEGIN = "<!-- bench_retrieval: begin -->"
END = "<!-- bench_retrieval: end -->"
INDEX_LIMIT_S, QUERY_LIMIT_MS = 300.0, 50.0

PLACES = [
    "입고",
    "도크",
    "출고",
    "도크",
    "냉장",
    "구역",
    "냉동",
    "구역",
    "보관",
    "랙",
    "반품",
    "선반",
    "포장대",
    "검수대",
    "분류대",
    "컨베이어",
    "피킹",
    "구역",
    "예외",
    "구역",
]
OBJECTS = ("팔레트", "토트", "박스", "운송장", "바코드", "로케이션", "재고", "주문", "웨이브", "단말기", "라벨", "전표")
ROLES = (
    "작업자",
    "반장",
    "관리자",
    "검수자",
    "센터장",
    "재고 담당자",
    "출고 담당자",
    "구매팀",
    "품질팀",
    "보안 담당자",
)
ACTIONS = ("확인", "등록", "스캔", "승인", "이동", "보류", "출력", "기록", "점검", "배정", "조정", "정리")
SENTENCES = (
    "{role}는 {place}에서 {obj}를 {action}합니다.",
    "{obj} {action}은 {n}분 안에 끝내야 하며, 늦어지면 {role}에게 알림이 갑니다.",
    "{place}의 {obj}는 하루 {n}번 {role}가 {action}해야 합니다.",
    "{obj}가 {n}개를 넘으면 {role}의 {action}이 필요합니다.",
    "{role}는 {obj} {action} 결과를 [{place}] 화면에 {action}합니다.",
    "{place}에서는 {obj}를 {n}단 이상 쌓지 않는 것이 원칙입니다.",
    "{obj} 번호가 {n}{n}{n}으로 시작하면 {place}로 보냅니다.",
    "품목 {sku}의 {obj}는 {month}월 {day}일까지 {place}에서 {action}합니다.",
    "{sku} 품목이 {qty}개보다 적으면 {role}가 {obj} {action}을 요청합니다.",
)


def page(rng: random.Random, number: int) -> str:
    """One synthetic manual page: a title, three sections of two paragraphs each."""

    def sentence() -> str:
        return rng.choice(SENTENCES).format(
            role=rng.choice(ROLES),
            place=rng.choice(PLACES),
            obj=rng.choice(OBJECTS),
            action=rng.choice(ACTIONS),
            n=rng.randint(2, 9),
            sku=f"SKU-{rng.randint(10000, 99999)}",
            qty=rng.randint(10, 5000),
            month=rng.randint(1, 12),
            day=rng.randint(1, 28),
        )

    parts = [f"# {rng.choice(PLACES)} {rng.choice(OBJECTS)} 운영 지침 {number}"]
    for _ in range(3):
        parts.append(f"## {rng.choice(OBJECTS)} {rng.choice(ACTIONS)}")
        for _ in range(2):
            parts.append(" ".join(sentence() for _ in range(rng.randint(5, 8))))
    return "\n\n".join(parts) + "\n"


def write_pages(folder: Path, pages: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    total = 0
    distinct: set[str] = set()
    for i in range(pages):
        text = page(rng, i)
        total += len(text)
        distinct.update(text.split())
        sub = folder / f"part{i // 1000:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"page{i:05d}.md").write_text(text, encoding="utf-8")
    return total, len(distinct)


def quality(embedding_model: str | None, work: Path) -> list[dict]:
    out = work / "wms_index"
    build_index(
        REPO / "data" / "wms_docs",
        out,
        chunk_chars=DEFAULT_CHUNK_CHARS,
        overlap=DEFAULT_OVERLAP,
        embedding_model=embedding_model,
    )
    index = RetrievalIndex(out)
    questions = load_questions(REPO / "eval" / "wms_questions.jsonl")
    modes = ("bm25", "dense", "hybrid") if embedding_model else ("bm25",)
    return [evaluate(index, questions, mode) for mode in modes]


def speed(pages: int, queries: int, seed: int, work: Path) -> dict:
    docs = work / "pages"
    docs.mkdir()
    chars, words = write_pages(docs, pages, seed)
    start = time.perf_counter()
    report = build_index(docs, work / "pages_index", chunk_chars=DEFAULT_CHUNK_CHARS, overlap=DEFAULT_OVERLAP)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    index = RetrievalIndex(work / "pages_index")
    load_s = time.perf_counter() - start
    rng = random.Random(seed + 1)
    texts = [f"{rng.choice(PLACES)}에서 {rng.choice(OBJECTS)} {rng.choice(ACTIONS)}은 누가 해?" for _ in range(queries)]
    times = []
    for text in texts:  # one at a time, as chat --rag asks
        start = time.perf_counter()
        index.search(text, 5, "bm25")
        times.append((time.perf_counter() - start) * 1000)
    return {
        "pages": pages,
        "chars": chars,
        "words": words,
        "chunks": report.chunks,
        "index_s": index_s,
        "load_s": load_s,
        "query_ms_mean": statistics.fmean(times),
        "query_ms_p95": sorted(times)[int(0.95 * len(times)) - 1],
        "queries": queries,
    }


def package_versions(dense: bool) -> str:
    names = ("kiwipiepy", "kiwipiepy-model", "bm25s", "numpy", "scipy", "pypdf", "beautifulsoup4", "markdown-it-py")
    return versions(names + (("sentence-transformers", "faiss-cpu", "torch", "transformers") if dense else ()))


def document(rows: list[dict], sp: dict, embedding_model: str | None) -> dict:
    """What one run measured, as its result file keeps it."""
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "packages": package_versions(embedding_model is not None),
        "chunk_chars": DEFAULT_CHUNK_CHARS,
        "embedding_model": embedding_model,
        "quality": rows,
        "speed": sp,
        "bars": {"index_s": INDEX_LIMIT_S, "query_ms": QUERY_LIMIT_MS},
    }


def render(doc: dict) -> str:
    """The RESULTS.md section of one result file."""
    rows, sp, bars, embedding_model = doc["quality"], doc["speed"], doc["bars"], doc["embedding_model"]
    bm25 = rows[0]
    quality_pass = bm25["recall@1"] >= 0.9 and bm25["recall@5"] == 1.0
    lines = [
        "## Retrieval (`benchmarks/bench_retrieval.py`)",
        "",
        f"- Date: {doc['date']}",
        f"- Machine: {doc['machine']}",
        f"- Packages: {doc['packages']}",
        f"- Quality: data/wms_docs (8 documents) in paragraph chunks (--chunk-chars {doc['chunk_chars']}), "
        f"{bm25['questions']} questions of eval/wms_questions.jsonl; bar for BM25 recall@1 >= 0.9 and "
        f"recall@5 = 1.0: {'pass' if quality_pass else 'FAIL'}"
        + (f"; dense model: {embedding_model}" if embedding_model else "; no embedding model given (BM25 only)"),
        "",
        "| mode | recall@1 | recall@3 | recall@5 | MRR |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['mode']} | {r['recall@1']:.3f} | {r['recall@3']:.3f} | {r['recall@5']:.3f} | {r['mrr']:.3f} |"
        for r in rows
    ]
    lines += [
        "",
        f"BM25 misses at rank 1: {'; '.join(bm25['missed_at_1']) or 'none'}.",
        "",
        (
            f"- Speed: {sp['pages']:,} synthetic pages ({sp['chars'] / 1e6:.1f} M characters, {sp['words']:,} distinct "
            f"words) -> {sp['chunks']:,} chunks"
        ),
        (
            f"- **BM25 indexing: {sp['index_s']:.1f} s** (bar {bars['index_s']:.0f} s: "
            f"{'pass' if sp['index_s'] < bars['index_s'] else 'FAIL'}); loading the index: {sp['load_s']:.2f} s"
        ),
        (
            f"- **Query: {sp['query_ms_mean']:.1f} ms mean, {sp['query_ms_p95']:.1f} ms p95** over {sp['queries']} queries "
            f"(top 5, one at a time; bar {bars['query_ms']:.0f} ms: "
            f"{'pass' if sp['query_ms_mean'] < bars['query_ms'] else 'FAIL'})"
        ),
    ]
    return "\n".join(lines)


def generated_block(root: Path = RESULTS_ROOT / "retrieval") -> str:
    """The RESULTS.md block of the newest result under `root` (`<date>_<device>/retrieval.json`)."""
    path = newest_result(root, "retrieval.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return f"{BEGIN}\n{render(doc)}\n\nRaw results: `{path.relative_to(REPO)}`.\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedding-model", help="sentence-transformers model for dense and hybrid quality")
    parser.add_argument("--model-label", help="how RESULTS.md names the model (default: --embedding-model as given)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_retrieval-") as tmp:
        work = Path(tmp)
        rows = quality(args.embedding_model, work)
        sp = speed(args.pages, args.queries, args.seed, work)
    doc = document(rows, sp, args.embedding_model and (args.model_label or f"`{args.embedding_model}`"))
    print(render(doc))
    if not args.no_record:
        out = write_result(RESULTS_ROOT / "retrieval" / f"{doc['date']}_cpu" / "retrieval.json", doc)
        write_block(generated_block(), BEGIN, END)
        print(f"recorded in {out.relative_to(REPO)} and {RESULTS_MD.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
