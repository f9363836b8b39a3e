"""Retrieval over the user's own documents: reading, chunking, BM25 over Kiwi morphemes, FAISS dense search,
fusion, and the one context layout shared by generated training rows and ``scripts/chat.py --rag``."""

from .chunking import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP, Chunk
from .context import augment_question, format_context, sources_of
from .index import MODES, Hit, RetrievalIndex, build_index

__all__ = [
    "DEFAULT_CHUNK_CHARS",
    "DEFAULT_OVERLAP",
    "MODES",
    "Chunk",
    "Hit",
    "RetrievalIndex",
    "augment_question",
    "build_index",
    "format_context",
    "sources_of",
]
