"""Korean speech level (존댓말 / 반말) of a text, and rewriting between the two.

Labels
------
- ``polite``: every counted sentence ends in 하십시오체 or 해요체
  (``-ㅂ니다``, ``-세요``, ``-어요``, ``-죠``, noun + ``요``).
- ``banmal``: every counted sentence ends in 해체 or 해라체
  (``-어``, ``-야``, ``-지``, ``-냐``, ``-자``, ``-다``, ``-거든`` ...).
- ``mixed``: polite and banmal sentences in one text.
- ``neutral``: no sentence-final predicate at all (noun phrases, lists, numbers, code).

Only the sentence-final ending decides: a subject honorific (``할머니께서 오셨어``) is still 반말.
Fenced and inline code, markdown block quotes and quoted speech (``"..."``, ``'...'``, ``“...”``,
``‘...’``, ``「...」``, ``『...』``) are not counted; a text made of nothing but a quote is judged by the quote.

Speed: the level of a sentence lives in its last few words, so only the tail of every sentence is sent
to Kiwi (one multi-threaded call per batch) and tails already seen are answered from a cache.

The converters (:func:`to_banmal`, :func:`to_polite`) edit Kiwi morphemes (endings, the honorific ``-시-``,
humble pronouns) and let ``Kiwi.join`` spell the changed words; every other character is left as written.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

POLITE, BANMAL, MIXED, NEUTRAL = "polite", "banmal", "mixed", "neutral"
LABELS = (POLITE, BANMAL, MIXED, NEUTRAL)

__all__ = [
    "POLITE",
    "BANMAL",
    "MIXED",
    "NEUTRAL",
    "LABELS",
    "classify",
    "classify_batch",
    "sentence_levels",
    "to_banmal",
    "to_banmal_batch",
    "to_polite",
    "to_polite_batch",
    "get_kiwi",
]

# How many words at the end of a sentence are analysed: the predicate and one word of context give
# Kiwi the same reading of the ending as the whole sentence does (checked on the labelled data) at about
# a third of the cost. A short last word ("에러 나", "빨리 와") gets one more word of context.
TAIL_WORDS = 2
SHORT_WORD_SYLLABLES = 2
# Sentences up to this many words are analysed whole when they may hold several sentence ends (see _tail).
RUN_ON_WORDS = 12
MAX_TAIL_CHARS = 120
_CACHE_LIMIT = 300_000

_kiwi: Any = None
_kiwi_lock = threading.Lock()
# Tail -> (levels of the sentence ends in it, ends open): see _tail_signature.
Signature = tuple[tuple[str, ...], bool]
_tail_cache: dict[str, Signature] = {}


def get_kiwi() -> Any:
    """The shared Kiwi analyser, created on first use (loading the model takes about a second)."""
    global _kiwi
    if _kiwi is None:
        with _kiwi_lock:
            if _kiwi is None:
                from kiwipiepy import Kiwi

                _kiwi = Kiwi()
    return _kiwi


# --------------------------------------------------------------------------- masking

_MASK_RE = re.compile(
    r"(?P<fence>^[ \t]*(?P<mark>`{3,}|~{3,})[^\n]*\n?.*?(?:^[ \t]*(?P=mark)[ \t]*$|\Z))"
    r"|(?P<bq>^[ \t]*>[^\n]*)"
    r"|(?P<code>``[^\n]+?``|`[^`\n]+`)"
    r"|(?P<quote>“[^”\n]*”|‘[^’\n]*’|「[^」\n]*」|『[^』\n]*』|\"[^\"\n]*\""
    r"|(?<![A-Za-z0-9'])'[^'\n]+'(?![A-Za-z]))",
    re.M | re.S,
)
_HANGUL_RE = re.compile(r"[가-힣ㄱ-ㅎㅏ-ㅣ]")


class _Masked(NamedTuple):
    text: str  # same length as the input, ignored spans blanked out so offsets still line up
    quotes: list[str]  # inner text of every quotation, for texts that are nothing but a quote


def _mask(text: str) -> _Masked:
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

    return _Masked(_MASK_RE.sub(blank, text), quotes)


# --------------------------------------------------------------------------- sentence chunks

# Markdown list items and table rows are often fragments ("- 설치하고"), so a connective ending or a
# bare "명사?" there is not read as a 반말 sentence end. Headings are titles ("## 왜 파이썬일까?"), not
# speech, and are not counted at all.
_STRUCT_RE = re.compile(r"^\s*(?:[-*+•·▪◦]\s|\d{1,3}[.)]\s|[①-⑳]|\|)")
_HEADING_RE = re.compile(r"^\s*#{1,6}\s")
_TERMINAL_RE = re.compile(r"[.!?…。‼⁉][\"'”’」』)\]]*\s*$")
_SYLLABLE_RE = re.compile(r"[가-힣]")
_BOUNDARY_RE = re.compile(
    r"[.!?…。‼⁉]+[\"'”’」』)\]]*(?=\s|$|[가-힣])"
    r"|[~～]+(?=\s|$)"
    r"|[ㅋㅎㅠㅜ]{2,}(?=\s|$)"
    r"|(?:[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\u200D]?)+(?=\s|$)"
)


class _Chunk(NamedTuple):
    text: str  # the sentence as written (ignored spans shown as "⋯")
    tail: str  # the part Kiwi analyses, see _tail
    fragment_ok: bool  # list item / table cell: a trailing connective ending is not a sentence end


def _split_sentences(piece: str) -> list[str]:
    out: list[str] = []
    pos = 0
    for m in _BOUNDARY_RE.finditer(piece):
        out.append(piece[pos : m.end()])
        pos = m.end()
    out.append(piece[pos:])
    return [s.strip() for s in out if s.strip()]


def _tail(sentence: str) -> str:
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
        tail = " ".join(words[: last + 1])
    else:
        size = TAIL_WORDS + (len(_SYLLABLE_RE.findall(words[last])) <= SHORT_WORD_SYLLABLES)
        tail = " ".join(words[max(0, last + 1 - size) : last + 1])
    # Kiwi slows down sharply on very long unbroken words ("ㅋㅋㅋ..." x 5000); an ending is at the end.
    return tail[-MAX_TAIL_CHARS:]


def _chunks(masked: str) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    for line in masked.split("\n"):
        if not _HANGUL_RE.search(line) or _HEADING_RE.match(line):
            continue
        structural = bool(_STRUCT_RE.match(line))
        pieces = line.split("|") if line.count("|") >= 2 else [line]
        for piece in pieces:
            for sent in _split_sentences(piece):
                if not _HANGUL_RE.search(sent):
                    continue
                chunks.append(_Chunk(re.sub("⋯+", "⋯", sent), _tail(sent), structural))
    return chunks


def _plan(text: str) -> list[_Chunk]:
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    masked = _mask(text)
    if not _HANGUL_RE.search(masked.text) and masked.quotes:
        # Nothing is said outside the quotation marks: the quoted words are the utterance.
        return _chunks("\n".join(_mask(q).text for q in masked.quotes))
    return _chunks(masked.text)


# --------------------------------------------------------------------------- ending levels

_POLITE_IC = {"네", "예", "넵", "넹", "네네", "아니요", "아뇨", "아녜요", "그쵸", "그죠"}  # 그쵸 = 그렇죠
_BANMAL_IC = {"응", "어", "엉", "웅", "ㅇㅇ", "ㅇㅋ", "아니", "아냐", "그치"}  # 그치 = 그렇지
_FORM_ONLY_IC = {"넵", "넹", "ㅇㅇ", "ㅇㅋ"}  # Kiwi tags these NNG/SW, never as something else worth reading


def _base_tag(tag: str) -> str:
    """Drop the regularity mark Kiwi puts on verb tags: "VV-I" -> "VV"."""
    return tag.split("-")[0]


def _is_junk(tag: str) -> bool:
    """Punctuation, symbols, emoji, URLs, stray jamo: nothing that carries speech level."""
    return (tag[0] == "S" and tag not in ("SL", "SH", "SN")) or tag.startswith(("W_", "Z_"))


def _ending_level(form: str) -> str:
    """Speech level of a sentence-final ending (EF) as Kiwi spells it."""
    if form.endswith(("요", "죠")):
        return POLITE  # 해요체: 어요, 세요, 나요, ㄹ까요, 네요, 죠 ...
    if form[0] in "ᆸ습읍":
        return POLITE  # 하십시오체: ㅂ니다, 습니까, ㅂ시오, ㅂ시다
    if form in ("오", "소", "으오", "구려", "으구려"):
        return POLITE  # 하오체 ("주의하시오") is not 반말
    return BANMAL


def _is_polite_final(form: str) -> bool:
    """A polite sentence ending even where Kiwi tags it EC ("궁금합니다:", "될까요ㅋㅋ")."""
    return form.endswith(("요", "죠")) or (form[0] in "ᆸ습" and form.endswith(("니다", "니까")))


# A question made of a noun or adverb alone ("진짜?", "어디?") is 반말; the polite form adds 요.
_BARE_QUESTION_TAGS = {"NNG", "NNP", "NP", "NR", "MAG", "MAJ", "XSN"}


def _interjection_level(form: str, tag: str) -> str | None:
    if tag == "IC" or form in _FORM_ONLY_IC:
        if form in _POLITE_IC:
            return POLITE
        if form in _BANMAL_IC:
            return BANMAL
    return None


def _tail_signature(tokens: Sequence[Any], tail: str) -> Signature:
    """Levels of the sentence ends found in one analysed tail, and whether it ends open.

    "Open" means a 반말 sentence left without a final ending: on a connective ("비가 와서.", "가는
    중인데") or a bare noun asked as a question ("진짜?"). That counts as 반말 in running text but not in
    a list item, so the caller decides.
    """
    content = [t for t in tokens if not _is_junk(t.tag)]
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
            levels.append(_ending_level(tok.form))
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
            if _is_polite_final(last.form):
                levels.append(POLITE)  # Kiwi sometimes tags "-ㄹ까요" or "-ㅂ니다:" as EC
            else:
                # Not before ":" or "," ("예를 들어:"), where the sentence goes on.
                open_end = not stripped.endswith((":", ",", ";"))
        elif not levels:
            ic = _interjection_level(last.form, last.tag)
            if ic is not None:
                levels.append(ic)
            elif last.tag == "IC" and len(last.form) > 1 and last.form.endswith("요"):
                levels.append(POLITE)  # "천만에요", "아니에요" read as one interjection
            elif stripped.endswith("?") and _base_tag(last.tag) in _BARE_QUESTION_TAGS:
                open_end = True
    return tuple(levels), open_end


def _combine(levels: Iterable[str]) -> str:
    seen = set(levels)
    if MIXED in seen or (POLITE in seen and BANMAL in seen):
        return MIXED
    if POLITE in seen:
        return POLITE
    if BANMAL in seen:
        return BANMAL
    return NEUTRAL


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


def _chunk_level(chunk: _Chunk, signatures: dict[str, Signature]) -> str:
    levels, open_end = signatures[chunk.tail]
    if open_end and not chunk.fragment_ok:
        levels = (*levels, BANMAL)
    return _combine(levels)


# --------------------------------------------------------------------------- public: classification


def classify_batch(texts: list[str], batch_size: int = 256) -> list[str]:
    """Label every text (see module doc); gives exactly what :func:`classify` gives, many times faster."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    labels: list[str] = []
    for start in range(0, len(texts), batch_size):
        plans = [_plan(t) for t in texts[start : start + batch_size]]
        signatures = _signatures(c.tail for plan in plans for c in plan)
        labels.extend(_combine(_chunk_level(c, signatures) for c in plan) for plan in plans)
    return labels


def classify(text: str) -> str:
    """``polite``, ``banmal``, ``mixed`` or ``neutral`` for one text."""
    return classify_batch([text])[0]


def sentence_levels(text: str) -> list[tuple[str, str]]:
    """``(sentence, label)`` for each sentence that has a speech level, in order; for reports.

    Ignored spans (code, quotes) appear as ``⋯``. A sentence label is ``mixed`` only when Kiwi finds
    two differently-levelled sentence ends with no punctuation between them.
    """
    plan = _plan(text)
    signatures = _signatures(c.tail for c in plan)
    out = []
    for chunk in plan:
        level = _chunk_level(chunk, signatures)
        if level != NEUTRAL:
            out.append((chunk.text, level))
    return out


# --------------------------------------------------------------------------- conversion

Morph = tuple[str, str]

# Nouns that mark a third person as the subject of an honoured action: with them the -시- stays
# ("할머니께서 오셨어요?" -> "할머니께서 오셨어?"); without them it is the listener's action and goes.
_ELDER_NOUNS = {
    "할머니", "할아버지", "어머니", "아버지", "어머님", "아버님", "엄마", "아빠", "부모", "선생", "교수",
    "사장", "부장", "과장", "팀장", "선배", "어르신", "손님", "고객", "분", "그분", "이분", "저분", "이모",
    "고모", "삼촌", "외삼촌", "형님",
}
_SUBJECT_PARTICLES = {"이", "가", "은", "는", "도", "께서"}
# Kiwi misreads a few honorific verbs before "-세요" ("계세요" as 계/NNG+이/VCP); read them as the verbs.
_MISREAD_HONORIFIC = {("계", "NNG"): ("계시", "VV"), ("주무", "NNG"): ("주무시", "VV"), ("드세", "VA"): ("드시", "VV")}
_INTERROGATIVE_POLITE = {"어요", "습니까", "ᆸ니까"}
_DECLARATIVE_POLITE = {"어요", "습니다", "ᆸ니다"}


def _misread_honorific(tokens: Sequence[Any], content: list[int], pos: int) -> bool:
    """계/NNG + 이/VCP + 세요/EF is "계세요"; 드세/VA + 어요/EF is "드세요". Anything else is the real word."""
    follow = [tokens[j] for j in content[pos + 1 : pos + 3]]
    if tokens[content[pos]].tag.startswith("NN"):
        return len(follow) == 2 and follow[0].tag == "VCP" and follow[1].form in ("세요", "셨")
    return len(follow) >= 1 and follow[0].tag == "EF" and follow[0].form == "어요"


def _ends_question(tokens: Sequence[Any], i: int) -> bool:
    for tok in tokens[i + 1 :]:
        if tok.form == "?":
            return True
        if not _is_junk(tok.tag):
            return False
    return False


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


def _prev_kept(new: list[list[Morph] | None], tokens: Sequence[Any], i: int) -> Morph | None:
    """The morpheme right before token i after earlier edits (skipping deleted ones)."""
    for j in range(i - 1, -1, -1):
        repl = new[j]
        if repl is None:
            return tokens[j].form, tokens[j].tag
        if repl:
            return repl[-1]
    return None


# Polite endings whose 해체 form is the plain "-어" (or "-야" after the copula).
_PLAIN_IN_BANMAL = {"어요", "에요", "예요", "이에요", "나요", "ᆫ가요", "은가요", "는가요", "ᆫ가", "은가", "는가"}


def _banmal_ending(form: str, prev: Morph | None, keep_honorific: bool) -> list[Morph]:
    copula = prev is not None and _base_tag(prev[1]) in ("VCP", "VCN")
    plain = "야" if copula else "어"
    if form in ("세요", "으세요"):  # "-세요" carries the honorific -시- inside it
        return [("시", "EP"), ("어", "EF")] if keep_honorific else [(plain, "EF")]
    if form in ("ᆸ시다", "읍시다"):
        return [("자", "EF")]
    if form in ("죠", "지요"):
        return [("지", "EF")]
    if form.endswith("군요"):
        return [(form[:-2] + "구나", "EF")]
    if form == "더라고요":
        return [("더라", "EF")]
    if form in _PLAIN_IN_BANMAL or form[0] in "ᆸ습읍":
        return [(plain, "EF")]  # 해요체 / 하십시오체 statement, question or order -> 해체
    if form.endswith("요"):
        return [(form[:-1], "EF")]  # ㄹ까요, ㄹ래요, ㄹ게요, 네요, 거든요, 잖아요, 는데요 ...
    if form in ("오", "으오"):
        return [(plain, "EF")]
    return [(form, "EF")]


def _sentences(tokens: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
    """Per sentence: the indices of all its tokens, and of those that can carry speech level (see _is_junk)."""
    sentences: dict[int, list[int]] = {}
    for i, tok in enumerate(tokens):
        sentences.setdefault(tok.sent_position, []).append(i)
    return [(idx, [i for i in idx if not _is_junk(tokens[i].tag)]) for idx in sentences.values()]


def _banmal_edits(tokens: Sequence[Any], text: str) -> list[list[Morph] | None]:
    """Per token: None to keep it, else its replacement morphemes (possibly none)."""
    new: list[list[Morph] | None] = [None] * len(tokens)
    for idx, content in _sentences(tokens):
        honoured = _honoured_span(tokens, idx)
        for pos, i in enumerate(content):
            if new[i] is not None:
                continue  # already rewritten together with the token before it
            tok, tag = tokens[i], _base_tag(tokens[i].tag)
            keep = i in honoured
            nxt = tokens[content[pos + 1]] if pos + 1 < len(content) else None
            if (tok.form, tag) == ("계세", "NNG") and nxt is not None and nxt.form == "요":
                new[i], new[content[pos + 1]] = [("계시", "VV")], [("어", "EF")]  # "댁에 계세요" misread as a noun
                continue
            if (tok.form, tag) in _MISREAD_HONORIFIC and _misread_honorific(tokens, content, pos):
                new[i] = [_MISREAD_HONORIFIC[tok.form, tag]]
                if nxt is not None and nxt.tag == "VCP":
                    new[content[pos + 1]] = []
                continue
            if tag == "EP" and tok.form in ("시", "으시") and not keep:
                new[i] = []
            elif tok.form in ("요", "이요") and pos > 0:
                new[i] = []  # "왜요" -> "왜", "와서요" -> "와서", "학생이요?" -> "학생?"
                prev = tokens[content[pos - 1]]
                if prev.tag == "VCP" and text[prev.start : prev.end] != "이":
                    new[content[pos - 1]] = []  # "커피요" is 커피+이+요 with the 이 unwritten
            elif tag == "EF" or (tag == "EC" and _is_polite_final(tok.form)):
                polite_here = _ending_level(tok.form) == POLITE or (nxt is not None and nxt.form == "요")
                if not polite_here:
                    continue
                eps = content[:pos]
                # "봐 주시겠어요?" / "해 주시겠습니까?" is a request: "봐 줄래?"
                if (
                    not keep
                    and tok.form in _INTERROGATIVE_POLITE
                    and _ends_question(tokens, i)
                    and len(eps) >= 3
                    and tokens[eps[-1]].form == "겠"
                    and tokens[eps[-2]].form in ("시", "으시")
                    and _base_tag(tokens[eps[-3]].tag) in ("VV", "VX")
                ):
                    new[eps[-1]] = []
                    new[eps[-2]] = []
                    new[i] = [("ᆯ래", "EF")]
                else:
                    prev = _prev_kept(new, tokens, i)
                    new[i] = _banmal_ending(tok.form, prev, keep)
                    before = content[pos - 1] if pos > 0 else None
                    dropped_si = before is not None and new[before] == [] and tokens[before].form in ("시", "으시")
                    if tok.form == "죠" and dropped_si and not _ends_question(tokens, i):
                        new[i] = [("자", "EF")]  # "여기까지 하시죠." is a proposal: "여기까지 하자."
                    elif (
                        pos > 0
                        and (tokens[content[pos - 1]].form, tokens[content[pos - 1]].tag) == ("드리", "VX")
                        and tok.form in _DECLARATIVE_POLITE
                        and not _ends_question(tokens, i)
                    ):
                        new[i] = [("ᆯ게", "EF")]  # "권해 드립니다" -> "권해 줄게", not the request "권해 줘"
            elif tag == "NP" and tok.form == "저":
                following = nxt.form if nxt is not None else ""
                if nxt is not None and nxt.tag == "JKG":  # "제" (저+의) -> "내"
                    new[i], new[content[pos + 1]] = [("내", "NP")], []
                elif following == "가" and nxt is not None and nxt.tag == "JKS":
                    new[i] = [("내", "NP")]  # "제가" -> "내가"
                else:
                    new[i] = [("나", "NP")]
            elif tag == "NP" and tok.form == "저희":
                new[i] = [("우리", "NP")]
            elif tag == "VX" and tok.form == "드리":
                new[i] = [("주", "VX")]  # "알려 드릴까요" -> "알려 줄까"
            elif tag == "IC" and tok.form in ("네", "예"):
                new[i] = [("응", "IC")]
            elif tag == "IC" and tok.form in ("아니요", "아뇨"):
                new[i] = [("아니", "IC")]
            elif tag == "IC" and tok.form in ("그쵸", "그죠"):
                new[i] = [("그치", "IC")]
            elif tag == "IC" and len(tok.form) > 2 and tok.form.endswith("요"):
                new[i] = [(tok.form[:-1], "IC")]  # "그럼요" -> "그럼", "천만에요" -> "천만에"
        _greeting_to_banmal(tokens, content, new)
    return new


def _greeting_to_banmal(tokens: Sequence[Any], content: list[int], new: list[list[Morph] | None]) -> None:
    """ "안녕하세요" / "안녕하십니까" -> "안녕": the 반말 greeting drops the verb altogether."""
    for pos, i in enumerate(content[:-2]):
        if tokens[i].form != "안녕" or tokens[content[pos + 1]].form != "하":
            continue
        rest = content[pos + 1 :]
        end = next((j for j in rest if tokens[j].tag == "EF"), None)
        if end is None or any(tokens[j].tag == "EP" and tokens[j].form == "었" for j in rest if j < end):
            continue
        if _ending_level(tokens[end].form) == POLITE:
            for j in rest:
                new[j] = []
                if j == end:
                    break


_POLITE_BY_BANMAL = {
    "어": "어요", "아": "어요", "여": "어요", "니": "어요", "냐": "어요", "느냐": "어요", "으냐": "어요",
    "ᆫ다": "어요", "는다": "어요", "다": "어요", "자": "어요", "자꾸나": "어요", "지": "죠",
    "구나": "군요", "는구나": "는군요", "로구나": "로군요", "군": "군요", "는군": "는군요",
    "더라": "더라고요", "다며": "다면서요", "다면서": "다면서요", "마": "ᆯ게요", "으마": "ᆯ게요",
}
_COMMANDS = {"어라", "아라", "거라", "너라", "라", "으라", "렴", "으렴", "려무나", "으려무나"}
_NO_YO_CONNECTIVES = {"게", "도록", "듯", "듯이"}  # "-게" is 하게체 or adverbial; adding 요 is wrong


def _polite_ending(form: str, prev: Morph | None, copula_surface: bool) -> list[Morph]:
    copula = prev is not None and _base_tag(prev[1]) in ("VCP", "VCN")
    if form in _COMMANDS:
        return [("세요", "EF")]
    if copula and form in ("야", "다", "냐", "니", "어", "이야"):
        if prev is not None and _base_tag(prev[1]) == "VCN":
            return [("에요", "EF")]
        # Kiwi spells "수도+이+에요" as "수도에요"; standard spelling after a vowel is "수도예요".
        return [("에요" if copula_surface else "예요", "EF")]
    if form in _POLITE_BY_BANMAL:
        return [(_POLITE_BY_BANMAL[form], "EF")]
    if form.endswith("요") or _ending_level(form) == POLITE:
        return [(form, "EF")]
    return [(form + "요", "EF")]  # ㄹ게, ㄹ래, ㄹ까, 네, 거든, 잖아, 는데, 대, 래 ...


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)]


def _polite_edits(tokens: Sequence[Any], text: str) -> list[list[Morph] | None]:
    new: list[list[Morph] | None] = [None] * len(tokens)
    for _, content in _sentences(tokens):
        if not content:
            continue
        has_ending = False
        for pos, i in enumerate(content):
            tok, tag = tokens[i], _base_tag(tokens[i].tag)
            nxt = tokens[content[pos + 1]] if pos + 1 < len(content) else None
            is_last = pos == len(content) - 1
            if tag == "EF" or (tag == "EC" and is_last):
                has_ending = True
                if nxt is not None and nxt.form == "요":
                    continue
                if tag == "EC" and tok.form in _NO_YO_CONNECTIVES:
                    continue
                if tag == "EC" and tok.form not in _POLITE_BY_BANMAL and tok.form not in _COMMANDS:
                    if not tok.form.endswith("요") and not _STRUCT_RE.match(_line_at(text, tok.start)):
                        new[i] = [(tok.form, "EC"), ("요", "JX")]  # "와서" -> "와서요"; not in "- 설치하고"
                    continue
                if _ending_level(tok.form) == POLITE:
                    continue
                prev = _prev_kept(new, tokens, i)
                surface = i > 0 and tokens[i - 1].tag == "VCP" and text[tokens[i - 1].start : tokens[i - 1].end] == "이"
                new[i] = _polite_ending(tok.form, prev, surface)
                if new[i] == [("어요", "EF")] and prev == ("시", "EP") and new[i - 1] is None:
                    new[i - 1], new[i] = [], [("세요", "EF")]  # "오셔" -> "오세요", not "오셔요"
            elif tag == "NP" and tok.form == "나":
                if nxt is not None and nxt.tag == "JKS" and nxt.form == "가":
                    new[i] = [("제", "NP")]  # "내가" -> "제가"
                else:
                    new[i] = [("저", "NP")]
            elif tok.form == "내" and tag in ("NP", "MM"):
                new[i] = [("제", tag)]
            elif tag == "IC" and tok.form in ("응", "어", "엉", "웅"):
                new[i] = [("네", "IC")]
            elif tag == "IC" and tok.form in ("아니", "아냐"):
                new[i] = [("아니요", "IC")]
        last = content[-1]
        # "진짜?" -> "진짜요?": a bare noun or adverb asked as a question takes the polite particle.
        bare_question = _ends_question(tokens, last) and _base_tag(tokens[last].tag) in _BARE_QUESTION_TAGS
        if not has_ending and bare_question and new[last] is None:
            new[last] = [(tokens[last].form, tokens[last].tag), ("요", "JX")]
    return new


def _apply_edits(original: str, masked: str, tokens: Sequence[Any], new: list[list[Morph] | None]) -> str:
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
        core = [i for i in members if not _is_junk(tokens[i].tag)]
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


_CANDIDATES = 3
_ENDING_HOSTS = ("V", "XSV", "XSA", "E")  # what an ending may follow inside a word: a predicate or another ending


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


def _convert_batch(texts: list[str], to: str) -> list[str]:
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"expected str, got {type(t).__name__}")
    masked = [_mask(t).text for t in texts]
    korean = [i for i, m in enumerate(masked) if _HANGUL_RE.search(m)]
    out = list(texts)
    if not korean:
        return out
    kiwi = get_kiwi()
    for i, tokens in zip(korean, kiwi.tokenize([masked[i] for i in korean]), strict=True):
        if not _is_well_formed(tokens):
            tokens = _well_formed(kiwi.analyze(masked[i], top_n=_CANDIDATES))
        edits = _banmal_edits(tokens, masked[i]) if to == BANMAL else _polite_edits(tokens, masked[i])
        out[i] = _apply_edits(texts[i], masked[i], tokens, edits)
    return out


def to_banmal_batch(texts: list[str]) -> list[str]:
    """:func:`to_banmal` for many texts with one Kiwi call."""
    return _convert_batch(texts, BANMAL)


def to_banmal(text: str) -> str:
    """Rewrite 존댓말 as 반말 (해체): ``설명해 주세요`` -> ``설명해 줘``, ``어디 가세요?`` -> ``어디 가?``.

    Content words stay as they are; the listener's honorific -시- is dropped unless a third person is the
    honoured subject (``께서``, ``할머니가`` ...); 저/제/저희 become 나/내/우리; code and quotes are untouched.
    """
    return _convert_batch([text], BANMAL)[0]


def to_polite_batch(texts: list[str]) -> list[str]:
    """:func:`to_polite` for many texts with one Kiwi call."""
    return _convert_batch(texts, POLITE)


def to_polite(text: str) -> str:
    """Rewrite 반말 as 해요체: ``밥 먹었어?`` -> ``밥 먹었어요?``, ``수도다.`` -> ``수도예요.``

    Sentences already polite are left alone, so it repairs an almost-polite answer in place.
    """
    return _convert_batch([text], POLITE)[0]
