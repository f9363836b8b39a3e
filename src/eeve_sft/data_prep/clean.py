"""Text clean-up: Unicode NFC, whitespace, and stray HTML tags and entities.

Code is left as written: fenced blocks (```) and inline code spans keep their spacing and any HTML inside
them, because an answer that explains HTML must keep its tags.
"""

from __future__ import annotations

import html
import re
import unicodedata

from .mix import CleanStage
from .normalise import Messages

# Fenced code blocks (an unclosed fence runs to the end) and inline code spans.
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.S)

_HTML_TAG_NAMES = (
    "a abbr address article aside b big blockquote body br caption center cite code dd del details div dl dt "
    "em figcaption figure font footer h1 h2 h3 h4 h5 h6 head header hr html i img ins kbd label li link main "
    "mark meta nav ol p pre s section small span strike strong sub summary sup table tbody td tfoot th thead "
    "title tr tt u ul"
).split()
# Only real HTML tag names: `a < b`, `List<T>` and `<사용자 이름>` are not tags.
_TAG = re.compile(r"</?(?:{})(?:\s[^<>]*)?/?>".format("|".join(_HTML_TAG_NAMES)), re.I)
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-6]|blockquote)\s*>", re.I)
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

_SPACE_LIKE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INVISIBLE = re.compile(r"[\u200b\u200d\u2060\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_INNER_RUN = re.compile(r"(?<=\S)[ \t]{2,}")  # runs after text; indentation at line start is kept
_BLANK_LINES = re.compile(r"\n{3,}")


def _outside_code(text: str, fix) -> str:
    """Apply `fix` to the parts of `text` that are not code."""
    if "`" not in text:
        return fix(text)
    parts, last = [], 0
    for match in _CODE.finditer(text):
        parts.append(fix(text[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(fix(text[last:]))
    return "".join(parts)


def strip_html(text: str) -> str:
    """Remove stray HTML tags (line-breaking ones become newlines) and decode HTML entities."""
    if "<" in text:
        text = _SCRIPT_OR_STYLE.sub("", text)
        text = _COMMENT.sub("", text)
        text = _LINE_BREAK_TAG.sub("\n", text)
        text = _TAG.sub("", text)
    if "&" in text:  # after tags, so that an escaped "&lt;b&gt;" stays visible text
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    return text


def _tidy_spaces(text: str) -> str:
    return _INNER_RUN.sub(" ", text)


def normalise_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACE_LIKE.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub("", text)
    text = _outside_code(text, _tidy_spaces)
    text = _TRAILING.sub("", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def clean_text(text: str, settings: CleanStage) -> str:
    if settings.unicode_nfc:
        text = unicodedata.normalize("NFC", text)
    if settings.html:
        text = _outside_code(text, strip_html)
    if settings.whitespace:
        text = normalise_whitespace(text)
    return text


def clean_messages(messages: Messages, settings: CleanStage) -> Messages | None:
    """Cleaned messages, or None when a user or assistant turn is empty afterwards."""
    cleaned = []
    for message in messages:
        content = clean_text(message["content"], settings)
        if not content.strip():
            if message["role"] == "system":
                continue
            return None
        cleaned.append({"role": message["role"], "content": content})
    return cleaned
