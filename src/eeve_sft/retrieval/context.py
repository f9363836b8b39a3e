"""The one layout in which retrieved passages reach the model, for generated training rows and for chat --rag alike:

    > [1] inbound.md · 입고 관리 > 검수
    > 수량 차이가 예정 수량의 2%를 넘거나 ...
    >
    > [2] ...

    질문

The passages are a Markdown block quote on purpose: the speech-level classifier and the 반말 rewriter of
:mod:`eeve_sft.speech_level` skip block quotes, so a user turn is judged and rewritten by its question alone and
the documents' wording is never touched, in the data build as here.
"""

from __future__ import annotations

from .index import Hit, RetrievalIndex


def source_label(hit: Hit) -> str:
    chunk = hit.chunk
    return f"{chunk.source} · {chunk.heading_path}" if chunk.headings else chunk.source


def format_context(question: str, hits: list[Hit]) -> str:
    """The user turn: the passages as a numbered block quote, a blank line, then the question."""
    if not hits:
        return question
    lines: list[str] = []
    for n, hit in enumerate(hits, start=1):
        if lines:
            lines.append(">")
        lines.append(f"> [{n}] {source_label(hit)}")
        lines.extend(f"> {line}".rstrip() for line in hit.chunk.text.split("\n"))
    return "\n".join(lines) + "\n\n" + question.strip()


def sources_of(hits: list[Hit]) -> list[dict]:
    """Where each passage comes from, as training rows record it (`sources`)."""
    return [
        {"source": h.chunk.source, "headings": list(h.chunk.headings), "start": h.chunk.start, "end": h.chunk.end}
        for h in hits
    ]


def augment_question(
    index: RetrievalIndex, question: str, top_k: int, mode: str | None = None
) -> tuple[str, list[Hit]]:
    """Retrieve for `question` and lay the passages out before it."""
    hits = index.search(question, top_k, mode)
    return format_context(question, hits), hits


def rag_augmenter(index: RetrievalIndex, top_k: int, mode: str | None = None):
    """For chat: a callable that turns a user line into (user turn with passages, source labels to print)."""

    def augment(question: str) -> tuple[str, list[str]]:
        content, hits = augment_question(index, question, top_k, mode)
        return content, [f"[{n}] {source_label(h)}" for n, h in enumerate(hits, start=1)]

    return augment
