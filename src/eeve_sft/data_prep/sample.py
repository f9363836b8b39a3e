"""Sampling N rows with per-source weights, and the train/eval split.

A source's share of the sample is its weight over the total weight. A source with fewer rows than its share
gives all it has and the rest is shared among the others by weight, so N rows come out whenever the sources
hold N rows in all.

Sampling walks each source in a seeded random order and may pass rows through a filter on the way (the
speech-level stage): rows are judged only until every source's share is filled, so an expensive filter runs
on the rows the sample needs rather than on every row. Taking the first rows that pass in a random order is a
random sample of the rows that pass.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .mix import SplitStage
from .normalise import Example

Accept = Callable[[list[Example]], list[bool]]


def allocate(available: dict[str, int], weights: dict[str, float], size: int) -> dict[str, int]:
    """Rows to take from each source: `size` split by weight, capped at what each source has."""
    quotas = dict.fromkeys(available, 0)
    open_sources = [s for s in available if available[s] > 0]
    remaining = min(size, sum(available.values()))
    while remaining > 0 and open_sources:
        total_weight = sum(weights[s] for s in open_sources)
        shares = {s: remaining * weights[s] / total_weight for s in open_sources}
        full = [s for s in open_sources if shares[s] >= available[s]]
        if full:  # these give everything; share what they cannot give among the rest
            for s in full:
                remaining -= available[s]
                quotas[s] = available[s]
            open_sources = [s for s in open_sources if s not in full]
            continue
        floors = {s: int(shares[s]) for s in open_sources}
        leftover = remaining - sum(floors.values())
        # Largest remainders get the leftover rows; ties go to the earlier source.
        by_remainder = sorted(open_sources, key=lambda s: (floors[s] - shares[s], open_sources.index(s)))
        for s in by_remainder[:leftover]:
            floors[s] += 1
        for s in open_sources:
            quotas[s] = floors[s]
        remaining = 0
    return quotas


def seeded_order(items: Sequence, seed: int, name: str) -> list:
    order = list(items)
    random.Random(f"{seed}:sample:{name}").shuffle(order)
    return order


def sample(
    candidates: dict[str, list[Example]],
    weights: dict[str, float],
    size: int | None,
    seed: int,
    accept: Accept | None = None,
    chunk_size: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, list[Example]], dict[str, int]]:
    """Pick up to `size` rows (all when None) by weight among rows that `accept` passes.

    Returns the rows kept per source (in sampling order) and how many rows of each source were judged.
    """
    order = {s: seeded_order(rows, seed, s) for s, rows in candidates.items()}
    kept: dict[str, list[Example]] = {s: [] for s in candidates}
    judged = dict.fromkeys(candidates, 0)
    while True:
        # The most each source could still give: what it kept plus what it has not judged yet.
        could_give = {s: len(kept[s]) + len(order[s]) - judged[s] for s in candidates}
        quotas = could_give if size is None else allocate(could_give, weights, size)
        batch: list[Example] = []
        for s in candidates:
            take = max(0, quotas[s] - len(kept[s]))
            batch.extend(order[s][judged[s] : judged[s] + take])
            judged[s] += take
        if not batch:
            break
        for start in range(0, len(batch), chunk_size):
            part = batch[start : start + chunk_size]
            decisions = accept(part) if accept is not None else [True] * len(part)
            for example, keep in zip(part, decisions, strict=True):
                if keep:
                    kept[example.source].append(example)
            if progress:
                progress(sum(decisions))
    if size is not None:
        # Rounding can leave a source one row over its final share; the last rows taken go back.
        final = allocate({s: len(rows) for s, rows in kept.items()}, weights, size)
        kept = {s: rows[: final[s]] for s, rows in kept.items()}
    return kept, judged


def split(rows: list[Example], settings: SplitStage, seed: int) -> tuple[list[Example], list[Example]]:
    """Shuffle `rows` with the seed and cut off the eval rows; returns (train, eval)."""
    shuffled = list(rows)
    random.Random(f"{seed}:split").shuffle(shuffled)
    n_eval = settings.eval_rows(len(shuffled))
    return shuffled[n_eval:], shuffled[:n_eval]
