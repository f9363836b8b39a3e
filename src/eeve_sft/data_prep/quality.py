"""Quality filters: length, special-character ratio, repetition and Hangul ratio.

Each measure is a plain function of a text, so it can be tested and reused alone; :func:`quality_problem`
applies the ones a mix switches on and names the first that fails. Fenced code blocks are left out of the
ratio and repetition measures: code is legitimately full of symbols, Latin letters and repeated lines.
"""

from __future__ import annotations

import re

from .mix import QualityStage
from .normalise import Messages, turns_of

USER_TOO_SHORT = "user_too_short"
USER_TOO_LONG = "user_too_long"
ASSISTANT_TOO_SHORT = "assistant_too_short"
ASSISTANT_TOO_LONG = "assistant_too_long"
SPECIAL_CHARS = "special_char_ratio"
REPEATED_LINES = "repeated_lines"
REPEATED_NGRAMS = "repeated_ngrams"
LOW_HANGUL = "low_hangul_ratio"

_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.S)
# Letters, digits, whitespace and the punctuation of ordinary prose are not special.
_SPECIAL = re.compile(r"[^\w\s.,!?'\"()\-:;%~·…“”‘’]|_")
_NON_SPACE = re.compile(r"\S")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
MIN_LINE_CHARS = 4  # shorter lines ("-", "---", "1.") repeat naturally


def prose(text: str) -> str:
    """`text` without fenced code blocks."""
    return _FENCED_CODE.sub(" ", text) if "```" in text else text


def special_char_ratio(text: str) -> float:
    """Share of non-space characters that are neither letters, digits nor ordinary punctuation."""
    non_space = len(_NON_SPACE.findall(text))
    return len(_SPECIAL.findall(text)) / non_space if non_space else 0.0


def hangul_ratio(text: str) -> float | None:
    """Share of letters that are Hangul; None when the text has no letters to judge."""
    letters = sum(map(str.isalpha, text))
    return len(_HANGUL.findall(text)) / letters if letters else None


def repeated_line_ratio(text: str) -> float:
    """Share of lines (of at least MIN_LINE_CHARS characters) that repeat an earlier line."""
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if len(line) >= MIN_LINE_CHARS]
    return 1 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0


def repeated_ngram_ratio(text: str, n: int, min_ngrams: int) -> float:
    """Share of word n-grams that repeat an earlier one; 0 for texts with fewer than `min_ngrams` n-grams."""
    words = text.split()
    total = len(words) - n + 1
    if total < min_ngrams:
        return 0.0
    ngrams = {tuple(words[i : i + n]) for i in range(total)}
    return 1 - len(ngrams) / total


def quality_problem(messages: Messages, settings: QualityStage) -> str | None:
    """The first filter `messages` fails, or None when it passes them all."""
    if not settings.enabled:
        return None
    users, answers = turns_of(messages, "user"), turns_of(messages, "assistant")

    length = settings.length
    if length.enabled:
        for text in users:
            if len(text) < length.min_user_chars:
                return USER_TOO_SHORT
            if len(text) > length.max_user_chars:
                return USER_TOO_LONG
        for text in answers:
            if len(text) < length.min_assistant_chars:
                return ASSISTANT_TOO_SHORT
            if len(text) > length.max_assistant_chars:
                return ASSISTANT_TOO_LONG

    answer_prose = [prose(text) for text in answers]
    if settings.special_chars.enabled:
        combined = "\n".join([prose(text) for text in users] + answer_prose)
        if special_char_ratio(combined) > settings.special_chars.max_ratio:
            return SPECIAL_CHARS

    repetition = settings.repetition
    if repetition.enabled:
        for text in answer_prose:
            if repeated_line_ratio(text) > repetition.max_repeated_line_ratio:
                return REPEATED_LINES
            ngram_ratio = repeated_ngram_ratio(text, repetition.ngram_size, repetition.min_ngrams)
            if ngram_ratio > repetition.max_repeated_ngram_ratio:
                return REPEATED_NGRAMS

    hangul = settings.hangul
    if hangul.enabled:
        texts = (answer_prose if "assistant" in hangul.roles else []) + (
            [prose(text) for text in users] if "user" in hangul.roles else []
        )
        ratio = hangul_ratio("\n".join(texts))
        if ratio is not None and ratio < hangul.min_ratio:
            return LOW_HANGUL
    return None
