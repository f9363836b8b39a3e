"""Preference pairs: each drop reason counted, on-policy slips paired with a polite answer, deterministic and atomic
output, one-line errors; and the real converter's pairs from data/demo differ in speech level only."""

from __future__ import annotations

import json
import sys

import pytest

from eeve_sft.data_prep.pairs import PairsRequest, SpeechTools, build_pairs
from eeve_sft.errors import UserError
from eeve_sft.speech_level import classify_batch
from helpers import error_line, fake_classify_batch, fake_to_banmal_batch, run_script


def fake_to_polite_batch(texts: list[str]) -> list[str]:
    return [text.replace("해.", "해요.").replace("야.", "예요.") for text in texts]


FAKE = SpeechTools(fake_classify_batch, fake_to_banmal_batch, fake_to_polite_batch)


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


ROWS = [
    chat("여기 앉아도 돼?", "네, 편하게 앉으세요."),  # kept: 앉으세요 -> 앉으어 (the fake converter)
    chat("이거 어려워?", "그건 좀 어렵다."),  # chosen_not_polite
    chat("고마워", "감사합니다."),  # rewrite_unchanged: the fake converter has no rule for it
    chat("확인해 줄래?", "확인해 주세요. 감사합니다."),  # rejected_not_banmal: the rewrite is mixed
    chat("뭐 먹을까?", "김밥은 어떠세요."),  # kept
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_pairs_from_a_chat_file_count_every_drop_and_differ_in_the_answer_only(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", ROWS)
    stats = build_pairs(PairsRequest(str(source), eval_fraction=0.0), tmp_path / "out", tools=FAKE)
    assert stats["dropped"] == {"chosen_not_polite": 1, "rewrite_unchanged": 1, "rejected_not_banmal": 1}
    assert stats["output"] == {"train": 2, "eval": 0} and stats["by_origin"] == {"rewrite": 2}
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {
        "prompt": [{"role": "user", "content": "여기 앉아도 돼?"}],
        "chosen": [{"role": "assistant", "content": "네, 편하게 앉으세요."}],
        "rejected": [{"role": "assistant", "content": "네, 편하게 앉으어."}],
        "origin": "rewrite",
    }
    card = (tmp_path / "out" / "data_card.md").read_text(encoding="utf-8")
    assert "| `chosen_not_polite` | 1 |" in card and "그건 좀 어렵다" in card  # the count and an example
    assert not (tmp_path / "out" / "eval.jsonl").exists()


def test_on_policy_slips_pair_with_the_datasets_answer_else_the_polite_rewrite(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", ROWS)
    answers = [
        {"prompt": "여기 앉아도 돼?", "answer": "응, 앉아도 돼."},  # 반말: the dataset's answer is chosen
        {"prompt": "내일 뭐 해?", "answer": "나는 공부해."},  # 반말, no dataset answer: the polite rewrite
        {"prompt": "안녕?", "answer": "안녕하세요."},  # no slip
        {"prompt": "누구야?", "answer": "나는 친구."},  # 반말 the fake rewrite cannot fix: dropped
    ]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(
        json.dumps({"models": [{"name": "sft", "answers": answers}]}, ensure_ascii=False), encoding="utf-8"
    )
    request = PairsRequest(str(source), from_eval=str(tmp_path / "eval"), eval_fraction=0.0)
    stats = build_pairs(request, tmp_path / "out", tools=FAKE)
    assert stats["by_origin"] == {"rewrite": 2, "eval": 2}
    assert stats["dropped"]["answer_already_polite"] == 1 and stats["dropped"]["rewrite_unchanged"] == 2
    on_policy = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()][2:]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in on_policy] == [
        ("네, 편하게 앉으세요.", "응, 앉아도 돼."),
        ("나는 공부해요.", "나는 공부해."),
    ]


def test_output_is_deterministic_and_a_failed_build_writes_nothing(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", ROWS * 20)
    for name in ("a", "b"):
        build_pairs(PairsRequest(str(source), eval_fraction=0.3, seed=7), tmp_path / name, tools=FAKE)
    for file in ("train.jsonl", "eval.jsonl", "data_card.md"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    with pytest.raises(UserError, match="no eval.json"):
        build_pairs(PairsRequest(str(source), from_eval=str(tmp_path / "nowhere")), tmp_path / "c", tools=FAKE)
    with pytest.raises(UserError, match="no pair kept"):
        build_pairs(PairsRequest(str(write_jsonl(tmp_path / "x.jsonl", ROWS[1:3]))), tmp_path / "d", tools=FAKE)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "chat.jsonl", "x.jsonl"]  # no leftovers


def test_cli_builds_demo_pairs_with_the_real_converter_and_errors_in_one_line(tmp_path):
    out = tmp_path / "pairs"
    result = run_script(sys.executable, "data_prep/build_pairs.py", "data/demo", "--output", str(out), "--limit", "40")
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["considered"] == {"data/demo/eval.jsonl": 40, "data/demo/train.jsonl": 40}
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == stats["output"]["train"] >= 30
    assert set(classify_batch([r["chosen"][0]["content"] for r in rows])) == {"polite"}
    assert set(classify_batch([r["rejected"][0]["content"] for r in rows])) == {"banmal"}

    again = run_script(sys.executable, "data_prep/build_pairs.py", "data/demo", "--output", str(out))
    assert again.returncode == 2 and "is not empty" in error_line(again)
    bad = run_script(sys.executable, "data_prep/build_pairs.py", "--output", str(tmp_path / "none"))
    assert bad.returncode == 2 and "nothing to build pairs from" in error_line(bad)
    assert not (tmp_path / "none").exists()
