"""Labelling texts: the level of every sentence end, combined into one label per text.

Speed: the level of a sentence lives in its last few words, so only the tail of every sentence is sent
to Kiwi (one multi-threaded call per batch) and tails already seen are answered from a cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .levels import (
    BANMAL,
    BARE_QUESTION_TAGS,
    NEUTRAL,
    POLITE,
    base_tag,
    combine,
    ending_level,
    get_kiwi,
    interjection_level,
    is_junk,
    is_polite_final,
)
from .sentences import Chunk, plan

_CACHE_LIMIT = 300_000
# Tail -> (levels of the sentence ends in it, ends open): see _tail_signature.
Signature = tuple[tuple[str, ...], bool]
_tail_cache: dict[str, Signature] = {}


def _tail_signature(tokens: Sequence[Any], tail: str) -> Signature:
    """Levels of the sentence ends found in one analysed tail, and whether it ends open.

    "Open" means a 반말 sentence left without a final ending: on a connective ("비가 와서.", "가는
    중인데") or a bare noun asked as a question ("진짜?"). That counts as 반말 in running text but not in
    a list item, so the caller decides.
    """
    content = [t for t in tokens if not is_junk(t.tag)]
    levels: list[str] = []
    for j, tok in enumerate(content):
        if tok.tag != "EF":
            continue
        nxt = content[j + 1] if j + 1 < len(content) else None
        if nxt is not None and nxt.form == "요":
            levels.append(POLITE)
        elif nxt is not None and (nxt.tag.startswith("J") or (nxt.form == "하" and tok.form.endswith("까"))):
            continue  # "갈까 해요", "좋다는": an ending inside the sentence, not its end
        else:
            levels.append(ending_level(tok.form))
    if not content:
        return (), False
    last = content[-1]
    open_end = False
    stripped = tail.rstrip()
    if last.tag != "EF":
        if last.form == "요" and len(content) > 1:
            if content[-2].tag != "EF":  # after EF it was already counted above
                levels.append(POLITE)  # "왜요", "커피요", "와서요", "그럼요"
        elif last.tag == "EC":
            if is_polite_final(last.form):
                levels.append(POLITE)  # Kiwi sometimes tags "-ㄹ까요" or "-ㅂ니다:" as EC
            else:
                # Not before ":" or "," ("예를 들어:"), where the sentence goes on.
                open_end = not stripped.endswith((":", ",", ";"))
        elif not levels:
            ic = interjection_level(last.form, last.tag)
            if ic is not None:
                levels.append(ic)
            elif last.tag == "IC" and len(last.form) > 1 and last.form.endswith("요"):
                levels.append(POLITE)  # "천만에요", "아니에요" read as one interjection
            elif stripped.endswith("?") and base_tag(last.tag) in BARE_QUESTION_TAGS:
                open_end = True
    return tuple(levels), open_end


def _signatures(tails: Iterable[str]) -> dict[str, Signature]:
    """Signature of every tail, from the cache or from one Kiwi call for those not seen yet."""
    found: dict[str, Signature] = {}
    pending: list[str] = []
    for tail in dict.fromkeys(tails):
        cached = _tail_cache.get(tail)
        if cached is None:
            pending.append(tail)
        else:
            found[tail] = cached
    if pending:
        if len(_tail_cache) + len(pending) > _CACHE_LIMIT:
            _tail_cache.clear()  # bounded memory; a fresh cache refills quickly
        for tail, tokens in zip(pending, get_kiwi().tokenize(pending), strict=True):
            found[tail] = _tail_cache[tail] = _tail_signature(tokens, tail)
    return found


def _chunk_level(chunk: Chunk, signatures: dict[str, Signature]) -> str:
    levels, open_end = signatures[chunk.tail]
    if open_end and not chunk.fragment_ok:
        levels = (*levels, BANMAL)
    return combine(levels)


def classify_batch(texts: list[str], batch_size: int = 256) -> list[str]:
    """Label every text (see the package doc); gives exactly what :func:`classify` gives, many times faster."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    labels: list[str] = []
    for start in range(0, len(texts), batch_size):
        plans = [plan(t) for t in texts[start : start + batch_size]]
        signatures = _signatures(c.tail for p in plans for c in p)
        labels.extend(combine(_chunk_level(c, signatures) for c in p) for p in plans)
    return labels


def classify(text: str) -> str:
    """``polite``, ``banmal``, ``mixed`` or ``neutral`` for one text."""
    return classify_batch([text])[0]


def sentence_levels(text: str) -> list[tuple[str, str]]:
    """``(sentence, label)`` for each sentence that has a speech level, in order; for reports.

    Ignored spans (code, quotes) appear as ``⋯``. A sentence label is ``mixed`` only when Kiwi finds
    two differently-levelled sentence ends with no punctuation between them.
    """
    chunks = plan(text)
    signatures = _signatures(c.tail for c in chunks)
    out = []
    for chunk in chunks:
        level = _chunk_level(chunk, signatures)
        if level != NEUTRAL:
            out.append((chunk.text, level))
    return out
