"""The speech-level stage and the 반말 rewrite, against the small fake in helpers.py."""

from __future__ import annotations

import pytest

from eeve_sft.data_prep.ledger import Ledger
from eeve_sft.data_prep.mix import BanmalRewriteStage, SpeechLevelStage
from eeve_sft.data_prep.normalise import Example
from eeve_sft.data_prep.speech_level_stages import (
    AssistantLevelFilter,
    SpeechLevels,
    label_texts,
    load_speech_levels,
    rewrite_user_turns,
)
from eeve_sft.speech_level import BANMAL, MIXED, NEUTRAL, POLITE
from eeve_sft.speech_level import LABELS as LEVELS
from eeve_sft.speech_level.levels import combine
from helpers import FAKE_SPEECH, fake_classify_batch, fake_to_banmal_batch


def test_fake_follows_the_speech_level_contract():
    texts = ["설명해 주세요.", "밥 먹었어?", "좋습니다. 그래.", "1. 2. 3."]
    labels = fake_classify_batch(texts)
    assert labels == [POLITE, BANMAL, MIXED, NEUTRAL]
    assert set(labels) <= set(LEVELS)
    assert fake_classify_batch(fake_to_banmal_batch(["설명해 주세요."])) == [BANMAL]


def example(i: int, user: str, *answers: str) -> Example:
    messages = []
    for n, answer in enumerate(answers):
        messages.append({"role": "user", "content": user if n == 0 else "그다음은요?"})
        messages.append({"role": "assistant", "content": answer})
    return Example("src", i, messages)


@pytest.mark.parametrize(
    ("labels", "level"),
    [
        (["polite", "neutral", "polite"], "polite"),
        (["banmal"], "banmal"),
        (["neutral", "neutral"], "neutral"),
        ([], "neutral"),
        (["polite", "banmal"], "mixed"),
        (["mixed"], "mixed"),
        (["polite", "mixed"], "mixed"),
    ],
)
def test_combine_turn_levels(labels, level):
    assert combine(labels) == level


def test_filter_keeps_polite_drops_banmal_and_mixed_and_counts_each():
    ledger = Ledger(["src"])
    keep = AssistantLevelFilter(FAKE_SPEECH, SpeechLevelStage(), ledger)
    batch = [
        example(1, "질문", "답입니다."),
        example(2, "질문", "답이야."),
        example(3, "질문", "좋습니다. 근데 아니야."),
        example(4, "질문", "1. 2. 3."),
        example(5, "질문", "첫 답입니다.", "둘째 답이야."),
    ]
    assert keep(batch) == [True, False, False, True, False]
    assert [e.assistant_level for e in batch] == ["polite", "banmal", "mixed", "neutral", "mixed"]
    assert keep.seen == {"polite": 1, "banmal": 1, "mixed": 2, "neutral": 1}
    assert ledger.total("speech_level", "assistant_banmal") == 1
    assert ledger.total("speech_level", "assistant_mixed") == 2
    assert ledger.examples["speech_level/assistant_banmal"][0].row == 2


def test_filter_settings_choose_what_stays():
    settings = SpeechLevelStage(neutral="drop", banmal="keep", mixed="drop")
    keep = AssistantLevelFilter(FAKE_SPEECH, settings, Ledger(["src"]))
    batch = [example(1, "q", "답입니다."), example(2, "q", "답이야."), example(3, "q", "1. 2.")]
    assert keep(batch) == [True, True, False]


def test_classify_rejects_a_classifier_that_breaks_the_contract():
    short = SpeechLevels(lambda texts, batch_size=256: ["polite"], FAKE_SPEECH.to_banmal_batch)
    with pytest.raises(RuntimeError, match="1 labels for 2 texts"):
        label_texts(short, ["가", "나"], 8)
    odd = SpeechLevels(lambda texts, batch_size=256: ["casual"] * len(texts), FAKE_SPEECH.to_banmal_batch)
    with pytest.raises(RuntimeError, match="unknown labels"):
        label_texts(odd, ["가"], 8)


def _rows(n: int) -> list[Example]:
    users = ["설명해 주세요.", "무엇인가요?", "그거 알려 줘.", "42"]
    return [example(i, users[i % 4], "답입니다.") for i in range(n)]


def test_rewrite_turns_a_share_of_rows_into_banmal_and_only_polite_turns():
    rows = _rows(40)
    originals = [r.messages[0]["content"] for r in rows]
    report = rewrite_user_turns(rows, FAKE_SPEECH, BanmalRewriteStage(share=0.25), seed=1)
    assert report.target_rows == 10 and report.rows_rewritten == 10
    changed = [i for i, r in enumerate(rows) if r.messages[0]["content"] != originals[i]]
    assert len(changed) == 10
    assert all(originals[i] in ("설명해 주세요.", "무엇인가요?") for i in changed)  # never the 반말 or neutral ones
    assert fake_classify_batch([rows[i].messages[0]["content"] for i in changed]) == ["banmal"] * 10
    assert all(r.messages[1]["content"] == "답입니다." for r in rows)  # answers untouched
    assert report.user_before == {"polite": 20, "banmal": 10, "neutral": 10}
    assert report.user_after == {"polite": 10, "banmal": 20, "neutral": 10}


def test_rewrite_is_deterministic_for_a_seed():
    first, second, other = _rows(40), _rows(40), _rows(40)
    for rows, seed in ((first, 1), (second, 1), (other, 2)):
        rewrite_user_turns(rows, FAKE_SPEECH, BanmalRewriteStage(share=0.25), seed=seed)
    texts = lambda rows: [r.messages[0]["content"] for r in rows]  # noqa: E731
    assert texts(first) == texts(second) != texts(other)


def test_a_rewrite_that_is_not_banmal_keeps_the_original():
    unchanged = SpeechLevels(fake_classify_batch, lambda texts: list(texts))  # a rewriter that does nothing
    rows = _rows(8)
    report = rewrite_user_turns(rows, unchanged, BanmalRewriteStage(share=1.0), seed=0)
    assert report.rows_rewritten == 0 and report.turns_not_banmal == report.eligible_rows == 4
    assert [r.messages[0]["content"] for r in rows] == [r.messages[0]["content"] for r in _rows(8)]


def test_rewrite_stops_when_no_polite_turns_are_left():
    rows = _rows(8)
    report = rewrite_user_turns(rows, FAKE_SPEECH, BanmalRewriteStage(share=1.0), seed=0)
    assert report.target_rows == 8 and report.rows_rewritten == 4


def test_real_speech_level_module_loads_with_the_expected_labels():
    levels = load_speech_levels()
    assert levels.classify_batch(["안녕하세요.", "밥 먹었어?"], batch_size=2) == ["polite", "banmal"]
