"""Documents into chunks: a chunk is one paragraph, or, for a paragraph longer than `chunk_chars`, a run of its
sentences (Kiwi's sentence splitter) of at most `chunk_chars`, consecutive runs sharing up to `overlap` characters
of whole sentences. A chunk never crosses a heading, and carries the path of headings above it as context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UserError
from ..speech_level import get_kiwi
from .documents import HEADING, Document

DEFAULT_CHUNK_CHARS = 800
DEFAULT_OVERLAP = 100


@dataclass(frozen=True)
class Chunk:
    id: int
    source: str  # the document's path relative to the docs folder
    headings: tuple[str, ...]  # title first
    text: str
    start: int  # character offsets of `text` in the document's extracted text
    end: int

    @property
    def heading_path(self) -> str:
        return " > ".join(self.headings)

    def as_row(self) -> dict:
        row = asdict(self)
        row["headings"] = list(self.headings)
        return row

    @classmethod
    def from_row(cls, row: dict) -> Chunk:
        return cls(
            int(row["id"]), row["source"], tuple(row["headings"]), row["text"], int(row["start"]), int(row["end"])
        )


def check_sizes(chunk_chars: int, overlap: int) -> None:
    if chunk_chars < 50:
        raise UserError(f"--chunk-chars must be at least 50, got {chunk_chars}")
    if not 0 <= overlap < chunk_chars // 2:
        raise UserError(f"--overlap must be at least 0 and below half of --chunk-chars ({chunk_chars}), got {overlap}")


def _sentence_runs(sentences: list[tuple[int, int]], chunk_chars: int, overlap: int) -> list[tuple[int, int]]:
    """Group (start, end) sentence spans into runs of at most `chunk_chars` (a longer sentence stands alone)."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(sentences):
        j = i + 1
        while j < len(sentences) and sentences[j][1] - sentences[i][0] <= chunk_chars:
            j += 1
        runs.append((sentences[i][0], sentences[j - 1][1]))
        if j >= len(sentences):
            break
        # Step back over whole sentences that fit in the overlap, but always move forward.
        k = j
        while k - 1 > i and sentences[j - 1][1] - sentences[k - 1][0] <= overlap:
            k -= 1
        i = k
    return runs


def chunk_documents(documents: list[Document], chunk_chars: int, overlap: int) -> list[Chunk]:
    check_sizes(chunk_chars, overlap)
    pieces: list[tuple[str, tuple[str, ...], int, int]] = []  # source, headings, start, end
    long_paragraphs: list[tuple[int, str, tuple[str, ...], int]] = []  # slot, text, headings, start
    for doc in documents:
        path: list[tuple[int, str]] = []
        for block in doc.blocks:
            if block.kind == HEADING:
                path = [(lvl, t) for lvl, t in path if lvl < block.level] + [(block.level, block.text)]
                continue
            headings = tuple(t for _, t in path)
            if block.end - block.start <= chunk_chars:
                pieces.append((doc.path, headings, block.start, block.end))
            else:
                long_paragraphs.append((len(pieces), doc.text[block.start : block.end], headings, block.start))
                pieces.append((doc.path, headings, -1, -1))  # replaced by its sentence runs below
    splits: dict[int, list[tuple[int, int]]] = {}
    if long_paragraphs:
        sentence_lists = get_kiwi().split_into_sents([text for _, text, _, _ in long_paragraphs])
        for (slot, _text, _headings, base), sentences in zip(long_paragraphs, sentence_lists, strict=True):
            spans = [(base + s.start, base + s.end) for s in sentences]
            splits[slot] = _sentence_runs(spans, chunk_chars, overlap)
    texts = {doc.path: doc.text for doc in documents}
    chunks: list[Chunk] = []
    for slot, (source, headings, start, end) in enumerate(pieces):
        for s, e in splits.get(slot, [(start, end)]):
            chunks.append(Chunk(len(chunks), source, headings, texts[source][s:e], s, e))
    return chunks
