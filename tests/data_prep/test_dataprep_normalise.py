"""Rows to messages: both mapping styles, and the reason each kind of bad row is skipped."""

from __future__ import annotations

import pytest

from eeve_sft.data_prep.mix import Columns, NormaliseStage
from eeve_sft.data_prep.normalise import normalise_row

INSTRUCTION = Columns(instruction="instruction", input="input", output="output")
SHAREGPT = Columns(
    messages="conversations", role_key="from", content_key="value", role_aliases={"human": "user", "gpt": "assistant"}
)
PLAIN = NormaliseStage()


def test_instruction_and_input_are_joined_with_a_blank_line():
    row = {
        "instruction": "다음 글을 요약해 주세요.",
        "input": "서울은 대한민국의 수도이다.",
        "output": "서울은 수도입니다.",
    }
    assert normalise_row(row, INSTRUCTION, PLAIN) == [
        {"role": "user", "content": "다음 글을 요약해 주세요.\n\n서울은 대한민국의 수도이다."},
        {"role": "assistant", "content": "서울은 수도입니다."},
    ]


@pytest.mark.parametrize("empty_input", ["", "   ", None])
def test_missing_or_empty_input_leaves_the_instruction_alone(empty_input):
    row = {"instruction": "질문입니다.", "input": empty_input, "output": "답입니다."}
    assert normalise_row(row, INSTRUCTION, PLAIN)[0] == {"role": "user", "content": "질문입니다."}


def test_input_separator_and_system_column_are_used():
    columns = Columns(instruction="q", input="ctx", output="a", system="sys")
    settings = NormaliseStage(input_separator="\n---\n")
    row = {"q": "질문", "ctx": "맥락", "a": "답변입니다", "sys": "시스템 안내"}
    assert normalise_row(row, columns, settings) == [
        {"role": "system", "content": "시스템 안내"},
        {"role": "user", "content": "질문\n---\n맥락"},
        {"role": "assistant", "content": "답변입니다"},
    ]
    assert normalise_row(row, columns, NormaliseStage(keep_system=False))[0]["role"] == "user"


def test_messages_column_with_role_aliases_and_multiple_turns():
    row = {
        "conversations": [
            {"from": "system", "value": "친절하게 답하세요."},
            {"from": "human", "value": "안녕하세요?"},
            {"from": "gpt", "value": "안녕하세요. 무엇을 도와드릴까요?"},
            {"from": "human", "value": "날씨 알려 주세요."},
            {"from": "gpt", "value": "오늘은 맑습니다."},
        ]
    }
    messages = normalise_row(row, SHAREGPT, PLAIN)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[-1]["content"] == "오늘은 맑습니다."


def test_messages_stored_as_json_text_are_read():
    columns = Columns(messages="messages")
    row = {"messages": '[{"role": "user", "content": "질문"}, {"role": "assistant", "content": "답변"}]'}
    assert normalise_row(row, columns, PLAIN) == [
        {"role": "user", "content": "질문"},
        {"role": "assistant", "content": "답변"},
    ]


def test_empty_system_message_is_dropped_not_counted():
    columns = Columns(messages="messages")
    row = {
        "messages": [
            {"role": "system", "content": " "},
            {"role": "user", "content": "질문"},
            {"role": "assistant", "content": "답"},
        ]
    }
    assert [m["role"] for m in normalise_row(row, columns, PLAIN)] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"input": "", "output": "답"}, "missing_field"),
        ({"instruction": "질문", "input": ""}, "missing_field"),
        ({"instruction": None, "output": "답"}, "missing_field"),
        ({"instruction": 42, "output": "답"}, "non_string_field"),
        ({"instruction": "질문", "output": ["답"]}, "non_string_field"),
        ({"instruction": "질문", "input": 3, "output": "답"}, "non_string_field"),
        ({"instruction": "질문", "output": "  \n "}, "empty_assistant_turn"),
        ({"instruction": " ", "input": "", "output": "답"}, "empty_user_turn"),
        ({"instruction": "질문", "output": "깨진 \ud800 글자"}, "invalid_unicode"),
    ],
)
def test_bad_instruction_rows_give_their_reason(row, reason):
    assert normalise_row(row, INSTRUCTION, PLAIN) == reason


def _chat(*turns) -> dict:
    return {"conversations": [{"from": role, "value": text} for role, text in turns]}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({}, "missing_field"),
        ({"conversations": "not a list"}, "malformed_messages"),
        ({"conversations": []}, "malformed_messages"),
        ({"conversations": [{"from": "human"}]}, "malformed_messages"),
        ({"conversations": ["just a string"]}, "malformed_messages"),
        (_chat(("narrator", "이야기"), ("gpt", "답")), "unknown_role"),
        (_chat(("gpt", "먼저 말함"), ("human", "질문")), "bad_turn_order"),
        (
            _chat(
                ("human", "질문"),
            ),
            "bad_turn_order",
        ),
        (_chat(("human", "질문"), ("human", "또 질문")), "bad_turn_order"),
        (_chat(("human", "질문"), ("gpt", "답"), ("system", "중간 시스템"), ("gpt", "답")), "bad_turn_order"),
        (_chat(("human", "질문"), ("gpt", " ")), "empty_assistant_turn"),
        (_chat(("human", ""), ("gpt", "답")), "empty_user_turn"),
        ({"conversations": [{"from": "human", "value": 1}, {"from": "gpt", "value": "답"}]}, "non_string_field"),
        ({"conversations": [{"from": "human", "value": None}, {"from": "gpt", "value": "답"}]}, "missing_field"),
        ({"conversations": [{"from": 1, "value": "질문"}, {"from": "gpt", "value": "답"}]}, "unknown_role"),
    ],
)
def test_bad_message_rows_give_their_reason(row, reason):
    assert normalise_row(row, SHAREGPT, PLAIN) == reason
