"""Rewriting 존댓말 as 반말 (해체).

Endings become 해체, the listener's honorific -시- goes (it stays where a third person is the honoured
subject), humble words become plain ones (저/제/저희 -> 나/내/우리, 드리다 -> 주다) and polite interjections
their 반말 ones. Content words are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .levels import POLITE, Morph, base_tag, ending_level, ends_question, is_polite_final
from .rewrite import Edits, prev_kept, rewrite_batch, token_sentences

# Nouns that mark a third person as the subject of an honoured action: with them the -시- stays
# ("할머니께서 오셨어요?" -> "할머니께서 오셨어?"); without them it is the listener's action and goes.
_ELDER_NOUNS = {
    "할머니", "할아버지", "어머니", "아버지", "어머님", "아버님", "엄마", "아빠", "부모", "선생", "교수",
    "사장", "부장", "과장", "팀장", "선배", "어르신", "손님", "고객", "분", "그분", "이분", "저분", "이모",
    "고모", "삼촌", "외삼촌", "형님",
}  # fmt: skip
_SUBJECT_PARTICLES = {"이", "가", "은", "는", "도", "께서"}
_HONORIFIC_SI = ("시", "으시")
# Kiwi misreads a few honorific verbs before "-세요" ("계세요" as 계/NNG+이/VCP); read them as the verbs.
_MISREAD_HONORIFIC = {("계", "NNG"): ("계시", "VV"), ("주무", "NNG"): ("주무시", "VV"), ("드세", "VA"): ("드시", "VV")}
_INTERROGATIVE_POLITE = {"어요", "습니까", "ᆸ니까"}
_DECLARATIVE_POLITE = {"어요", "습니다", "ᆸ니다"}

# Words whose 반말 form is another word wherever they stand: (form, tag) -> replacement.
_BANMAL_WORDS: dict[Morph, Morph] = {
    ("저희", "NP"): ("우리", "NP"),
    ("드리", "VX"): ("주", "VX"),  # "알려 드릴까요" -> "알려 줄까"
    ("네", "IC"): ("응", "IC"),
    ("예", "IC"): ("응", "IC"),
    ("아니요", "IC"): ("아니", "IC"),
    ("아뇨", "IC"): ("아니", "IC"),
    ("그쵸", "IC"): ("그치", "IC"),
    ("그죠", "IC"): ("그치", "IC"),
}
# Polite endings with one fixed 해체 form.
_BANMAL_ENDINGS = {"ᆸ시다": "자", "읍시다": "자", "죠": "지", "지요": "지", "더라고요": "더라"}
# Polite endings whose 해체 form is the plain "-어" (or "-야" after the copula); so is every 하십시오체 ending.
_PLAIN_IN_BANMAL = {
    "어요", "에요", "예요", "이에요", "나요", "ᆫ가요", "은가요", "는가요", "ᆫ가", "은가", "는가", "오", "으오",
}  # fmt: skip


def _misread_honorific(tokens: Sequence[Any], content: list[int], pos: int) -> bool:
    """계/NNG + 이/VCP + 세요/EF is "계세요"; 드세/VA + 어요/EF is "드세요". Anything else is the real word."""
    follow = [tokens[j] for j in content[pos + 1 : pos + 3]]
    if tokens[content[pos]].tag.startswith("NN"):
        return len(follow) == 2 and follow[0].tag == "VCP" and follow[1].form in ("세요", "셨")
    return len(follow) >= 1 and follow[0].tag == "EF" and follow[0].form == "어요"


def _honoured_span(tokens: Sequence[Any], idx: list[int]) -> set[int]:
    """Token indices where a -시- honours a third person, so it stays in 반말.

    The span runs from an honoured subject ("할머니께서", "선생님이", "그분은") to the end of the
    sentence, or to the end of a relative clause when the subject sits inside one: in "선생님께서
    내주신 숙제인데 풀어 주시겠어요?" only 내주신 is the teacher's; 주시겠어요 is the listener's.
    """
    span: set[int] = set()
    open_ = False
    for k, i in enumerate(idx):
        tok = tokens[i]
        if open_:
            span.add(i)
            if tok.tag == "ETM":
                open_ = False
        nxt = tokens[idx[k + 1]] if k + 1 < len(idx) else None
        honoured = (tok.tag.startswith(("NN", "NP")) and tok.form in _ELDER_NOUNS) or (
            tok.tag == "XSN" and tok.form == "님"
        )
        if tok.form == "께서" or (
            honoured and nxt is not None and nxt.tag.startswith("J") and nxt.form in _SUBJECT_PARTICLES
        ):
            open_ = True
    return span


def _banmal_ending(form: str, prev: Morph | None, keep_honorific: bool) -> list[Morph]:
    copula = prev is not None and base_tag(prev[1]) in ("VCP", "VCN")
    plain = "야" if copula else "어"
    if form in ("세요", "으세요"):  # "-세요" carries the honorific -시- inside it
        return [("시", "EP"), ("어", "EF")] if keep_honorific else [(plain, "EF")]
    if form in _BANMAL_ENDINGS:
        return [(_BANMAL_ENDINGS[form], "EF")]
    if form.endswith("군요"):
        return [(form[:-2] + "구나", "EF")]
    if form in _PLAIN_IN_BANMAL or form[0] in "ᆸ습읍":
        return [(plain, "EF")]  # 해요체 / 하십시오체 statement, question or order -> 해체
    if form.endswith("요"):
        return [(form[:-1], "EF")]  # ㄹ까요, ㄹ래요, ㄹ게요, 네요, 거든요, 잖아요, 는데요 ...
    return [(form, "EF")]


def _rewrite_ending(tokens: Sequence[Any], content: list[int], pos: int, keep: bool, new: Edits) -> None:
    """A polite sentence ending (token content[pos]) and, for requests, the -시겠- before it."""
    i = content[pos]
    tok = tokens[i]
    eps = content[:pos]
    # "봐 주시겠어요?" / "해 주시겠습니까?" is a request: "봐 줄래?"
    if (
        not keep
        and tok.form in _INTERROGATIVE_POLITE
        and ends_question(tokens, i)
        and len(eps) >= 3
        and tokens[eps[-1]].form == "겠"
        and tokens[eps[-2]].form in _HONORIFIC_SI
        and base_tag(tokens[eps[-3]].tag) in ("VV", "VX")
    ):
        new[eps[-1]] = []
        new[eps[-2]] = []
        new[i] = [("ᆯ래", "EF")]
        return
    new[i] = _banmal_ending(tok.form, prev_kept(new, tokens, i), keep)
    before = content[pos - 1] if pos > 0 else None
    dropped_si = before is not None and new[before] == [] and tokens[before].form in _HONORIFIC_SI
    if tok.form == "죠" and dropped_si and not ends_question(tokens, i):
        new[i] = [("자", "EF")]  # "여기까지 하시죠." is a proposal: "여기까지 하자."
    elif (
        before is not None
        and (tokens[before].form, tokens[before].tag) == ("드리", "VX")
        and tok.form in _DECLARATIVE_POLITE
        and not ends_question(tokens, i)
    ):
        new[i] = [("ᆯ게", "EF")]  # "권해 드립니다" -> "권해 줄게", not the request "권해 줘"


def _first_person(tokens: Sequence[Any], content: list[int], pos: int, new: Edits) -> None:
    """Humble 저 -> 나; 제 (저+의) and 제가 -> 내, 내가."""
    i = content[pos]
    nxt = tokens[content[pos + 1]] if pos + 1 < len(content) else None
    if nxt is not None and nxt.tag == "JKG":
        new[i], new[content[pos + 1]] = [("내", "NP")], []
    elif nxt is not None and nxt.form == "가" and nxt.tag == "JKS":
        new[i] = [("내", "NP")]
    else:
        new[i] = [("나", "NP")]


def _greeting_to_banmal(tokens: Sequence[Any], content: list[int], new: Edits) -> None:
    """ "안녕하세요" / "안녕하십니까" -> "안녕": the 반말 greeting drops the verb altogether."""
    for pos, i in enumerate(content[:-2]):
        if tokens[i].form != "안녕" or tokens[content[pos + 1]].form != "하":
            continue
        rest = content[pos + 1 :]
        end = next((j for j in rest if tokens[j].tag == "EF"), None)
        if end is None or any(tokens[j].tag == "EP" and tokens[j].form == "었" for j in rest if j < end):
            continue
        if ending_level(tokens[end].form) == POLITE:
            for j in rest:
                new[j] = []
                if j == end:
                    break


def banmal_edits(tokens: Sequence[Any], text: str) -> Edits:
    """Per token: None to keep it, else its 반말 replacement morphemes (possibly none)."""
    new: Edits = [None] * len(tokens)
    for idx, content in token_sentences(tokens):
        honoured = _honoured_span(tokens, idx)
        for pos, i in enumerate(content):
            if new[i] is not None:
                continue  # already rewritten together with the token before it
            tok, tag = tokens[i], base_tag(tokens[i].tag)
            keep = i in honoured
            nxt = tokens[content[pos + 1]] if pos + 1 < len(content) else None
            if (tok.form, tag) == ("계세", "NNG") and nxt is not None and nxt.form == "요":
                new[i], new[content[pos + 1]] = [("계시", "VV")], [("어", "EF")]  # "댁에 계세요" misread as a noun
            elif (tok.form, tag) in _MISREAD_HONORIFIC and _misread_honorific(tokens, content, pos):
                new[i] = [_MISREAD_HONORIFIC[tok.form, tag]]
                if nxt is not None and nxt.tag == "VCP":
                    new[content[pos + 1]] = []
            elif tag == "EP" and tok.form in _HONORIFIC_SI:
                if not keep:
                    new[i] = []
            elif tok.form in ("요", "이요") and pos > 0:
                new[i] = []  # "왜요" -> "왜", "와서요" -> "와서", "학생이요?" -> "학생?"
                prev = tokens[content[pos - 1]]
                if prev.tag == "VCP" and text[prev.start : prev.end] != "이":
                    new[content[pos - 1]] = []  # "커피요" is 커피+이+요 with the 이 unwritten
            elif tag == "EF" or (tag == "EC" and is_polite_final(tok.form)):
                if ending_level(tok.form) == POLITE or (nxt is not None and nxt.form == "요"):
                    _rewrite_ending(tokens, content, pos, keep, new)
            elif (tok.form, tag) == ("저", "NP"):
                _first_person(tokens, content, pos, new)
            elif (tok.form, tag) in _BANMAL_WORDS:
                new[i] = [_BANMAL_WORDS[tok.form, tag]]
            elif tag == "IC" and len(tok.form) > 2 and tok.form.endswith("요"):
                new[i] = [(tok.form[:-1], "IC")]  # "그럼요" -> "그럼", "천만에요" -> "천만에"
        _greeting_to_banmal(tokens, content, new)
    return new


def to_banmal_batch(texts: list[str]) -> list[str]:
    """:func:`to_banmal` for many texts with one Kiwi call."""
    return rewrite_batch(texts, banmal_edits)


def to_banmal(text: str) -> str:
    """Rewrite 존댓말 as 반말 (해체): ``설명해 주세요`` -> ``설명해 줘``, ``어디 가세요?`` -> ``어디 가?``.

    Content words stay as they are; the listener's honorific -시- is dropped unless a third person is the
    honoured subject (``께서``, ``할머니가`` ...); 저/제/저희 become 나/내/우리; code and quotes are untouched.
    """
    return to_banmal_batch([text])[0]
