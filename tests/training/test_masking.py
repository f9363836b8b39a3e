"""The heart of the mission: loss only on assistant turns, each ending in a trained eos; nothing else trained."""

import pytest

from eeve_sft.errors import UserError
from eeve_sft.template import DEFAULT_SYSTEM_PROMPT, build_chat_template, encode_prompt, stop_token_ids
from eeve_sft.training.data import IGNORE_INDEX, conversation_problem, tokenize_conversation, tokenize_dataset
from helpers import MULTI, SINGLE


def trained_spans(ids: list[int], labels: list[int]) -> list[list[int]]:
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token, "a trained label must be the token itself"
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single-turn", "multi-turn"])
def test_trained_tokens_are_exactly_each_answer_and_its_eos(demo_tokenizer, messages):
    row = tokenize_conversation(messages, demo_tokenizer, max_length=None)
    spans = trained_spans(row["input_ids"], row["labels"])
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(spans) == len(answers)
    eos = demo_tokenizer.eos_token_id
    for span, answer in zip(spans, answers, strict=True):
        assert span[-1] == eos, "every assistant turn must end in a trained eos"
        assert demo_tokenizer.decode(span[:-1]).strip() == answer
    assert row["num_trained"] == sum(len(s) for s in spans)


def test_no_human_or_system_token_is_trained(demo_tokenizer):
    row = tokenize_conversation(MULTI, demo_tokenizer, max_length=None)
    masked = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == IGNORE_INDEX]
    masked_text = demo_tokenizer.decode(masked)
    for message in MULTI:
        if message["role"] != "assistant":
            assert message["content"] in masked_text
    trained_text = demo_tokenizer.decode(
        [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE_INDEX]
    )
    assert "Human:" not in trained_text and "Assistant:" not in trained_text and "요리 선생님" not in trained_text


def test_pad_is_not_eos_and_generation_stops_on_both_eos_ids(demo_tokenizer):
    assert demo_tokenizer.pad_token == "</s>" and demo_tokenizer.eos_token == "<|im_end|>"
    assert demo_tokenizer.pad_token_id != demo_tokenizer.eos_token_id
    assert stop_token_ids(demo_tokenizer) == [demo_tokenizer.eos_token_id, 2]  # eos first, as serving stacks expect


def test_rendering_follows_the_official_template(demo_tokenizer):
    text = demo_tokenizer.apply_chat_template(SINGLE, tokenize=False)
    assert text == (
        f"<s>{DEFAULT_SYSTEM_PROMPT}\nHuman: {SINGLE[0]['content']}\nAssistant: {SINGLE[1]['content']}<|im_end|>"
    )
    with_system = demo_tokenizer.apply_chat_template(MULTI, tokenize=False)
    assert with_system.startswith("<s>당신은 친절한 요리 선생님입니다.\nHuman: 김치찌개 어떻게 끓여?\nAssistant: ")
    assert DEFAULT_SYSTEM_PROMPT not in with_system


def test_recipe_system_prompt_replaces_the_default(demo_tokenizer):
    template = build_chat_template('항상 "존댓말"로 답하세요.\n짧게.')
    text = demo_tokenizer.apply_chat_template(SINGLE, tokenize=False, chat_template=template)
    assert text.startswith('<s>항상 "존댓말"로 답하세요.\n짧게.\nHuman: ')


def test_generation_prompt_is_the_training_prefix(demo_tokenizer):
    """At inference the prompt must tokenize exactly as the same text did in training."""
    full = tokenize_conversation(MULTI, demo_tokenizer, max_length=None)["input_ids"]
    prompt = encode_prompt(demo_tokenizer, MULTI[:-1])
    assert full[: len(prompt)] == prompt
    assert full[len(prompt)] != demo_tokenizer.eos_token_id


def test_unknown_role_is_rejected_by_the_template(demo_tokenizer):
    with pytest.raises(Exception, match="unsupported role tool"):
        demo_tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_truncated_away_answers_are_dropped_and_counted(demo_tokenizer):
    from datasets import Dataset

    long_question = [
        {"role": "user", "content": "아주 긴 질문이야 " * 200},
        {"role": "assistant", "content": "네, 알겠어요."},
    ]
    # A limit that cuts MULTI's second answer but keeps its first, and leaves the long question no answer at all.
    limit = len(tokenize_conversation(MULTI, demo_tokenizer, max_length=None)["input_ids"]) - 5
    ds = Dataset.from_list([{"messages": MULTI[:3]}, {"messages": long_question}, {"messages": MULTI}])
    kept, stats = tokenize_dataset(ds, demo_tokenizer, max_length=limit)
    assert stats.dropped_no_trained_tokens == 1 and stats.examples == 2 and len(kept) == 2
    assert stats.truncated == 2
    assert all(any(label != IGNORE_INDEX for label in labels) for labels in kept["labels"])
    assert all(len(ids) <= limit for ids in kept["input_ids"])
    with pytest.raises(UserError, match="no example keeps a trained token"):
        tokenize_dataset(Dataset.from_list([{"messages": long_question}]), demo_tokenizer, max_length=limit)


@pytest.mark.parametrize(
    "messages, problem",
    [
        ([], "non-empty list"),
        ([{"role": "bot", "content": "hi"}], "role 'bot'"),
        ([{"role": "user", "content": "안녕"}], "must end with an assistant turn"),
        ([{"role": "assistant", "content": "네"}, {"role": "user", "content": "응"}], "alternate"),
        ([{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "  "}], "empty or non-text"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "only the first message"),
        (None, "non-empty list"),
    ],
)
def test_conversation_problems_are_named(messages, problem):
    assert problem in conversation_problem(messages)


def test_tokenizer_round_trips_any_text(demo_tokenizer):
    for text in [
        "존댓말로 답해 주세요 😊",
        "Hello, EEVE! 3.14 ≈ π",
        "日本語と中文も",
        "탭\t과 줄바꿈\n\n두 번",
        "👨‍👩‍👧 🇰🇷",
    ]:
        ids = demo_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert demo_tokenizer.decode(ids) == text
