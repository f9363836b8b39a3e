"""What of a text is speech: masking code and quotes, cutting lines into sentences, and each sentence's tail.

Fenced and inline code, markdown block quotes and quoted speech are blanked out (same length, so offsets
still line up with the original); headings are skipped; list items and table cells are marked, since a
fragment there ("- 설치하고") is not a sentence end.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_MASK_RE = re.compile(
    r"(?P<fence>^[ \t]*(?P<mark>`{3,}|~{3,})[^\n]*\n?.*?(?:^[ \t]*(?P=mark)[ \t]*$|\Z))"
    r"|(?P<bq>^[ \t]*>[^\n]*)"
    r"|(?P<code>``[^\n]+?``|`[^`\n]+`)"
    r"|(?P<quote>“[^”\n]*”|‘[^’\n]*’|「[^」\n]*」|『[^』\n]*』|\"[^\"\n]*\""
    r"|(?<![A-Za-z0-9'])'[^'\n]+'(?![A-Za-z]))",
    re.M | re.S,
)
HANGUL_RE = re.compile(r"[가-힣ㄱ-ㅎㅏ-ㅣ]")

# How many words at the end of a sentence are analysed: the predicate and one word of context give
# Kiwi the same reading of the ending as the whole sentence does (checked on the labelled data) at about
# a third of the cost. A short last word ("에러 나", "빨리 와") gets one more word of context.
TAIL_WORDS = 2
SHORT_WORD_SYLLABLES = 2
# Sentences up to this many words are analysed whole when they may hold several sentence ends (see tail).
RUN_ON_WORDS = 12
MAX_TAIL_CHARS = 120


class Masked(NamedTuple):
    text: str  # same length as the input, ignored spans blanked out so offsets still line up
    quotes: list[str]  # inner text of every quotation, for texts that are nothing but a quote


def mask(text: str) -> Masked:
    quotes: list[str] = []

    def blank(m: re.Match[str]) -> str:
        span = m.group()
        if m.group("fence") is not None or m.group("bq") is not None:
            return re.sub(r"[^\n]", " ", span)  # keep line breaks: lines are sentence boundaries
        if m.group("quote") is not None:
            quotes.append(span[1:-1])
        # Same length, quote marks kept, so the rest still reads as "“⋯”라고 물으면". "⋯" is a plain
        # symbol to Kiwi and, unlike "…", never ends a sentence; code becomes a quoted noun too.
        if m.group("code") is not None:
            return "“" + "⋯" * (len(span) - 2) + "”"
        return span[0] + "⋯" * (len(span) - 2) + span[-1]

    return Masked(_MASK_RE.sub(blank, text), quotes)


# Markdown list items and table rows are often fragments ("- 설치하고"), so a connective ending or a
# bare "명사?" there is not read as a 반말 sentence end. Headings are titles ("## 왜 파이썬일까?"), not
# speech, and are not counted at all.
STRUCT_RE = re.compile(r"^\s*(?:[-*+•·▪◦]\s|\d{1,3}[.)]\s|[①-⑳]|\|)")
_HEADING_RE = re.compile(r"^\s*#{1,6}\s")
_TERMINAL_RE = re.compile(r"[.!?…。‼⁉][\"'”’」』)\]]*\s*$")
_SYLLABLE_RE = re.compile(r"[가-힣]")
_BOUNDARY_RE = re.compile(
    r"[.!?…。‼⁉]+[\"'”’」』)\]]*(?=\s|$|[가-힣])"
    r"|[~～]+(?=\s|$)"
    r"|[ㅋㅎㅠㅜ]{2,}(?=\s|$)"
    r"|(?:[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\u200D]?)+(?=\s|$)"
)


class Chunk(NamedTuple):
    text: str  # the sentence as written (ignored spans shown as "⋯")
    tail: str  # the part Kiwi analyses, see tail()
    fragment_ok: bool  # list item / table cell: a trailing connective ending is not a sentence end


def _split_sentences(piece: str) -> list[str]:
    out: list[str] = []
    pos = 0
    for m in _BOUNDARY_RE.finditer(piece):
        out.append(piece[pos : m.end()])
        pos = m.end()
    out.append(piece[pos:])
    return [s.strip() for s in out if s.strip()]


def tail(sentence: str) -> str:
    """The part of a sentence Kiwi analyses.

    Normally the last few words up to the last Korean word: trailing "ㅋㅋ", emoji, numbers or
    English carry no level and only disturb Kiwi ("결혼하신대 ㅋㅋ" reads the ending as a noun). A short
    sentence that may hold more than one sentence end is analysed whole: chat without final punctuation
    ("잘 모르겠어 그래도 해 볼게요") or with a comma ("내가 할게, 선배님은 쉬세요"). Kiwi needs the
    context: on its own "할게," is not read as an ending.
    """
    words = sentence.split()
    last = max((i for i, w in enumerate(words) if _SYLLABLE_RE.search(w)), default=len(words) - 1)
    if last < RUN_ON_WORDS and ("," in sentence or not _TERMINAL_RE.search(sentence)):
        kept = " ".join(words[: last + 1])
    else:
        size = TAIL_WORDS + (len(_SYLLABLE_RE.findall(words[last])) <= SHORT_WORD_SYLLABLES)
        kept = " ".join(words[max(0, last + 1 - size) : last + 1])
    # Kiwi slows down sharply on very long unbroken words ("ㅋㅋㅋ..." x 5000); an ending is at the end.
    return kept[-MAX_TAIL_CHARS:]


def _chunks(masked: str) -> list[Chunk]:
    chunks: list[Chunk] = []
    for line in masked.split("\n"):
        if not HANGUL_RE.search(line) or _HEADING_RE.match(line):
            continue
        structural = bool(STRUCT_RE.match(line))
        pieces = line.split("|") if line.count("|") >= 2 else [line]
        for piece in pieces:
            for sent in _split_sentences(piece):
                if not HANGUL_RE.search(sent):
                    continue
                chunks.append(Chunk(re.sub("⋯+", "⋯", sent), tail(sent), structural))
    return chunks


def plan(text: str) -> list[Chunk]:
    """The sentences of `text` that may carry a speech level, in order."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    masked = mask(text)
    if not HANGUL_RE.search(masked.text) and masked.quotes:
        # Nothing is said outside the quotation marks: the quoted words are the utterance.
        return _chunks("\n".join(mask(q).text for q in masked.quotes))
    return _chunks(masked.text)
