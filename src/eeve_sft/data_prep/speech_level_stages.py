"""The data build's speech-level stages: which assistant answers stay, and rewriting a share of user turns into 반말.

The classifier and the rewriter come from :mod:`eeve_sft.speech_level`; the build takes them as a
:class:`SpeechLevels` pair so that the stage logic does not depend on how they work inside (tests pass fakes).
A conversation's assistant level combines its answers' levels with :func:`eeve_sft.speech_level.levels.combine`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..speech_level import BANMAL, LABELS, POLITE, classify_batch, to_banmal_batch
from ..speech_level.levels import combine
from .ledger import Ledger
from .mix import BanmalRewriteStage, SpeechLevelStage
from .normalise import Example, preview

CALL_TEXTS = 4096  # texts per classify_batch call: each call is batched inside, this only paces the bar
REWRITE_ROWS = 4096  # rows whose user turns are rewritten per round


@dataclass(frozen=True)
class SpeechLevels:
    """The two calls the build needs: label texts, and rewrite texts into 반말."""

    classify_batch: Callable[..., list[str]]  # (texts, batch_size=...) -> one of LABELS per text
    to_banmal_batch: Callable[[list[str]], list[str]]


def load_speech_levels() -> SpeechLevels:
    """The project's classifier and rewriter from eeve_sft.speech_level."""
    return SpeechLevels(classify_batch, to_banmal_batch)


def label_texts(
    levels: SpeechLevels, texts: list[str], batch_size: int, progress: Callable[[int], object] | None = None
) -> list[str]:
    """Labels for `texts`, checked: one per text, each a known level."""
    labels: list[str] = []
    for start in range(0, len(texts), CALL_TEXTS):
        part = texts[start : start + CALL_TEXTS]
        got = list(levels.classify_batch(part, batch_size=batch_size))
        if len(got) != len(part):
            raise RuntimeError(f"classify_batch returned {len(got)} labels for {len(part)} texts")
        unknown = set(got) - set(LABELS)
        if unknown:
            raise RuntimeError(f"classify_batch returned unknown labels {sorted(unknown)}")
        labels.extend(got)
        if progress:
            progress(len(part))
    return labels


class AssistantLevelFilter:
    """Labels the answers of batches of conversations and says which to keep; counts every label it sees."""

    def __init__(self, levels: SpeechLevels, settings: SpeechLevelStage, ledger: Ledger) -> None:
        self.levels = levels
        self.settings = settings
        self.ledger = ledger
        self.seen: Counter = Counter()  # conversation levels of every row judged (the mix before)
        self.seconds = 0.0  # time spent classifying, reported as the stage's own timing

    def keeps(self, label: str) -> bool:
        return label == POLITE or getattr(self.settings, label) == "keep"

    def __call__(self, batch: list[Example]) -> list[bool]:
        texts, owners = [], []
        for i, example in enumerate(batch):
            for message in example.messages:
                if message["role"] == "assistant":
                    texts.append(message["content"])
                    owners.append(i)
        start = time.perf_counter()
        labels = label_texts(self.levels, texts, self.settings.batch_size)
        self.seconds += time.perf_counter() - start
        per_row: list[list[str]] = [[] for _ in batch]
        for owner, label in zip(owners, labels, strict=True):
            per_row[owner].append(label)
        decisions = []
        for example, row_labels in zip(batch, per_row, strict=True):
            level = combine(row_labels)
            example.assistant_level = level
            self.seen[level] += 1
            keep = self.keeps(level)
            if not keep:
                self.ledger.reject(
                    "speech_level", f"assistant_{level}", example.source, example.row, preview(example.messages)
                )
            decisions.append(keep)
        return decisions


@dataclass
class RewriteReport:
    target_rows: int = 0
    rows_rewritten: int = 0
    turns_rewritten: int = 0
    turns_not_banmal: int = 0  # rewrites that did not classify as 반말, so the original stayed
    eligible_rows: int = 0  # rows with at least one polite user turn
    user_before: Counter = field(default_factory=Counter)
    user_after: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)  # (before, after)

    def as_dict(self) -> dict:
        return {
            "target_rows": self.target_rows,
            "rows_rewritten": self.rows_rewritten,
            "turns_rewritten": self.turns_rewritten,
            "turns_not_banmal": self.turns_not_banmal,
            "eligible_rows": self.eligible_rows,
        }


def _checked_rewrites(
    examples: list[Example], rows: list[int], polite_turns: dict[int, list[int]], levels: SpeechLevels, batch_size: int
) -> dict[int, list[tuple[int, str, str]]]:
    """For each row, (message index, original, rewrite) of the polite user turns whose rewrite reads as 반말."""
    turns = [(i, j) for i in rows for j in polite_turns[i]]
    originals = [examples[i].messages[j]["content"] for i, j in turns]
    rewritten = list(levels.to_banmal_batch(originals))
    if len(rewritten) != len(originals):
        raise RuntimeError(f"to_banmal_batch returned {len(rewritten)} texts for {len(originals)}")
    checks = label_texts(levels, rewritten, batch_size)
    good: dict[int, list[tuple[int, str, str]]] = {}
    for (i, j), before, after, label in zip(turns, originals, rewritten, checks, strict=True):
        if label == BANMAL and after.strip() and after != before:
            good.setdefault(i, []).append((j, before, after))
    return good


def rewrite_user_turns(
    examples: list[Example],
    levels: SpeechLevels,
    settings: BanmalRewriteStage,
    seed: int,
    show_progress: bool = False,
    keep_examples: int = 3,
) -> RewriteReport:
    """Rewrite the polite user turns of `share` of the rows into 반말, in place.

    Rows are tried in a seeded random order. A rewritten turn is used only when it classifies as 반말;
    otherwise the original stays. Rows are tried until `share` of all rows carry a rewrite, or none are left.
    """
    report = RewriteReport()
    user_texts, owners = [], []
    for i, example in enumerate(examples):
        for j, message in enumerate(example.messages):
            if message["role"] == "user":
                user_texts.append(message["content"])
                owners.append((i, j))
    with tqdm(total=len(user_texts), desc="user turns", unit="turn", disable=not show_progress, leave=False) as bar:
        labels = label_texts(levels, user_texts, settings.batch_size, progress=bar.update)
    polite_turns: dict[int, list[int]] = {}
    for (i, j), label in zip(owners, labels, strict=True):
        report.user_before[label] += 1
        if label == POLITE:
            polite_turns.setdefault(i, []).append(j)

    report.target_rows = round(settings.share * len(examples))
    eligible = sorted(polite_turns)
    random.Random(f"{seed}:banmal_rewrite").shuffle(eligible)
    report.eligible_rows = len(eligible)
    final = Counter(report.user_before)
    cursor = 0
    with tqdm(total=report.target_rows, desc="반말 rewrite", unit="row", disable=not show_progress, leave=False) as bar:
        while report.rows_rewritten < report.target_rows and cursor < len(eligible):
            # A little more than is missing, as some rewrites fail the 반말 check; at most REWRITE_ROWS at a time,
            # so that the bar moves and no row is rewritten long after the share is reached.
            wanted = report.target_rows - report.rows_rewritten
            chunk = eligible[cursor : cursor + min(wanted + wanted // 4 + 8, REWRITE_ROWS)]
            cursor += len(chunk)
            good = _checked_rewrites(examples, chunk, polite_turns, levels, settings.batch_size)
            for i in chunk:
                if report.rows_rewritten >= report.target_rows:
                    break
                report.turns_not_banmal += len(polite_turns[i]) - len(good.get(i, []))
                if not good.get(i):
                    continue
                for j, before, after in good[i]:
                    examples[i].messages[j] = {"role": "user", "content": after}
                    if len(report.examples) < keep_examples:
                        report.examples.append((before, after))
                report.rows_rewritten += 1
                report.turns_rewritten += len(good[i])
                final[POLITE] -= len(good[i])
                final[BANMAL] += len(good[i])
                bar.update(1)
    report.user_after = +final
    return report
