"""Retrieval quality on questions with a known answering passage: recall@k and mean reciprocal rank.

A questions file is JSON Lines ``{"query", "source", "passage"}``: `passage` is text of the answering paragraph as
the document says it. A retrieved chunk answers when it comes from `source` and holds the passage (compared
without whitespace, since PDF extraction breaks lines its own way), so the ground truth does not depend on how the
documents were chunked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..jsonfiles import iter_jsonl
from .index import Hit, RetrievalIndex


@dataclass(frozen=True)
class Question:
    query: str
    source: str
    passage: str


def load_questions(path: str | Path) -> list[Question]:
    questions = []
    for number, row in iter_jsonl(path):
        if not all(isinstance(row.get(k), str) and row[k].strip() for k in ("query", "source", "passage")):
            raise UserError(f"{path} line {number}: needs non-empty 'query', 'source' and 'passage'")
        questions.append(Question(row["query"], row["source"], row["passage"]))
    return questions


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def answers(hit: Hit, question: Question) -> bool:
    return hit.chunk.source == question.source and _squash(question.passage) in _squash(hit.chunk.text)


def evaluate(index: RetrievalIndex, questions: list[Question], mode: str, ks: tuple[int, ...] = (1, 3, 5)) -> dict:
    """recall@k for each k, MRR over the top max(k), and the questions missed at k=1."""
    depth = max(ks)
    results = index.search_batch([q.query for q in questions], depth, mode)
    first_rank: list[int | None] = []
    for question, hits in zip(questions, results, strict=True):
        first_rank.append(next((h.rank for h in hits if answers(h, question)), None))
    n = len(questions)
    report = {"mode": mode, "questions": n}
    for k in ks:
        report[f"recall@{k}"] = round(sum(1 for r in first_rank if r is not None and r <= k) / n, 4)
    report["mrr"] = round(sum(1 / r for r in first_rank if r is not None) / n, 4)
    report["missed_at_1"] = [q.query for q, r in zip(questions, first_rank, strict=True) if r != 1]
    return report
