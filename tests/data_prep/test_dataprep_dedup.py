"""Exact and MinHash near-duplicate detection."""

from __future__ import annotations

import random

import numpy as np
from datasketch import MinHash

from eeve_sft.data_prep.dedup import (
    NearDuplicateIndex,
    dedup_text,
    exact_key,
    find_exact_duplicates,
    shingle_hash,
    shingles,
    signatures,
)

ANSWER = (
    "지구가 태양 주위를 한 바퀴 도는 데는 약 365.25일이 걸립니다. 그래서 네 해에 한 번 윤년을 두어 "
    "2월에 하루를 더합니다. 이 규칙 덕분에 달력과 계절이 크게 어긋나지 않습니다."
)


def convo(user: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_vectorised_signatures_equal_datasketch_minhash():
    texts = [dedup_text(convo("질문", ANSWER)), "짧음", "", "abcdefghij"]
    ours = signatures(texts, num_perm=64, seed=3, size=5)
    for text, row in zip(texts, ours, strict=True):
        reference = MinHash(num_perm=64, seed=3, hashfunc=shingle_hash)
        reference.update_batch(shingles(text, 5))
        np.testing.assert_array_equal(reference.hashvalues, row)


def test_signatures_do_not_depend_on_batching():
    texts = [dedup_text(convo(f"질문 {i}", ANSWER * (i % 3 + 1))) for i in range(50)]
    together = signatures(texts, 32, 1, 5)
    alone = np.vstack([signatures([t], 32, 1, 5) for t in texts])
    np.testing.assert_array_equal(together, alone)


def test_dedup_text_ignores_case_spacing_punctuation_and_system():
    a = [{"role": "system", "content": "시스템"}] + convo("Hello, 세계!", "답   입니다.")
    b = convo("hello 세계", "답입니다")
    assert dedup_text(a) == dedup_text(b) == "hello세계답입니다"


def test_exact_duplicates_point_at_the_first_occurrence():
    keys = [exact_key(t) for t in ["가", "나", "가", "다", "나", "가"]]
    assert find_exact_duplicates(keys) == [None, None, 0, None, 1, 0]


def _index_run(texts: list[str], threshold: float = 0.8) -> list[int | None]:
    index = NearDuplicateIndex(threshold=threshold, num_perm=128, seed=1)
    sigs = signatures(texts, 128, 1, 5)
    return [index.match_or_add(i, s) for i, s in enumerate(sigs)]


def test_near_duplicate_is_matched_to_the_kept_original():
    original = dedup_text(convo("지구의 공전 주기는?", ANSWER))
    edited = dedup_text(convo("지구의 공전 주기는?", ANSWER.replace("2월에 ", "")))
    unrelated = dedup_text(
        convo("김치찌개 끓이는 법", "잘 익은 김치를 돼지고기와 함께 충분히 볶은 다음 물을 붓고 오래 끓입니다.")
    )
    assert _index_run([original, unrelated, edited]) == [None, None, 0]


def test_threshold_decides_how_close_is_a_duplicate():
    original = dedup_text(convo("질문", ANSWER))
    half = dedup_text(
        convo("질문", ANSWER[: len(ANSWER) // 2] + " 완전히 다른 뒷부분이 길게 이어지는 다른 답변입니다 정말로요")
    )
    assert _index_run([original, half], threshold=0.9) == [None, None]
    assert _index_run([original, half], threshold=0.2) == [None, 0]


def test_a_dropped_duplicate_does_not_become_an_original():
    # b shares two thirds with a, c two thirds with b but one third with a: c stays, because b was dropped.
    rng = random.Random(0)
    p, q, r, s, t = ("".join(chr(rng.randrange(0xAC00, 0xD7A4)) for _ in range(60)) for _ in range(5))
    a, b, c = p + q + r, p + q + s, t + q + s
    assert _index_run([a, b, c], threshold=0.4) == [None, 0, None]
    assert _index_run([a, c], threshold=0.4) == [None, None]
