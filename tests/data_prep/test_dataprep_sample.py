"""Weighted sampling (with a filter on the way) and the train/eval split."""

from __future__ import annotations

import pytest

from eeve_sft.data_prep.mix import SplitStage
from eeve_sft.data_prep.normalise import Example
from eeve_sft.data_prep.sample import allocate, sample, split


def test_allocate_splits_by_weight():
    assert allocate({"a": 1000, "b": 1000}, {"a": 3.0, "b": 1.0}, 100) == {"a": 75, "b": 25}


def test_allocate_gives_a_short_source_everything_and_shares_the_rest():
    quotas = allocate({"a": 10, "b": 1000, "c": 1000}, {"a": 1.0, "b": 1.0, "c": 2.0}, 100)
    assert quotas == {"a": 10, "b": 30, "c": 60}


def test_allocate_rounds_to_exactly_the_size_and_never_above_availability():
    quotas = allocate({"a": 50, "b": 50, "c": 50}, {"a": 1.0, "b": 1.0, "c": 1.0}, 100)
    assert sum(quotas.values()) == 100 and quotas == {"a": 34, "b": 33, "c": 33}
    assert allocate({"a": 5, "b": 7}, {"a": 1.0, "b": 1.0}, 100) == {"a": 5, "b": 7}
    assert allocate({"a": 0, "b": 7}, {"a": 1.0, "b": 1.0}, 3) == {"a": 0, "b": 3}


def rows(source: str, n: int) -> list[Example]:
    return [Example(source, i, [{"role": "user", "content": f"{source}{i}"}]) for i in range(n)]


def test_sample_fills_each_share_with_rows_that_pass_and_judges_only_what_it_needs():
    candidates = {"a": rows("a", 1000), "b": rows("b", 1000)}
    seen: list[Example] = []

    def every_other(batch: list[Example]) -> list[bool]:
        seen.extend(batch)
        return [e.row % 2 == 0 for e in batch]

    kept, judged = sample(candidates, {"a": 1.0, "b": 1.0}, 100, seed=3, accept=every_other)
    assert {s: len(r) for s, r in kept.items()} == {"a": 50, "b": 50}
    assert all(e.row % 2 == 0 for r in kept.values() for e in r)
    assert len(seen) == sum(judged.values()) < 400  # far fewer than the 2000 candidates
    assert len({id(e) for e in seen}) == len(seen)  # nothing judged twice


def test_sample_moves_the_share_of_a_source_that_runs_dry():
    candidates = {"a": rows("a", 100), "b": rows("b", 1000)}
    reject_most_of_a = lambda batch: [e.source == "b" or e.row < 10 for e in batch]  # noqa: E731
    kept, _ = sample(candidates, {"a": 1.0, "b": 1.0}, 200, seed=0, accept=reject_most_of_a)
    assert len(kept["a"]) == 10 and len(kept["b"]) == 190


def test_sample_is_seeded_and_without_size_keeps_every_row_that_passes():
    candidates = {"a": rows("a", 300)}
    pick = lambda seed: [e.row for e in sample(candidates, {"a": 1.0}, 20, seed=seed)[0]["a"]]  # noqa: E731
    assert pick(1) == pick(1) != pick(2)
    everything, judged = sample(candidates, {"a": 1.0}, None, seed=1, accept=lambda b: [e.row < 100 for e in b])
    assert len(everything["a"]) == 100 and judged == {"a": 300}


@pytest.mark.parametrize(
    ("settings", "total", "expected"),
    [
        (SplitStage(eval_size=10), 100, 10),
        (SplitStage(eval_fraction=0.1), 95, 10),
        (SplitStage(), 1000, 20),
        (SplitStage(eval_size=500), 100, 99),
        (SplitStage(enabled=False), 100, 0),
        (SplitStage(eval_size=5), 1, 0),
    ],
)
def test_eval_rows(settings, total, expected):
    assert settings.eval_rows(total) == expected


def test_split_is_a_seeded_partition():
    data = rows("a", 50)
    train, evaluation = split(data, SplitStage(eval_size=5), seed=4)
    assert len(evaluation) == 5 and len(train) == 45
    assert sorted(e.row for e in train + evaluation) == list(range(50))
    assert [e.row for e in split(data, SplitStage(eval_size=5), seed=4)[1]] == [e.row for e in evaluation]
