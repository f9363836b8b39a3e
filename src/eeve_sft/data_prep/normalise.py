"""Turning a raw row into a conversation: ``[system?] user assistant (user assistant)*``.

Two mapping styles: instruction/input/output columns (instruction and input joined into the user turn with a
blank line), or one column holding a list of ``{role, content}`` messages. A row that cannot become a valid
conversation returns the reason instead, and the build counts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .mix import Columns, NormaliseStage

Messages = list[dict[str, str]]

# Why a row was skipped while reading or normalising it.
MISSING_FIELD = "missing_field"
NON_STRING_FIELD = "non_string_field"
MALFORMED_MESSAGES = "malformed_messages"
UNKNOWN_ROLE = "unknown_role"
BAD_TURN_ORDER = "bad_turn_order"
EMPTY_USER_TURN = "empty_user_turn"
EMPTY_ASSISTANT_TURN = "empty_assistant_turn"
INVALID_UNICODE = "invalid_unicode"  # lone surrogates (from JSON escapes) cannot be written as UTF-8


@dataclass
class Example:
    """One conversation on its way through the build, with where it came from."""

    source: str
    row: int
    messages: Messages
    assistant_level: str | None = None  # set by the speech-level stage


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _checked_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Skip(INVALID_UNICODE) from None
    return value


def _text_field(row: dict, column: str | None, required: bool) -> str | None:
    """The string in `column`; raises _Skip with the reason when it is missing or not a string."""
    if column is None:
        return None
    value = row.get(column)
    if value is None:
        if required:
            raise _Skip(MISSING_FIELD)
        return None
    if not isinstance(value, str):
        raise _Skip(NON_STRING_FIELD)
    return _checked_text(value)


def _from_instruction(row: dict, columns: Columns, settings: NormaliseStage) -> Messages:
    instruction = _text_field(row, columns.instruction, required=True) or ""
    extra = _text_field(row, columns.input, required=False) or ""
    output = _text_field(row, columns.output, required=True) or ""
    system = _text_field(row, columns.system, required=False) or ""
    user = settings.input_separator.join(part for part in (instruction.strip(), extra.strip()) if part)
    if not user:
        raise _Skip(EMPTY_USER_TURN)
    if not output.strip():
        raise _Skip(EMPTY_ASSISTANT_TURN)
    messages: Messages = []
    if system.strip() and settings.keep_system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": output})
    return messages


def _from_messages(row: dict, columns: Columns, settings: NormaliseStage) -> Messages:
    value = row.get(str(columns.messages))
    if value is None:
        raise _Skip(MISSING_FIELD)
    if isinstance(value, str):  # CSV cells and some exports keep the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Skip(MALFORMED_MESSAGES) from None
    if not isinstance(value, (list, tuple)) or not value:
        raise _Skip(MALFORMED_MESSAGES)
    messages: Messages = []
    for item in value:
        if not isinstance(item, dict) or columns.role_key not in item or columns.content_key not in item:
            raise _Skip(MALFORMED_MESSAGES)
        role, content = item[columns.role_key], item[columns.content_key]
        if not isinstance(role, str):
            raise _Skip(UNKNOWN_ROLE)
        role = columns.role_aliases.get(role, role)
        if role not in ("system", "user", "assistant"):
            raise _Skip(UNKNOWN_ROLE)
        if content is None:
            raise _Skip(MISSING_FIELD)
        if not isinstance(content, str):
            raise _Skip(NON_STRING_FIELD)
        messages.append({"role": role, "content": _checked_text(content)})
    return _checked_order(messages, settings)


def _checked_order(messages: Messages, settings: NormaliseStage) -> Messages:
    system, turns = [], messages
    if messages and messages[0]["role"] == "system":
        system, turns = messages[:1], messages[1:]
        if not system[0]["content"].strip() or not settings.keep_system:
            system = []  # an empty system message says nothing; dropping it loses nothing
    if not turns or len(turns) % 2:
        raise _Skip(BAD_TURN_ORDER)
    for i, message in enumerate(turns):
        if message["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise _Skip(BAD_TURN_ORDER)
        if not message["content"].strip():
            raise _Skip(EMPTY_USER_TURN if message["role"] == "user" else EMPTY_ASSISTANT_TURN)
    return system + turns


def normalise_row(row: dict, columns: Columns, settings: NormaliseStage) -> Messages | str:
    """The row as messages, or the reason it cannot be one."""
    try:
        if columns.messages is not None:
            return _from_messages(row, columns, settings)
        return _from_instruction(row, columns, settings)
    except _Skip as skip:
        return skip.reason


def turns_of(messages: Messages, role: str) -> list[str]:
    return [m["content"] for m in messages if m["role"] == role]


def preview(messages: Messages, limit: int = 200) -> str:
    """A one-line glimpse of a conversation for reports: the first user turn and the first answer."""
    parts = []
    for role, tag in (("user", "Q"), ("assistant", "A")):
        texts = turns_of(messages, role)
        if texts:
            parts.append(f"{tag}: {texts[0]}")
    text = " ".join(" / ".join(parts).split())
    return text if len(text) <= limit else text[:limit] + "…"
