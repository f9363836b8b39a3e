"""Accounting for the build: how many rows each stage let through or removed, per source and reason.

Every removal goes through :meth:`Ledger.reject`, so the counts in stats.json and the data card add up: for
each source, rows in = rows out + the sum of its removals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Stage order, for reports.
STAGES = ("load", "normalise", "clean", "quality", "dedup", "speech_level", "sample")


@dataclass(frozen=True)
class RejectedExample:
    source: str
    row: int
    preview: str
    detail: str = ""  # e.g. which kept row a duplicate repeats


@dataclass
class Ledger:
    sources: list[str]
    examples_per_reason: int = 3
    removed: dict[str, Counter] = field(default_factory=dict)  # "stage/reason" -> Counter by source
    examples: dict[str, list[RejectedExample]] = field(default_factory=dict)
    passed: dict[str, Counter] = field(default_factory=dict)  # stage -> rows per source after that stage

    def reject(self, stage: str, reason: str, source: str, row: int, preview: str, detail: str = "") -> None:
        key = f"{stage}/{reason}"
        self.removed.setdefault(key, Counter())[source] += 1
        kept = self.examples.setdefault(key, [])
        if len(kept) < self.examples_per_reason:
            kept.append(RejectedExample(source, row, preview, detail))

    def count_removed(self, stage: str, reason: str, source: str, n: int) -> None:
        """Record `n` removals without examples (rows that sampling did not need, for instance)."""
        if n:
            self.removed.setdefault(f"{stage}/{reason}", Counter())[source] += n

    def record_passed(self, stage: str, per_source: Counter) -> None:
        self.passed[stage] = Counter({s: per_source.get(s, 0) for s in self.sources})

    def reasons(self) -> list[tuple[str, str]]:
        """(stage, reason) pairs seen, in stage order then by name."""
        pairs = [tuple(key.split("/", 1)) for key in self.removed]
        return sorted(pairs, key=lambda p: (STAGES.index(p[0]) if p[0] in STAGES else len(STAGES), p[1]))

    def total(self, stage: str, reason: str) -> int:
        return sum(self.removed.get(f"{stage}/{reason}", Counter()).values())

    def removed_by_source(self, source: str) -> dict[str, int]:
        out = {}
        for stage, reason in self.reasons():
            n = self.removed[f"{stage}/{reason}"].get(source, 0)
            if n:
                out[f"{stage}/{reason}"] = n
        return out
