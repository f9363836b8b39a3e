"""Dense retrieval: sentence-transformers embeddings in a FAISS inner-product index (vectors normalised, so the
score is the cosine similarity). Queries and chunks go through `encode_query` / `encode_document`, so a model that
was saved with query or document prompts (E5, BGE variants) gets them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError, one_line
from ..hub import check_model

FAISS_FILE = "dense.faiss"
# Korean-capable, multilingual, 1024 dims, 8K context; `python data_prep/index_docs.py ... --embedding-model` names it.
DEFAULT_EMBEDDING_MODEL = "BAAI/bge-m3"


def model_identity(name_or_path: str) -> str:
    """How an embedding model is compared between index and query: a local folder by its absolute path."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def load_embedder(name_or_path: str, device: str | None = None):
    """A SentenceTransformer, or UserError naming the model when it is not one."""
    path = Path(name_or_path).expanduser()
    if path.exists() and not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise UserError(f"embedding model {name_or_path} is not a sentence-transformers model (no modules.json)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("dense retrieval needs sentence-transformers: pip install -e '.[rag]'") from None
    cache_only = check_model(name_or_path, "embedding model", cached_file="modules.json")
    try:
        return SentenceTransformer(
            str(path) if path.exists() else name_or_path, device=device or "cpu", local_files_only=cache_only
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load embedding model '{name_or_path}': {one_line(err)}") from None


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("dense retrieval needs faiss: pip install -e '.[rag]'") from None
    return faiss


def embed_documents(embedder, texts: list[str], batch_size: int = 32) -> np.ndarray:
    vectors = embedder.encode_document(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def embed_queries(embedder, texts: list[str], batch_size: int = 32) -> np.ndarray:
    vectors = embedder.encode_query(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


class DenseIndex:
    def __init__(self, index) -> None:
        self.index = index

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray) -> DenseIndex:
        faiss = _faiss()
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index)

    def save(self, index_dir: Path) -> None:
        _faiss().write_index(self.index, str(index_dir / FAISS_FILE))

    @classmethod
    def load(cls, index_dir: Path) -> DenseIndex:
        return cls(_faiss().read_index(str(index_dir / FAISS_FILE)))

    def search(self, query_vectors: np.ndarray, top_k: int) -> list[list[tuple[int, float]]]:
        k = min(top_k, self.index.ntotal)
        scores, ids = self.index.search(query_vectors, k)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]
