"""Quality filters, each with a row it must drop and a row it must keep."""

from __future__ import annotations

import dataclasses

import pytest

from eeve_sft.data_prep.mix import HangulFilter, LengthFilter, QualityStage, RepetitionFilter, SpecialCharFilter
from eeve_sft.data_prep.quality import (
    hangul_ratio,
    quality_problem,
    repeated_line_ratio,
    repeated_ngram_ratio,
    special_char_ratio,
)

GOOD_ANSWER = "서울은 대한민국의 수도입니다. 한강이 도시를 가로지르고 많은 사람이 살고 있습니다."
ONLY_OFF = QualityStage(
    length=LengthFilter(enabled=False),
    special_chars=SpecialCharFilter(enabled=False),
    repetition=RepetitionFilter(enabled=False),
    hangul=HangulFilter(enabled=False),
)


def convo(user: str = "서울에 대해 알려 주세요.", answer: str = GOOD_ANSWER) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def only(**filters) -> QualityStage:
    """A quality stage with just the given filters on."""
    return dataclasses.replace(ONLY_OFF, **filters)


def test_a_good_row_passes_every_default_filter():
    assert quality_problem(convo(), QualityStage()) is None


@pytest.mark.parametrize(
    ("user", "answer", "reason"),
    [
        ("?", GOOD_ANSWER, "user_too_short"),
        ("질문" * 30, GOOD_ANSWER, "user_too_long"),
        ("질문입니다", "네.", "assistant_too_short"),
        ("질문입니다", "답" * 101, "assistant_too_long"),
    ],
)
def test_length_filter_drops_each_bound(user, answer, reason):
    settings = only(
        length=LengthFilter(min_user_chars=2, max_user_chars=50, min_assistant_chars=10, max_assistant_chars=100)
    )
    assert quality_problem(convo(user, answer), settings) == reason
    assert quality_problem(convo("질문입니다", "답" * 50), settings) is None


def test_length_applies_to_every_turn_of_a_multi_turn_row():
    settings = only(length=LengthFilter(min_assistant_chars=10))
    messages = convo() + [{"role": "user", "content": "또 질문"}, {"role": "assistant", "content": "짧음"}]
    assert quality_problem(messages, settings) == "assistant_too_short"


def test_special_character_ratio():
    soup = "★☆◆◇ ♣♧■□ 좋아요 ▲△▲△"
    assert special_char_ratio(soup) > 0.5
    assert special_char_ratio("괄호(예: 이것), 물음표? 느낌표! 퍼센트 50%와 물결~") == 0.0
    settings = only(special_chars=SpecialCharFilter(max_ratio=0.2))
    assert quality_problem(convo(answer=soup), settings) == "special_char_ratio"
    assert quality_problem(convo(), settings) is None


def test_code_blocks_do_not_count_as_special_characters():
    answer = "예시 코드입니다.\n```python\nd = {'a': [1, 2]}; print(d['a'][0] ** 2 // 3)\n```"
    assert quality_problem(convo(answer=answer), only(special_chars=SpecialCharFilter(max_ratio=0.1))) is None


def test_repeated_lines():
    looped = "\n".join(["같은 문장이 또 나옵니다."] * 4)
    assert repeated_line_ratio(looped) == pytest.approx(0.75)
    assert repeated_line_ratio("첫째 줄입니다\n둘째 줄입니다\n---\n---") == 0.0  # short separators are ignored
    settings = only(repetition=RepetitionFilter(max_repeated_line_ratio=0.3, max_repeated_ngram_ratio=1.0))
    assert quality_problem(convo(answer=looped), settings) == "repeated_lines"
    assert quality_problem(convo(), settings) is None


def test_repeated_ngrams():
    looped = "저는 그것을 좋아합니다 " * 10
    assert repeated_ngram_ratio(looped, 3, 10) > 0.8
    assert repeated_ngram_ratio("하나 둘 셋 넷", 3, 10) == 0.0  # too short to judge
    settings = only(repetition=RepetitionFilter(max_repeated_line_ratio=1.0, max_repeated_ngram_ratio=0.3))
    assert quality_problem(convo(answer=looped), settings) == "repeated_ngrams"
    varied = (
        "서울은 대한민국의 수도입니다. 한강이 도시 한가운데를 흐르고 많은 기업과 대학이 모여 있습니다. "
        "지하철이 잘 갖춰져 있어서 어디든 쉽게 갈 수 있고 밤늦게까지 문을 여는 가게도 많습니다."
    )
    assert quality_problem(convo(answer=varied), settings) is None


def test_hangul_ratio():
    assert hangul_ratio("Hello world") == 0.0
    assert hangul_ratio("한국어 text") == pytest.approx(3 / 7)
    assert hangul_ratio("12345 !!") is None  # nothing to judge
    settings = only(hangul=HangulFilter(min_ratio=0.5))
    assert quality_problem(convo(answer="This answer is in English only."), settings) == "low_hangul_ratio"
    assert quality_problem(convo(answer="정답은 42입니다"), settings) is None
    assert quality_problem(convo(answer="1234567890"), settings) is None


def test_hangul_ratio_ignores_code_and_can_check_user_turns():
    answer = "다음 코드를 실행하세요.\n```python\nfor item in collection:\n    print(item.name, item.value)\n```"
    assert quality_problem(convo(answer=answer), only(hangul=HangulFilter(min_ratio=0.9))) is None
    english_question = convo(user="Please answer in Korean.")
    assert quality_problem(english_question, only(hangul=HangulFilter(min_ratio=0.5))) is None
    assert (
        quality_problem(english_question, only(hangul=HangulFilter(min_ratio=0.5, roles=["user"])))
        == "low_hangul_ratio"
    )


def test_stage_switched_off_passes_everything():
    assert quality_problem(convo(answer="x"), QualityStage(enabled=False)) is None
