"""Shared helpers for the data-builder tests: a small rule-based speech-level pair and mix-file writing.

The fake judges a sentence by its last word only, which is enough for the short, clean fixture sentences
and keeps most build tests free of the Kiwi model. The real classifier runs in the end-to-end tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from eeve_sft.dataprep.speech_level_stage import SpeechLevels
from eeve_sft.speech_level import BANMAL, MIXED, NEUTRAL, POLITE
from eeve_sft.speech_level import LABELS as LEVELS

FIXTURES = Path(__file__).resolve().parent / "data" / "dataprep"
_SENTENCE_END = re.compile(r"[.?!\n]+")
_POLITE_ENDINGS = ("요", "니다", "니까", "시오")
_TO_BANMAL = (
    ("해 주세요", "해 줘"),
    ("주세요", "줘"),
    ("인가요", "야"),
    ("나요", "니"),
    ("까요", "까"),
    ("세요", "어"),
)


def fake_sentence_level(sentence: str) -> str:
    sentence = sentence.strip()
    if not sentence or not ("가" <= sentence[-1] <= "힣"):
        return NEUTRAL
    return POLITE if sentence.endswith(_POLITE_ENDINGS) else BANMAL


def fake_classify_batch(texts: list[str], batch_size: int = 256) -> list[str]:
    labels = []
    for text in texts:
        seen = {fake_sentence_level(s) for s in _SENTENCE_END.split(text)} - {NEUTRAL}
        labels.append(MIXED if len(seen) > 1 else seen.pop() if seen else NEUTRAL)
    return labels


def fake_to_banmal_batch(texts: list[str]) -> list[str]:
    out = []
    for text in texts:
        for polite, plain in _TO_BANMAL:
            text = text.replace(polite, plain)
        out.append(text)
    return out


FAKE_SPEECH = SpeechLevels(fake_classify_batch, fake_to_banmal_batch)


def write_mix(folder: Path, settings: dict, name: str = "mix.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def fixture_sources() -> list[dict]:
    """The three fixture files, one per mapping style and format."""
    return [
        {
            "name": "alpaca_style",
            "path": str(FIXTURES / "alpaca.jsonl"),
            "columns": {"instruction": "instruction", "input": "input", "output": "output"},
            "weight": 2.0,
        },
        {
            "name": "sharegpt_style",
            "path": str(FIXTURES / "chat.json"),
            "columns": {
                "messages": "conversations",
                "role_key": "from",
                "content_key": "value",
                "role_aliases": {"human": "user", "gpt": "assistant"},
            },
        },
        {
            "name": "csv_qa",
            "path": str(FIXTURES / "qa.csv"),
            "columns": {"instruction": "question", "output": "answer"},
        },
    ]


def test_fake_follows_the_speech_level_contract():
    texts = ["설명해 주세요.", "밥 먹었어?", "좋습니다. 그래.", "1. 2. 3."]
    labels = fake_classify_batch(texts)
    assert labels == [POLITE, BANMAL, MIXED, NEUTRAL]
    assert set(labels) <= set(LEVELS)
    assert fake_classify_batch(fake_to_banmal_batch(["설명해 주세요."])) == [BANMAL]
