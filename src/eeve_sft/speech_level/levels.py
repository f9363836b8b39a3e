"""The four labels, the Kiwi analyser, and how a morpheme's form tells its speech level.

Shared by the classifier and both converters: the rules here say what counts as 존댓말 in an ending or an
interjection, so the classifier and the converters cannot disagree about it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

POLITE, BANMAL, MIXED, NEUTRAL = "polite", "banmal", "mixed", "neutral"
LABELS = (POLITE, BANMAL, MIXED, NEUTRAL)

Morph = tuple[str, str]  # (form, tag) as Kiwi writes a morpheme

_kiwi: Any = None
_kiwi_lock = threading.Lock()


def get_kiwi() -> Any:
    """The shared Kiwi analyser, created on first use (loading the model takes about a second)."""
    global _kiwi
    if _kiwi is None:
        with _kiwi_lock:
            if _kiwi is None:
                from kiwipiepy import Kiwi

                _kiwi = Kiwi()
    return _kiwi


def base_tag(tag: str) -> str:
    """Drop the regularity mark Kiwi puts on verb tags: "VV-I" -> "VV"."""
    return tag.split("-")[0]


def is_junk(tag: str) -> bool:
    """Punctuation, symbols, emoji, URLs, stray jamo: nothing that carries speech level."""
    return (tag[0] == "S" and tag not in ("SL", "SH", "SN")) or tag.startswith(("W_", "Z_"))


# 하오체 ("주의하시오") is old-fashioned but not 반말.
_HAO_ENDINGS = ("오", "소", "으오", "구려", "으구려")


def ending_level(form: str) -> str:
    """Speech level of a sentence-final ending (EF) as Kiwi spells it."""
    if form.endswith(("요", "죠")):
        return POLITE  # 해요체: 어요, 세요, 나요, ㄹ까요, 네요, 죠 ...
    if form[0] in "ᆸ습읍":
        return POLITE  # 하십시오체: ㅂ니다, 습니까, ㅂ시오, ㅂ시다
    if form in _HAO_ENDINGS:
        return POLITE
    return BANMAL


def is_polite_final(form: str) -> bool:
    """A polite sentence ending even where Kiwi tags it EC ("궁금합니다:", "될까요ㅋㅋ")."""
    return form.endswith(("요", "죠")) or (form[0] in "ᆸ습" and form.endswith(("니다", "니까")))


# Interjections that carry a level on their own: "네." is polite, "응." is 반말.
POLITE_INTERJECTIONS = {"네", "예", "넵", "넹", "네네", "아니요", "아뇨", "아녜요", "그쵸", "그죠"}  # 그쵸 = 그렇죠
BANMAL_INTERJECTIONS = {"응", "어", "엉", "웅", "ㅇㅇ", "ㅇㅋ", "아니", "아냐", "그치"}  # 그치 = 그렇지
_FORM_ONLY = {"넵", "넹", "ㅇㅇ", "ㅇㅋ"}  # Kiwi tags these NNG/SW, never as something else worth reading

# A question made of a noun or adverb alone ("진짜?", "어디?") is 반말; the polite form adds 요.
BARE_QUESTION_TAGS = {"NNG", "NNP", "NP", "NR", "MAG", "MAJ", "XSN"}


def interjection_level(form: str, tag: str) -> str | None:
    if tag == "IC" or form in _FORM_ONLY:
        if form in POLITE_INTERJECTIONS:
            return POLITE
        if form in BANMAL_INTERJECTIONS:
            return BANMAL
    return None


def combine(levels: Iterable[str]) -> str:
    """One label for several: both levels (or a mixed part) make ``mixed``; none make ``neutral``."""
    seen = set(levels)
    if MIXED in seen or (POLITE in seen and BANMAL in seen):
        return MIXED
    if POLITE in seen:
        return POLITE
    if BANMAL in seen:
        return BANMAL
    return NEUTRAL


def ends_question(tokens: Sequence[Any], i: int) -> bool:
    """Whether token i is the last word before a "?" (only punctuation or symbols in between)."""
    for tok in tokens[i + 1 :]:
        if tok.form == "?":
            return True
        if not is_junk(tok.tag):
            return False
    return False
