"""The index folder: chunk store, BM25 index, optional FAISS index and a manifest, built and searched as one.

    INDEX_DIR/
      manifest.json   settings, package versions, every input file with its SHA-256, skipped files with reasons
      chunks.jsonl    one chunk a line: id, source, headings, text, start, end
      bm25/           bm25s index over Kiwi morphemes
      dense.faiss     (with an embedding model) FAISS inner-product index of normalised embeddings

The folder is written whole or not at all (:func:`eeve_sft.output_dir.atomic_output_dir`), and holds nothing that
changes between runs (no timestamps, a sorted vocabulary), so unchanged documents give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..jsonfiles import write_json, write_jsonl
from ..output_dir import atomic_output_dir, check_output_dir
from ..versions import package_versions
from .chunking import Chunk, chunk_documents
from .dense import DenseIndex, embed_documents, embed_queries, load_embedder, model_identity
from .documents import Skipped, load_documents
from .lexical import CONTENT_TAGS, LexicalIndex, analyze_batch

MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
FORMAT_VERSION = 1
BM25_K1, BM25_B = 1.2, 0.75
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.): 1 / (60 + rank)
FUSION_DEPTH = 50  # candidates taken from each retriever before fusing
MODES = ("bm25", "dense", "hybrid")
_PACKAGES = ("eeve-sft", "kiwipiepy", "kiwipiepy-model", "bm25s", "markdown-it-py", "beautifulsoup4", "pypdf")
_DENSE_PACKAGES = ("sentence-transformers", "faiss-cpu", "torch", "transformers")


def index_text(chunk: Chunk) -> str:
    """What both retrievers see of a chunk: its heading path, then its text (headings carry the topic)."""
    return f"{chunk.heading_path}\n{chunk.text}" if chunk.headings else chunk.text


@dataclass
class BuildReport:
    index_dir: Path
    documents: int
    chunks: int
    skipped: list[Skipped]


def build_index(
    docs_dir: str | Path,
    index_dir: str | Path,
    *,
    chunk_chars: int,
    overlap: int,
    embedding_model: str | None = None,
    overwrite: bool = False,
) -> BuildReport:
    target = Path(index_dir)
    check_output_dir(target, overwrite)
    documents, skipped = load_documents(docs_dir)
    chunks = chunk_documents(documents, chunk_chars, overlap)
    texts = [index_text(c) for c in chunks]
    lexical = LexicalIndex.build(analyze_batch(texts), BM25_K1, BM25_B)
    dense = embedding = None
    if embedding_model:
        embedder = load_embedder(embedding_model)
        dense = DenseIndex.build(embed_documents(embedder, texts))
        embedding = {"model": embedding_model, "identity": model_identity(embedding_model), "dim": dense.dim}
    per_file: dict[str, int] = {}
    for chunk in chunks:
        per_file[chunk.source] = per_file.get(chunk.source, 0) + 1
    manifest = {
        "format_version": FORMAT_VERSION,
        "docs_dir": str(docs_dir),
        "settings": {
            "chunk_chars": chunk_chars,
            "overlap": overlap,
            "bm25": {"k1": BM25_K1, "b": BM25_B, "method": "lucene", "terms": sorted(CONTENT_TAGS)},
            "fusion": {"method": "reciprocal_rank", "k": RRF_K, "depth": FUSION_DEPTH},
        },
        "embedding": embedding,
        "versions": package_versions(_PACKAGES + (_DENSE_PACKAGES if embedding else ()), missing="not installed"),
        "counts": {
            "files": len(documents) + len(skipped),
            "documents": len(documents),
            "skipped": len(skipped),
            "chunks": len(chunks),
        },
        "files": [{"path": d.path, "sha256": d.sha256, "chunks": per_file.get(d.path, 0)} for d in documents],
        "skipped": [{"path": s.path, "reason": s.reason, "detail": s.detail} for s in skipped],
    }
    with atomic_output_dir(target, overwrite) as building:
        write_jsonl(building / CHUNKS, (c.as_row() for c in chunks))
        lexical.save(building)
        if dense is not None:
            dense.save(building)
        write_json(building / MANIFEST, manifest)
    return BuildReport(target, len(documents), len(chunks), skipped)


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    chunk: Chunk

    def as_result(self) -> dict:
        c = self.chunk
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "source": c.source,
            "headings": list(c.headings),
            "start": c.start,
            "end": c.end,
            "text": c.text,
        }


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Chunk ids by the sum of 1 / (k + rank) over the rankings they appear in (ties: lower id first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class RetrievalIndex:
    """A built index folder, ready to search. `embedding_model`, when given, must be the one the index was built
    with; without it the index's own model is loaded (when it has a dense part)."""

    def __init__(self, index_dir: str | Path, embedding_model: str | None = None) -> None:
        self.dir = Path(index_dir)
        manifest_path = self.dir / MANIFEST
        if not self.dir.is_dir():
            raise UserError(f"index folder not found: {self.dir}")
        if not manifest_path.is_file():
            raise UserError(f"{self.dir} is not an index (no {MANIFEST}); build one with data_prep/index_docs.py")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{manifest_path} is not valid JSON ({err})") from None
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"index {self.dir} has format version {self.manifest.get('format_version')}; this code reads "
                f"{FORMAT_VERSION}: rebuild it with data_prep/index_docs.py"
            )
        missing = [name for name in (CHUNKS, "bm25/params.index.json") if not (self.dir / name).is_file()]
        if missing:
            raise UserError(f"index {self.dir} is incomplete (no {', '.join(missing)}); rebuild it")
        with open(self.dir / CHUNKS, encoding="utf-8") as handle:
            self.chunks = [Chunk.from_row(json.loads(line)) for line in handle if line.strip()]
        self.lexical = LexicalIndex.load(self.dir)
        embedding = self.manifest.get("embedding")
        self.embedding_model = embedding["model"] if embedding else None
        if embedding_model is not None:
            if embedding is None:
                raise UserError(
                    f"index {self.dir} has no dense part (built without --embedding-model); "
                    f"rebuild it with --embedding-model {embedding_model} or search with --mode bm25"
                )
            if model_identity(embedding_model) != embedding["identity"]:
                raise UserError(
                    f"index {self.dir} was built with embedding model '{embedding['model']}', "
                    f"not '{embedding_model}': query with the same model or rebuild the index"
                )
        self.dense = DenseIndex.load(self.dir) if embedding else None
        self._embedder = None

    @property
    def has_dense(self) -> bool:
        return self.dense is not None

    def default_mode(self) -> str:
        return "hybrid" if self.has_dense else "bm25"

    def _embed(self, queries: list[str]):
        if self._embedder is None:
            self._embedder = load_embedder(self.embedding_model)
            dim = self._embedder.get_embedding_dimension()
            if dim is not None and dim != self.dense.dim:
                raise UserError(
                    f"embedding model '{self.embedding_model}' gives {dim}-dimensional vectors, the index holds "
                    f"{self.dense.dim}: the model changed since the index was built; rebuild it"
                )
        return embed_queries(self._embedder, queries)

    def search_batch(self, queries: list[str], top_k: int = 5, mode: str | None = None) -> list[list[Hit]]:
        mode = mode or self.default_mode()
        if mode not in MODES:
            raise UserError(f"unknown retrieval mode '{mode}'; use one of {', '.join(MODES)}")
        if top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {top_k}")
        if mode != "bm25" and not self.has_dense:
            raise UserError(f"--mode {mode} needs a dense index; {self.dir} was built without --embedding-model")
        depth = max(top_k, FUSION_DEPTH) if mode == "hybrid" else top_k
        lexical = dense = None
        if mode in ("bm25", "hybrid"):
            lexical = [self.lexical.search(terms, depth) for terms in analyze_batch(queries)]
        if mode in ("dense", "hybrid"):
            dense = self.dense.search(self._embed(queries), depth)
        out = []
        for i in range(len(queries)):
            if mode == "bm25":
                ranked = lexical[i]
            elif mode == "dense":
                ranked = dense[i]
            else:
                ranked = reciprocal_rank_fusion([[c for c, _ in lexical[i]], [c for c, _ in dense[i]]])
            out.append([Hit(r, score, self.chunks[c]) for r, (c, score) in enumerate(ranked[:top_k], start=1)])
        return out

    def search(self, query: str, top_k: int = 5, mode: str | None = None) -> list[Hit]:
        return self.search_batch([query], top_k, mode)[0]
