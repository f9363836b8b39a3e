"""Whole builds over the fixture files: outputs, counts, determinism, atomic writes, the data card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eeve_sft.data_prep import build_dataset, load_mix
from eeve_sft.data_prep.build import Builder
from eeve_sft.errors import UserError
from eeve_sft.training.data import conversation_problem
from helpers import FAKE_SPEECH, FIXTURES, fixture_sources, write_mix

OUTPUT_FILES = ["data_card.md", "eval.jsonl", "stats.json", "train.jsonl"]


def settings(**overrides) -> dict:
    mix = {
        "name": "fixture_mix",
        "seed": 11,
        "num_proc": 1,
        "sources": fixture_sources(),
        "dedup": {"near": {"threshold": 0.7}},
        "banmal_rewrite": {"share": 0.5},
        "sample": {"size": 12},
        "split": {"eval_size": 2},
    }
    mix.update(overrides)
    return mix


def build(tmp_path: Path, out: str = "out", **overrides) -> dict:
    mix = load_mix(write_mix(tmp_path, settings(**overrides)))
    return build_dataset(mix, tmp_path / out, speech_levels=FAKE_SPEECH, show_progress=False).stats


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_writes_valid_conversations_and_consistent_counts(tmp_path):
    stats = build(tmp_path)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES
    train, evaluation = read_rows(out / "train.jsonl"), read_rows(out / "eval.jsonl")
    assert (len(train), len(evaluation)) == (10, 2)
    for row in train + evaluation:
        assert list(row) == ["messages"]
        assert conversation_problem(row["messages"]) is None  # what the trainer checks
    assert stats["output"] == {"train": 10, "eval": 2}
    for name, source in stats["sources"].items():
        # every row that came in is either in the sample or removed for a counted reason
        assert source["rows_in"] == source["sampled"] + sum(source["removed"].values()), name
        assert source["sampled"] == source["train"] + source["eval"]
    assert stats["rows_in"] == 23 + 7 + 3


def test_bad_rows_are_counted_per_reason(tmp_path):
    removed = build(tmp_path, sample={"enabled": False})["removed"]  # no sampling: every row is judged
    assert removed["load"] == {"invalid_json": 1, "not_an_object": 1}
    assert removed["normalise"] == {
        "bad_turn_order": 2,
        "empty_assistant_turn": 2,
        "malformed_messages": 1,
        "missing_field": 1,
        "non_string_field": 1,
        "unknown_role": 1,
    }
    assert removed["quality"] == {
        "assistant_too_short": 1,
        "low_hangul_ratio": 1,
        "repeated_lines": 1,
        "special_char_ratio": 1,
    }
    assert removed["dedup"] == {"exact_duplicate": 2, "near_duplicate": 1}
    assert removed["speech_level"] == {"assistant_banmal": 1, "assistant_mixed": 1}


def test_output_answers_are_polite_and_some_questions_are_banmal(tmp_path):
    stats = build(tmp_path)
    rows = read_rows(tmp_path / "out" / "train.jsonl") + read_rows(tmp_path / "out" / "eval.jsonl")
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    assert set(FAKE_SPEECH.classify_batch(answers)) <= {"polite", "neutral"}
    speech = stats["speech_level"]
    assert speech["assistant"]["after"]["banmal"] == speech["assistant"]["after"]["mixed"] == 0
    assert speech["rewrite"]["rows_rewritten"] == speech["rewrite"]["target_rows"] == 6
    assert speech["user"]["after"]["banmal"] > speech["user"]["before"]["banmal"]


def test_same_mix_and_seed_give_byte_identical_output(tmp_path):
    first, second = build(tmp_path, "first"), build(tmp_path, "second")
    for name in ("train.jsonl", "eval.jsonl", "data_card.md"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    assert first.pop("timings_s").keys() == second.pop("timings_s").keys()
    assert first == second  # stats.json differs in its timings only
    build(tmp_path, "other_seed", seed=12)
    assert (tmp_path / "other_seed" / "train.jsonl").read_bytes() != (tmp_path / "first" / "train.jsonl").read_bytes()


def test_worker_processes_do_not_change_the_output(tmp_path):
    build(tmp_path, "one", num_proc=1)
    build(tmp_path, "two", num_proc=2)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_data_card_lists_counts_speech_mix_and_rejected_examples(tmp_path):
    build(tmp_path)
    card = (tmp_path / "out" / "data_card.md").read_text(encoding="utf-8")
    assert card.startswith("# Data card: fixture_mix\n")
    assert "33 rows in, 10 train and 2 eval conversations out" in card
    assert "| `alpaca_style` | " + str(FIXTURES / "alpaca.jsonl") + " | 23 | 16 | 7 | 6 | 1 |" in card
    assert "| normalisation | `unknown_role` | 1 | 0 | 1 | 0 |" in card
    assert "### quality filters: `special_char_ratio` (1 row)" in card
    assert "- `alpaca_style` row 12: `Q: 특수문자 테스트 / A: ★☆★☆★" in card
    assert "- `alpaca_style` row 6 (repeats `alpaca_style` row 5):" in card
    assert "- `alpaca_style` row 18: `this line is not JSON at all`" in card
    assert "| mixed | 1 (7.7%) | 0 (0.0%) |" in card  # assistant levels: judged rows, output rows
    assert "Example rewrites:" in card and "→" in card
    assert "```yaml\nsources:" in card


def test_stages_can_be_switched_off(tmp_path):
    stats = build(
        tmp_path,
        clean={"enabled": False},
        quality={"enabled": False},
        dedup={"enabled": False},
        speech_level={"enabled": False},
        banmal_rewrite={"enabled": False},
        sample={"enabled": False},
        split={"enabled": False},
    )
    assert set(stats["removed"]) == {"load", "normalise"}
    assert stats["output"] == {"train": 23, "eval": 0}
    assert stats["speech_level"]["assistant"]["before"] is None and stats["speech_level"]["rewrite"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data_card.md", "stats.json", "train.jsonl"]
    assert "The assistant speech-level stage was off." in (tmp_path / "out" / "data_card.md").read_text(
        encoding="utf-8"
    )


def test_refuses_a_non_empty_output_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    mix = load_mix(write_mix(tmp_path, settings()))
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        build_dataset(mix, out, speech_levels=FAKE_SPEECH, show_progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    build_dataset(mix, out, overwrite=True, speech_levels=FAKE_SPEECH, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.yaml", "out"]  # no temporary folders left


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("eeve_sft.data_prep.data_card.render_data_card", explode)
    monkeypatch.setattr("eeve_sft.data_prep.build.render_data_card", explode)
    mix = load_mix(write_mix(tmp_path, settings()))
    with pytest.raises(RuntimeError, match="disk full"):
        build_dataset(mix, tmp_path / "out", speech_levels=FAKE_SPEECH, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.yaml"]


def test_a_failed_overwrite_keeps_the_previous_build(tmp_path, monkeypatch):
    build(tmp_path)
    before = (tmp_path / "out" / "train.jsonl").read_bytes()
    monkeypatch.setattr(Builder, "rewrite_users", lambda self, examples: 1 / 0)
    mix = load_mix(write_mix(tmp_path, settings(seed=99)))
    with pytest.raises(ZeroDivisionError):
        build_dataset(mix, tmp_path / "out", overwrite=True, speech_levels=FAKE_SPEECH, show_progress=False)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == before


def test_missing_column_fails_before_anything_is_written(tmp_path):
    sources = fixture_sources()
    sources[2]["columns"] = {"instruction": "question", "output": "reply"}
    mix = load_mix(write_mix(tmp_path, settings(sources=sources)))
    with pytest.raises(UserError, match=r"column 'reply' \(columns.output\) not found; it has: question, answer"):
        build_dataset(mix, tmp_path / "out", speech_levels=FAKE_SPEECH, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_output_loads_as_train_and_eval_splits(tmp_path):
    from datasets import load_dataset

    build(tmp_path)
    out = tmp_path / "out"
    splits = load_dataset("json", data_files={"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl")})
    assert splits["train"].num_rows == 10 and splits["eval"].column_names == ["messages"]


def test_end_to_end_with_the_real_speech_level_classifier(tmp_path):
    from eeve_sft.speech_level import classify_batch

    mix = load_mix(write_mix(tmp_path, settings()))
    stats = build_dataset(mix, tmp_path / "out", show_progress=False).stats  # no fake: eeve_sft.speech_level
    rows = read_rows(tmp_path / "out" / "train.jsonl") + read_rows(tmp_path / "out" / "eval.jsonl")
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    assert set(classify_batch(answers)) <= {"polite", "neutral"}
    users = [m["content"] for r in rows for m in r["messages"] if m["role"] == "user"]
    assert classify_batch(users).count("banmal") >= stats["speech_level"]["rewrite"]["turns_rewritten"] > 0


def test_missing_column_in_a_later_source_fails_before_earlier_sources_are_processed(tmp_path, monkeypatch):
    sources = fixture_sources()
    sources[2]["columns"] = {"instruction": "prompt", "output": "answer"}
    mix = load_mix(write_mix(tmp_path, settings(sources=sources)))
    normalised = []
    monkeypatch.setattr("eeve_sft.data_prep.build.normalise_row", lambda *args: normalised.append(args) or "x")
    with pytest.raises(UserError, match="column 'prompt'"):
        build_dataset(mix, tmp_path / "out", speech_levels=FAKE_SPEECH, show_progress=False)
    assert normalised == []
