"""Retrieval over documents: reading every format, chunking, BM25 over Kiwi morphemes, FAISS, fusion, the index
folder (deterministic, manifest), the shared context layout, chat --rag, and every bad input as one line."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eeve_sft.errors import UserError
from eeve_sft.retrieval import RetrievalIndex, build_index, format_context
from eeve_sft.retrieval.chunking import chunk_documents
from eeve_sft.retrieval.context import rag_augmenter, sources_of
from eeve_sft.retrieval.documents import load_documents
from eeve_sft.retrieval.evaluate import evaluate, load_questions
from eeve_sft.retrieval.index import reciprocal_rank_fusion
from eeve_sft.retrieval.lexical import analyze
from helpers import DEMO_MODEL, REPO, run_script

DOCS = REPO / "data" / "wms_docs"
QUESTIONS = REPO / "eval" / "wms_questions.jsonl"


def make_tiny_embedder(path: Path) -> Path:
    """A sentence-transformers model made here: random static token embeddings over the demo tokenizer."""
    import tokenizers
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    torch.manual_seed(0)
    tokenizer = tokenizers.Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json"))
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=32)], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory) -> Path:
    return make_tiny_embedder(tmp_path_factory.mktemp("emb") / "tiny-static")


@pytest.fixture(scope="module")
def wms_index(tmp_path_factory) -> RetrievalIndex:
    out = tmp_path_factory.mktemp("idx") / "wms"
    build_index(DOCS, out, chunk_chars=800, overlap=100)
    return RetrievalIndex(out)


def test_every_format_is_read_with_headings_and_offsets():
    documents, skipped = load_documents(DOCS)
    assert skipped == []
    assert sorted(d.path for d in documents) == [
        "accounts.txt",
        "inbound.md",
        "inventory_count.md",
        "picking.md",
        "putaway.md",
        "returns.html",
        "safety.pdf",
        "shipping.md",
    ]
    chunks = chunk_documents(documents, 800, 100)
    by_source = {d.path: d for d in documents}
    for chunk in chunks:
        assert by_source[chunk.source].text[chunk.start : chunk.end] == chunk.text
    pdf = [c for c in chunks if c.source == "safety.pdf"]
    assert pdf[0].headings == ("안전 수칙",)  # from the PDF's bookmarks
    assert any(c.headings == ("안전 수칙", "지게차 운행") and "시속 10km" in c.text for c in pdf)
    html = [c for c in chunks if c.source == "returns.html"]
    assert all("console.log" not in c.text and "목차" not in c.text for c in html)  # script and nav left out
    assert any(c.headings == ("반품 처리", "상태 검사") and c.text.startswith("- A등급") for c in html)
    txt = [c for c in chunks if c.source == "accounts.txt"]
    assert any(c.headings == ("계정과 권한 관리", "비밀번호와 로그인") for c in txt)


def test_long_paragraph_splits_on_sentences_with_overlap(tmp_path):
    sentences = [f"{i}번 구역의 적치 작업은 오전 {i}시에 시작하고 반장이 확인합니다." for i in range(1, 13)]
    (tmp_path / "long.md").write_text("# 긴 문단\n\n" + " ".join(sentences) + "\n", encoding="utf-8")
    documents, _ = load_documents(tmp_path)
    chunks = chunk_documents(documents, 120, 40)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk.text) <= 120
        assert chunk.text.endswith("확인합니다.")  # whole sentences only
        assert chunk.headings == ("긴 문단",)
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # consecutive pieces share the last sentence
        assert before.text.endswith(documents[0].text[after.start : before.end])
    assert chunks[-1].text.endswith(sentences[-1])


def test_compound_nouns_match_however_kiwi_splits_them():
    # Kiwi keeps 비밀번호 whole in one sentence and splits it (비밀 + 번호) in the other.
    assert "비밀번호" in analyze("비밀번호 규칙이 뭐야?")
    assert "비밀번호" in analyze("비밀번호는 10자 이상이어야 합니다.")
    assert "하" not in analyze("등록해야 합니다")  # light verbs are not terms


def test_bm25_meets_the_recall_bar_on_the_shipped_questions(wms_index):
    questions = load_questions(QUESTIONS)
    assert len(questions) >= 40
    report = evaluate(wms_index, questions, "bm25")
    assert report["recall@1"] >= 0.9, report
    assert report["recall@5"] == 1.0, report


def test_a_malformed_question_line_is_named_by_its_line(tmp_path):
    path = tmp_path / "questions.jsonl"
    row = {"query": "도크는?", "source": "inbound.md", "passage": "5번 도크"}
    path.write_text(f"{json.dumps(row, ensure_ascii=False)}\n\n{{oops\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"questions.jsonl line 3: not valid JSON"):
        load_questions(path)


def test_index_is_byte_identical_when_rebuilt(tmp_path, tiny_embedder):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        build_index(DOCS, out, chunk_chars=800, overlap=100, embedding_model=str(tiny_embedder))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {"manifest.json", "chunks.jsonl", "dense.faiss"} <= {str(f) for f in files}
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    manifest = json.loads((a / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["chunk_chars"] == 800 and manifest["settings"]["overlap"] == 100
    assert manifest["embedding"]["dim"] == 32
    assert {"bm25s", "kiwipiepy", "faiss-cpu", "sentence-transformers"} <= set(manifest["versions"])
    import hashlib

    sha = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert sha["safety.pdf"] == hashlib.sha256((DOCS / "safety.pdf").read_bytes()).hexdigest()
    assert sum(f["chunks"] for f in manifest["files"]) == manifest["counts"]["chunks"]


def test_dense_and_hybrid_search_with_a_tiny_model(tmp_path, tiny_embedder):
    out = tmp_path / "idx"
    build_index(DOCS, out, chunk_chars=800, overlap=100, embedding_model=str(tiny_embedder))
    index = RetrievalIndex(out, embedding_model=str(tiny_embedder))
    assert index.default_mode() == "hybrid"
    query = "냉장 상품은 몇 번 도크로 받아?"
    dense = index.search(query, 5, "dense")
    assert [h.rank for h in dense] == [1, 2, 3, 4, 5]
    assert all(-1.0001 <= h.score <= 1.0001 for h in dense) and dense[0].score >= dense[-1].score
    bm25 = index.search(query, 5, "bm25")
    hybrid = index.search(query, 5, "hybrid")
    fused = reciprocal_rank_fusion(
        [[h.chunk.id for h in index.search(query, 50, "bm25")], [h.chunk.id for h in index.search(query, 50, "dense")]]
    )
    assert [h.chunk.id for h in hybrid] == [c for c, _ in fused[:5]]
    assert "5번과 6번 도크" in bm25[0].chunk.text
    report = evaluate(index, load_questions(QUESTIONS), "hybrid")
    assert report["recall@5"] >= 0.9  # fusing with a random model must not wreck BM25's ranking


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]])
    assert [c for c, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_query_with_another_embedding_model_is_refused(tmp_path, tiny_embedder):
    out = tmp_path / "idx"
    build_index(DOCS, out, chunk_chars=800, overlap=100, embedding_model=str(tiny_embedder))
    other = make_tiny_embedder(tmp_path / "other-model")
    with pytest.raises(UserError, match="was built with embedding model .*not .*other-model"):
        RetrievalIndex(out, embedding_model=str(other))
    result = run_script(
        sys.executable, "data_prep/retrieve.py", str(out), "--query", "반품", "--embedding-model", str(other)
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "was built with embedding model" in errors[0]


def test_bm25_index_refuses_dense_mode(wms_index):
    with pytest.raises(UserError, match="needs a dense index"):
        wms_index.search("반품", 3, "dense")


def test_bad_files_are_skipped_and_counted_not_fatal(tmp_path):
    from pypdf import PdfWriter

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCS / "picking.md", docs / "picking.md")
    shutil.copy(DOCS / "safety.pdf", docs / "safety.pdf")
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    with open(docs / "locked.pdf", "wb") as handle:
        writer.write(handle)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a pdf body")
    (docs / "table.xlsx").write_bytes(b"PK\x03\x04")
    (docs / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    result = run_script(sys.executable, "data_prep/index_docs.py", str(docs), "--output", str(tmp_path / "idx"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "from 2 documents" in result.stdout and "4 file(s) skipped" in result.stdout
    for name in ("locked.pdf", "broken.pdf", "table.xlsx", "latin1.txt"):
        assert f"skipped {name}:" in result.stderr
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text(encoding="utf-8"))
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {
        "locked.pdf": "encrypted_pdf",
        "broken.pdf": "unreadable",
        "table.xlsx": "unknown_format",
        "latin1.txt": "not_utf8",
    }
    assert manifest["counts"] == {"files": 6, "documents": 2, "skipped": 4, "chunks": manifest["counts"]["chunks"]}


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "documents folder not found"),
        (lambda d: d.mkdir(), "holds no files"),
        (lambda d: (d.mkdir(), (d / "a.docx").write_bytes(b"x")), "no readable document"),
    ],
)
def test_unusable_docs_folder_is_one_line_and_exit_2(tmp_path, setup, message):
    docs = tmp_path / "docs"
    setup(docs)
    result = run_script(sys.executable, "data_prep/index_docs.py", str(docs), "--output", str(tmp_path / "idx"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "idx").exists()


def test_retrieve_cli_json_and_stdin(tmp_path, wms_index):
    queries = '{"query": "택배 상차 마감은 몇 시야?"}\n{"query": "계정이 잠겼는데 어떻게 풀어?"}\n'
    result = subprocess.run(
        [sys.executable, "data_prep/retrieve.py", str(wms_index.dir), "--json", "--top-k", "2"],
        check=False,
        cwd=REPO,
        input=queries,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query"] for r in rows] == ["택배 상차 마감은 몇 시야?", "계정이 잠겼는데 어떻게 풀어?"]
    assert [r["results"][0]["source"] for r in rows] == ["shipping.md", "accounts.txt"]
    assert set(rows[0]["results"][0]) >= {"rank", "score", "source", "text"}
    assert [r["rank"] for r in rows[0]["results"]] == [1, 2]
    bad = run_script(sys.executable, "data_prep/retrieve.py", str(tmp_path), "--query", "반품")
    assert bad.returncode == 2 and "is not an index" in bad.stderr


def test_context_layout_keeps_passages_out_of_speech_level_and_rewrite(wms_index):
    from eeve_sft.speech_level import classify, to_banmal

    question = "냉장 상품은 몇 번 도크로 받나요?"
    hits = wms_index.search(question, 3)
    turn = format_context(question, hits)
    assert turn.endswith("\n\n" + question)
    assert turn.startswith("> [1] inbound.md · 입고 관리 > 차량 도착과 하차\n> ")
    assert classify(turn) == classify(question) == "polite"  # the polite passages do not count
    rewritten = to_banmal(turn)
    assert rewritten.rsplit("\n\n", 1)[0] == turn.rsplit("\n\n", 1)[0]  # passages untouched
    assert classify(rewritten) == "banmal"
    assert sources_of(hits)[0] == {
        "source": "inbound.md",
        "headings": ["입고 관리", "차량 도착과 하차"],
        "start": hits[0].chunk.start,
        "end": hits[0].chunk.end,
    }


def test_chat_loop_with_rag_shows_the_model_the_passages_and_prints_sources(wms_index):
    import io

    from eeve_sft.inference.answer import chat_loop
    from eeve_sft.inference.loading import load_for_inference
    from eeve_sft.inference.sampling import SamplingConfig

    model, tokenizer = load_for_inference(DEMO_MODEL, device="cpu")
    lines = iter(["택배 상차 마감은 몇 시야?", "/exit"])
    out = io.StringIO()
    messages = chat_loop(
        model,
        tokenizer,
        SamplingConfig(max_new_tokens=4, do_sample=False),
        read=lambda _prompt: next(lines),
        out=out,
        augment=rag_augmenter(wms_index, 2),
    )
    user = messages[0]["content"]
    assert user == format_context("택배 상차 마감은 몇 시야?", wms_index.search("택배 상차 마감은 몇 시야?", 2))
    assert "출처 [1] shipping.md · 출고와 배송 > 상차와 출고 확정" in out.getvalue()
    assert "출처 [2]" in out.getvalue()


def test_chat_cli_rag_prompt_prints_sources_and_bad_index_is_one_line(tmp_path, wms_index):
    base = [
        sys.executable,
        "scripts/chat.py",
        "--model-path",
        str(DEMO_MODEL),
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--greedy",
        "--prompt",
        "반품 번호 없이 상품이 오면 어떻게 해?",
    ]
    result = run_script(*base, "--rag", str(wms_index.dir), "--rag-top-k", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    sources = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("출처")]
    assert len(sources) == 2 and sources[0].startswith("출처 [1] returns.html · 반품 처리 > 반품 접수")
    bad = run_script(*base, "--rag", str(tmp_path / "no-index"))
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "index folder not found" in errors[0]
