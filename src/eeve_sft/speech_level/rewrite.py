"""Rewriting a text by editing its Kiwi morphemes, shared by the 반말 and the 존댓말 converters.

A converter only decides, per token, which morphemes replace it (:data:`Edits`); this module analyses the
masked text, re-spells the words that hold an edited morpheme with ``Kiwi.join`` and leaves every other
character as written, code and quotes included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from .levels import Morph, get_kiwi, is_junk
from .sentences import HANGUL_RE, mask

# Per token: None keeps it, a list (possibly empty) replaces it with those morphemes.
Edits = list[list[Morph] | None]
EditRule = Callable[[Sequence[Any], str], Edits]  # (tokens, masked text) -> edits

_CANDIDATES = 3
_ENDING_HOSTS = ("V", "XSV", "XSA", "E")  # what an ending may follow inside a word: a predicate or another ending


def token_sentences(tokens: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
    """Per sentence: the indices of all its tokens, and of those that can carry speech level (see is_junk)."""
    sentences: dict[int, list[int]] = {}
    for i, tok in enumerate(tokens):
        sentences.setdefault(tok.sent_position, []).append(i)
    return [(idx, [i for i in idx if not is_junk(tokens[i].tag)]) for idx in sentences.values()]


def prev_kept(new: Edits, tokens: Sequence[Any], i: int) -> Morph | None:
    """The morpheme right before token i after earlier edits (skipping deleted ones)."""
    for j in range(i - 1, -1, -1):
        repl = new[j]
        if repl is None:
            return tokens[j].form, tokens[j].tag
        if repl:
            return repl[-1]
    return None


def _apply_edits(original: str, masked: str, tokens: Sequence[Any], new: Edits) -> str:
    """Re-spell only the words that hold an edited morpheme; everything else stays byte for byte."""
    kiwi = get_kiwi()
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", masked)]
    by_word: dict[int, list[int]] = {}
    w = 0
    for i, tok in enumerate(tokens):
        while w < len(words) and words[w][1] <= tok.start:
            w += 1
        if w < len(words):
            by_word.setdefault(w, []).append(i)
    replacements: list[tuple[int, int, str]] = []
    for members in by_word.values():
        if all(new[i] is None for i in members):
            continue
        core = [i for i in members if not is_junk(tokens[i].tag)]
        if not core:
            continue
        start = min(tokens[i].start for i in core)
        end = max(tokens[i].end for i in core)
        if original[start:end] != masked[start:end]:
            continue  # a protected span (code, quote) sits inside this word: leave the word alone
        morphs: list[Morph] = []
        for i in range(core[0], core[-1] + 1):
            repl = new[i]
            morphs.extend(repl if repl is not None else [(tokens[i].form, tokens[i].tag)])
        spelled = kiwi.join([(f, t, False) if k else (f, t) for k, (f, t) in enumerate(morphs)]) if morphs else ""
        replacements.append((start, end, spelled))
    out = original
    for start, end, spelled in sorted(replacements, reverse=True):
        out = out[:start] + spelled + out[end:]
    return out


def _is_well_formed(tokens: Sequence[Any]) -> bool:
    """No ending hangs on a non-predicate inside one word."""
    return all(
        not tok.tag.startswith("E") or prev.end < tok.start or prev.tag.startswith(_ENDING_HOSTS)
        for prev, tok in pairwise(tokens)
    )


def _well_formed(candidates: Sequence[tuple[Sequence[Any], float]]) -> Sequence[Any]:
    """Kiwi's best analysis that is well formed, else its best.

    The top analysis is occasionally impossible, e.g. "아세요" as 아/IC + 세요/EF, whose rewrite would
    be "아어"; the next candidate (알/VV + 세요/EF) is right. Rewriting needs the stem, labelling does not.
    """
    for tokens, _score in candidates:
        if _is_well_formed(tokens):
            return tokens
    return candidates[0][0]


def rewrite_batch(texts: list[str], edit_rule: EditRule) -> list[str]:
    """Every text rewritten by `edit_rule`, with one Kiwi call for all of them; texts without Korean stay."""
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"expected str, got {type(t).__name__}")
    masked = [mask(t).text for t in texts]
    korean = [i for i, m in enumerate(masked) if HANGUL_RE.search(m)]
    out = list(texts)
    if not korean:
        return out
    kiwi = get_kiwi()
    for i, tokens in zip(korean, kiwi.tokenize([masked[i] for i in korean]), strict=True):
        if not _is_well_formed(tokens):
            tokens = _well_formed(kiwi.analyze(masked[i], top_n=_CANDIDATES))
        out[i] = _apply_edits(texts[i], masked[i], tokens, edit_rule(tokens, masked[i]))
    return out
