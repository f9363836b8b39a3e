"""The chat page's handlers on the demo model: streamed answers, speech-level badges, retrieved passages, two models
side by side, failures shown in the page, saving, warm-up status, and the CLI's one-line errors."""

from __future__ import annotations

import copy
import json

import pytest

from eeve_sft.inference.loading import load_for_inference
from eeve_sft.inference.sampling import SamplingConfig
from eeve_sft.inference.web import ChatModel, ChatPage, badge_html, speech_badge
from eeve_sft.speech_level import classify
from helpers import DEMO_MODEL, REPO, cli_error, make_adapter

GREEDY = SamplingConfig(max_new_tokens=12, do_sample=False)
QUESTION = "배고파. 점심 뭐 먹을까?"


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = load_for_inference(DEMO_MODEL, device="cpu")
    return ChatModel("demo", model, tokenizer)


def ready_page(models, **kwargs) -> ChatPage:
    page = ChatPage(models, sampling=GREEDY, **kwargs)
    page.warm_up()
    return page


def run(page: ChatPage, message: str, session=None, **kwargs):
    """Every state the page showed while answering (copied, since the handler updates one list in place)."""
    session = session or page.new_session()
    states = [copy.deepcopy(shown) for shown in page.respond(message, session, **kwargs)]
    return session, states


def test_answer_streams_then_gets_its_badge(demo):
    from eeve_sft.inference.answer import generate

    page = ready_page([demo])
    session, states = run(page, QUESTION)
    final = states[-1][0]
    assert [m["role"] for m in final] == ["user", "assistant", "assistant"]
    answer = session.conversations[0][1]["content"]
    # The streamed answer is exactly the one the fast path gives for the same conversation.
    assert answer == generate(demo.model, demo.tokenizer, [{"role": "user", "content": QUESTION}], **vars(GREEDY))
    assert final[1]["content"] == answer
    streamed = [s[0][1]["content"] for s in states if len(s[0]) == 2]
    assert len(streamed) >= 3 and streamed[0] == "…"  # the page showed the answer growing before it was done
    assert all(answer.startswith(part) for part in streamed[1:])
    assert 'class="speech-badge' not in "".join(streamed)  # the badge comes only with the whole answer
    assert f'speech-badge level-{classify(answer)}"' in final[2]["content"]
    assert session.conversations[0] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": answer},
    ]
    # A second turn sees the first: the model's conversation grows, the page shows both turns.
    run(page, "그럼 저녁은?", session)
    assert [m["content"] for m in session.conversations[0]][::2] == [QUESTION, "그럼 저녁은?"]
    assert len(session.shown[0]) == 6


@pytest.mark.parametrize(
    "text, level, deciding",
    [
        ("네, 알겠습니다. 내일 보내 드릴게요.", "polite", ["네, 알겠습니다.", "내일 보내 드릴게요."]),
        ("알겠어. 내일 보내 줄게.", "banmal", ["알겠어.", "내일 보내 줄게."]),
        ("확인했습니다. 근데 이건 네가 해.", "mixed", ["근데 이건 네가 해."]),
        ("1. 입고\n2. 출고", "neutral", []),
    ],
)
def test_badge_marks_the_sentences_that_decided_it(text, level, deciding):
    badge = speech_badge(text)
    assert badge.level == level == classify(text)
    assert badge.deciding == deciding
    shown = badge_html(badge)
    assert f'speech-badge level-{level}"' in shown
    assert shown.count("<mark>") == len(deciding)
    for sentence in deciding:
        assert f"<mark>{sentence}</mark>" in shown
    # Folded when all is well, open when a reviewer should look.
    if badge.sentences:
        assert ("<details" in shown) and ((" open>" in shown) == (level != "polite"))


def test_badge_escapes_what_the_model_wrote():
    shown = badge_html(speech_badge("<script>alert(1)</script> 이거 해."))
    assert "<script>" not in shown and "&lt;script&gt;" in shown


def test_rag_passages_under_the_answer_in_chat_layout_and_saved(demo, tmp_path):
    from eeve_sft.retrieval import RetrievalIndex, build_index, format_context

    build_index(REPO / "data" / "wms_docs", tmp_path / "idx", chunk_chars=800, overlap=100)
    index = RetrievalIndex(tmp_path / "idx")
    page = ready_page([demo], index=index, rag_top_k=2, save_dir=tmp_path / "saved")
    (tmp_path / "saved").mkdir()
    question = "택배 상차 마감은 몇 시야?"
    session, states = run(page, question)
    # The model sees the passages exactly as chat.py --rag lays them out; the page shows the question alone.
    assert session.conversations[0][0]["content"] == format_context(question, index.search(question, 2))
    assert states[-1][0][0]["content"] == question
    under = states[-1][0][2]["content"]
    assert '<details class="passages">' in under and "문서 2개" in under
    assert "[1] shipping.md · 출고와 배송 &gt; 상차와 출고 확정" in under and "score " in under
    [saved] = (tmp_path / "saved").glob("*.json")
    record = json.loads(saved.read_text(encoding="utf-8"))
    [turn] = record["turns"]
    assert turn["question"] == question and [p["rank"] for p in turn["passages"]] == [1, 2]
    assert turn["passages"][0]["source"] == "shipping.md"
    assert turn["answers"][0]["answer"] == session.conversations[0][1]["content"]
    assert record["rag"]["top_k"] == 2


def test_two_models_answer_side_by_side_each_with_its_badge(demo, tmp_path):
    adapter = make_adapter(tmp_path / "adapter", base=str(DEMO_MODEL))
    model, tokenizer = load_for_inference(adapter, device="cpu")
    page = ready_page([demo, ChatModel("adapter", model, tokenizer)])
    session, states = run(page, QUESTION)
    left, right = states[-1]
    for shown, conversation in zip((left, right), session.conversations, strict=True):
        assert [m["role"] for m in shown] == ["user", "assistant", "assistant"]
        assert shown[1]["content"] == conversation[1]["content"]
        assert f'speech-badge level-{classify(conversation[1]["content"])}"' in shown[2]["content"]
    assert left[1]["content"] != right[1]["content"]  # two different models answered
    # The left model finished before the right one started: the right column waited with its question.
    assert any(len(s[0]) == 3 and len(s[1]) == 1 for s in states)


def test_failed_generation_is_shown_and_the_page_goes_on(demo, monkeypatch):
    page = ready_page([demo])
    session = page.new_session()

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(demo.model, "forward", out_of_memory)  # every generation path runs the forward
        _, states = run(page, QUESTION, session)
    assert states[-1][0][-1]["content"] == "⚠ generation failed: CUDA out of memory. Tried to allocate 2 GiB"
    assert session.conversations[0] == []  # the model's conversation is as it was
    run(page, QUESTION, session)
    assert len(session.conversations[0]) == 2 and 'class="speech-badge ' in session.shown[0][-1]["content"]


def test_too_long_input_and_context_are_refused_in_the_page(demo):
    page = ready_page([demo])
    page.max_input_chars = 10
    session, states = run(page, "가" * 11)
    assert states[-1][0] == [{"role": "assistant", "content": "⚠ message too long: 11 characters, the limit is 10"}]
    page.max_input_chars = 2000
    long_answer = SamplingConfig(max_new_tokens=4090, do_sample=False)  # the demo model's context is 4096
    _, states = run(page, QUESTION, session, sampling=long_answer)
    assert "exceed the model's context of 4096 tokens" in states[-1][0][-1]["content"]
    assert session.conversations[0] == []


def test_status_says_warming_up_until_the_warm_up_is_done(demo):
    page = ChatPage([demo], sampling=GREEDY)
    assert not page.ready and page.status().startswith("**Warming up**")
    page.warm_up()
    assert page.ready and page.status() == "**Ready**: `demo`"
    broken = ChatPage([ChatModel("broken", object(), demo.tokenizer)], sampling=GREEDY)
    broken.warm_up()
    assert not broken.ready and broken.status().startswith("⚠ warm-up failed:")
    _, states = run(broken, QUESTION)
    assert states[-1][0][-1]["content"].startswith("⚠ warm-up failed:")


def test_page_settings_become_sampling_and_bad_ones_are_one_line(demo):
    page = ChatPage([demo], sampling=SamplingConfig(seed=3))
    sampling = page.sampling_from(64, 0.5, 0.8, 20, 1.2, False)
    assert sampling == SamplingConfig(
        max_new_tokens=64, temperature=0.5, top_p=0.8, top_k=20, repetition_penalty=1.2, seed=3
    )
    assert not page.sampling_from(64, 0.5, 0.8, 20, 1.2, True).do_sample
    with pytest.raises(Exception, match="top_p must be in"):
        page.sampling_from(64, 0.5, 0.0, 20, 1.2, False)
    assert page.save(page.new_session()) is None  # without --save-dir nothing is written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "70000"], "--port must be between 1 and 65535, got 70000"),
        (["--model-path", "a", "--model-path", "b", "--model-path", "c"], "at most two models side by side, got 3"),
        (["--rag-top-k", "0"], "--rag-top-k must be at least 1, got 0"),
        (["--max-input-chars", "0"], "--max-input-chars must be at least 1"),
        (["--top-p", "2"], "top_p must be in (0, 1], got 2.0"),
        (["--colour"], "unrecognized arguments: --colour"),
        (["--model-path", "no/such/dir/model"], "model path not found: no/such/dir/model"),
        (["--model-path", "base"], "'base' stands for the base model of the adapters given"),
    ],
)
def test_cli_bad_flags_are_one_line(capsys, argv, message):
    assert message in cli_error(capsys, "web", argv)


def test_cli_refuses_a_save_dir_that_is_a_file_and_a_taken_port(capsys, tmp_path):
    import socket

    (tmp_path / "f").write_text("x")
    assert "is a file, not a folder" in cli_error(capsys, "web", ["--save-dir", str(tmp_path / "f")])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot serve on 127.0.0.1:{port}" in cli_error(capsys, "web", ["--port", str(port)])
