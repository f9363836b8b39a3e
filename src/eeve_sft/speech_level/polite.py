"""Rewriting 반말 as 존댓말 (해요체).

Only 반말 sentence ends change (``먹었어?`` -> ``먹었어요?``, ``수도다.`` -> ``수도예요.``), with 나/내 ->
저/제 and 반말 interjections -> polite ones; sentences already polite stay as they are, so an almost-polite
answer is repaired in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .levels import BARE_QUESTION_TAGS, POLITE, Morph, base_tag, ending_level, ends_question
from .rewrite import Edits, prev_kept, rewrite_batch, token_sentences
from .sentences import STRUCT_RE

# 반말 endings with one fixed 해요체 form; anything else not polite takes 요 (ㄹ게 -> ㄹ게요, 네 -> 네요 ...).
_POLITE_BY_BANMAL = {
    "어": "어요", "아": "어요", "여": "어요", "니": "어요", "냐": "어요", "느냐": "어요", "으냐": "어요",
    "ᆫ다": "어요", "는다": "어요", "다": "어요", "자": "어요", "자꾸나": "어요", "지": "죠",
    "구나": "군요", "는구나": "는군요", "로구나": "로군요", "군": "군요", "는군": "는군요",
    "더라": "더라고요", "다며": "다면서요", "다면서": "다면서요", "마": "ᆯ게요", "으마": "ᆯ게요",
}  # fmt: skip
_COMMANDS = {"어라", "아라", "거라", "너라", "라", "으라", "렴", "으렴", "려무나", "으려무나"}  # -> 세요
_COPULA_ENDINGS = {"야", "다", "냐", "니", "어", "이야"}  # after 이다 / 아니다: -> 에요 / 예요
_NO_YO_CONNECTIVES = {"게", "도록", "듯", "듯이"}  # "-게" is 하게체 or adverbial; adding 요 is wrong

# Words whose polite form is another word wherever they stand: (form, tag) -> replacement.
_POLITE_WORDS: dict[Morph, Morph] = {
    ("내", "NP"): ("제", "NP"),
    ("내", "MM"): ("제", "MM"),
    ("응", "IC"): ("네", "IC"),
    ("어", "IC"): ("네", "IC"),
    ("엉", "IC"): ("네", "IC"),
    ("웅", "IC"): ("네", "IC"),
    ("아니", "IC"): ("아니요", "IC"),
    ("아냐", "IC"): ("아니요", "IC"),
}


def _polite_ending(form: str, prev: Morph | None, copula_surface: bool) -> list[Morph]:
    copula = prev is not None and base_tag(prev[1]) in ("VCP", "VCN")
    if form in _COMMANDS:
        return [("세요", "EF")]
    if copula and form in _COPULA_ENDINGS:
        if prev is not None and base_tag(prev[1]) == "VCN":
            return [("에요", "EF")]
        # Kiwi spells "수도+이+에요" as "수도에요"; standard spelling after a vowel is "수도예요".
        return [("에요" if copula_surface else "예요", "EF")]
    if form in _POLITE_BY_BANMAL:
        return [(_POLITE_BY_BANMAL[form], "EF")]
    if form.endswith("요") or ending_level(form) == POLITE:
        return [(form, "EF")]
    return [(form + "요", "EF")]  # ㄹ게, ㄹ래, ㄹ까, 네, 거든, 잖아, 는데, 대, 래 ...


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)]


def _rewrite_ending(tokens: Sequence[Any], i: int, nxt: Any, tag: str, text: str, new: Edits) -> None:
    """A sentence-final ending, or the connective a sentence stops on, made polite."""
    tok = tokens[i]
    if nxt is not None and nxt.form == "요":
        return
    if tag == "EC":
        if tok.form in _NO_YO_CONNECTIVES:
            return
        if tok.form not in _POLITE_BY_BANMAL and tok.form not in _COMMANDS:
            if not tok.form.endswith("요") and not STRUCT_RE.match(_line_at(text, tok.start)):
                new[i] = [(tok.form, "EC"), ("요", "JX")]  # "와서" -> "와서요"; not in "- 설치하고"
            return
    if ending_level(tok.form) == POLITE:
        return
    prev = prev_kept(new, tokens, i)
    surface = i > 0 and tokens[i - 1].tag == "VCP" and text[tokens[i - 1].start : tokens[i - 1].end] == "이"
    new[i] = _polite_ending(tok.form, prev, surface)
    if new[i] == [("어요", "EF")] and prev == ("시", "EP") and new[i - 1] is None:
        new[i - 1], new[i] = [], [("세요", "EF")]  # "오셔" -> "오세요", not "오셔요"


def polite_edits(tokens: Sequence[Any], text: str) -> Edits:
    """Per token: None to keep it, else its polite replacement morphemes."""
    new: Edits = [None] * len(tokens)
    for _, content in token_sentences(tokens):
        if not content:
            continue
        has_ending = False
        for pos, i in enumerate(content):
            tok, tag = tokens[i], base_tag(tokens[i].tag)
            nxt = tokens[content[pos + 1]] if pos + 1 < len(content) else None
            if tag == "EF" or (tag == "EC" and pos == len(content) - 1):
                has_ending = True
                _rewrite_ending(tokens, i, nxt, tag, text, new)
            elif (tok.form, tag) == ("나", "NP"):
                is_subject = nxt is not None and nxt.tag == "JKS" and nxt.form == "가"
                new[i] = [("제" if is_subject else "저", "NP")]  # "내가" -> "제가", "나" -> "저"
            elif (tok.form, tag) in _POLITE_WORDS:
                new[i] = [_POLITE_WORDS[tok.form, tag]]
        last = content[-1]
        # "진짜?" -> "진짜요?": a bare noun or adverb asked as a question takes the polite particle.
        bare_question = ends_question(tokens, last) and base_tag(tokens[last].tag) in BARE_QUESTION_TAGS
        if not has_ending and bare_question and new[last] is None:
            new[last] = [(tokens[last].form, tokens[last].tag), ("요", "JX")]
    return new


def to_polite_batch(texts: list[str]) -> list[str]:
    """:func:`to_polite` for many texts with one Kiwi call."""
    return rewrite_batch(texts, polite_edits)


def to_polite(text: str) -> str:
    """Rewrite 반말 as 해요체: ``밥 먹었어?`` -> ``밥 먹었어요?``, ``수도다.`` -> ``수도예요.``

    Sentences already polite are left alone, so it repairs an almost-polite answer in place.
    """
    return to_polite_batch([text])[0]
