"""Building a training set from a mix: every stage in order, then one atomic write of the outputs.

Stage order: read -> normalise -> clean -> quality -> dedup -> (speech level while sampling) -> 반말 rewrite
-> train/eval split -> write. Cheap stages run first so that the expensive ones (MinHash, the speech-level
classifier) see as few rows as possible.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..jsonfiles import write_json, write_jsonl
from ..output_dir import atomic_output_dir, check_output_dir
from .clean import clean_messages
from .data_card import SourceCounts, make_stats, render_data_card
from .dedup import (
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    NearDuplicateIndex,
    dedup_text,
    exact_key,
    find_exact_duplicates,
    signatures_job,
)
from .ledger import Ledger
from .mix import CleanStage, Mix, QualityStage
from .normalise import Example, Messages, normalise_row, preview
from .parallel import chunked, map_chunks
from .quality import quality_problem
from .sample import sample, split
from .sources import PREVIEW_CHARS, BadRow, LoadedSource, check_columns, load_source
from .speech_level_stages import (
    AssistantLevelFilter,
    RewriteReport,
    SpeechLevels,
    load_speech_levels,
    rewrite_user_turns,
)

JOB_ROWS = 2000  # rows per worker job: big enough to amortise pickling, small enough for a smooth bar
EMPTY_AFTER_CLEAN = "empty_after_clean"


@dataclass
class BuildResult:
    output_dir: Path
    stats: dict


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def _clean_job(job: tuple[list[Messages], CleanStage]) -> list[Messages | None]:
    conversations, settings = job
    return [clean_messages(messages, settings) for messages in conversations]


def _quality_job(job: tuple[list[Messages], QualityStage]) -> list[str | None]:
    conversations, settings = job
    return [quality_problem(messages, settings) for messages in conversations]


def _row_preview(row: dict) -> str:
    text = json.dumps(row, ensure_ascii=False, default=str)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _per_source(examples: list[Example]) -> Counter:
    return Counter(example.source for example in examples)


class Builder:
    """One build of one mix. Holds the counts that stats.json and the data card are made from."""

    def __init__(self, mix: Mix, speech_levels: SpeechLevels | None, show_progress: bool) -> None:
        self.mix = mix
        self.show_progress = show_progress
        self.ledger = Ledger([str(s.name) for s in mix.sources], mix.rejected_examples)
        self.timer = StageTimer()
        self.started = time.perf_counter()
        self.counts: dict[str, SourceCounts] = {}
        self.speech_levels = speech_levels
        self.assistant_before: Counter | None = None
        self.assistant_after: Counter | None = None
        self.rewrite: RewriteReport | None = None

    def bar(self, **kwargs) -> tqdm:
        return tqdm(disable=not self.show_progress, leave=False, **kwargs)

    # -- stages ---------------------------------------------------------------------------------------------

    def read(self) -> list[LoadedSource]:
        """Every source, each checked against its column mapping before any row of any source is processed."""
        loaded = []
        with self.timer.stage("load"):
            for spec in self.mix.sources:
                source = load_source(spec, self.mix.seed, self.show_progress)
                check_columns(source)
                self.counts[str(spec.name)] = SourceCounts(spec.location, source.rows_available, len(source))
                loaded.append(source)
        return loaded

    def normalise(self, sources: list[LoadedSource]) -> list[Example]:
        examples: list[Example] = []
        with self.timer.stage("normalise"):
            for source in sources:
                spec, name = source.spec, str(source.spec.name)
                rows = self.bar(iterable=source.iter_rows(), total=len(source), desc=f"normalise {name}", unit="row")
                for number, row in rows:
                    if isinstance(row, BadRow):
                        self.ledger.reject("load", row.reason, name, number, row.preview)
                        continue
                    result = normalise_row(row, spec.columns, self.mix.normalise)
                    if isinstance(result, str):
                        self.ledger.reject("normalise", result, name, number, _row_preview(row))
                        continue
                    examples.append(Example(name, number, result))
        self.ledger.record_passed("normalise", _per_source(examples))
        return examples

    def _jobs(self, examples: list[Example], settings: object) -> tuple[list, list[int]]:
        jobs, sizes = [], []
        for part in chunked(examples, JOB_ROWS):
            jobs.append(([e.messages for e in part], settings))
            sizes.append(len(part))
        return jobs, sizes

    def clean(self, examples: list[Example]) -> list[Example]:
        if not self.mix.clean.enabled:
            return examples
        with self.timer.stage("clean"):
            jobs, sizes = self._jobs(examples, self.mix.clean)
            cleaned = map_chunks(_clean_job, jobs, sizes, self.mix.num_proc, "clean", self.show_progress)
            kept = []
            for example, messages in zip(examples, cleaned, strict=True):
                if messages is None:
                    self.ledger.reject(
                        "clean", EMPTY_AFTER_CLEAN, example.source, example.row, preview(example.messages)
                    )
                    continue
                example.messages = messages
                kept.append(example)
        self.ledger.record_passed("clean", _per_source(kept))
        return kept

    def quality(self, examples: list[Example]) -> list[Example]:
        if not self.mix.quality.enabled:
            return examples
        with self.timer.stage("quality"):
            jobs, sizes = self._jobs(examples, self.mix.quality)
            problems = map_chunks(_quality_job, jobs, sizes, self.mix.num_proc, "quality filters", self.show_progress)
            kept = []
            for example, problem in zip(examples, problems, strict=True):
                if problem is not None:
                    self.ledger.reject("quality", problem, example.source, example.row, preview(example.messages))
                    continue
                kept.append(example)
        self.ledger.record_passed("quality", _per_source(kept))
        return kept

    def dedup(self, examples: list[Example]) -> list[Example]:
        settings = self.mix.dedup
        if not settings.enabled or not (settings.exact or settings.near.enabled):
            return examples
        with self.timer.stage("dedup"):
            texts = [dedup_text(e.messages) for e in self.bar(iterable=examples, desc="dedup text", unit="row")]
            keep = [True] * len(examples)
            if settings.exact:
                for i, first in enumerate(find_exact_duplicates(exact_key(t) for t in texts)):
                    if first is not None:
                        keep[i] = False
                        self._reject_duplicate(EXACT_DUPLICATE, examples[i], examples[first])
            if settings.near.enabled:
                self._near_dedup(examples, texts, keep)
            kept = [e for e, k in zip(examples, keep, strict=True) if k]
        self.ledger.record_passed("dedup", _per_source(kept))
        return kept

    def _reject_duplicate(self, reason: str, example: Example, original: Example) -> None:
        detail = f"repeats `{original.source}` row {original.row}"
        self.ledger.reject("dedup", reason, example.source, example.row, preview(example.messages), detail)

    def _near_dedup(self, examples: list[Example], texts: list[str], keep: list[bool]) -> None:
        near = self.mix.dedup.near
        todo = [i for i, k in enumerate(keep) if k]
        jobs, sizes = [], []
        for part in chunked(todo, JOB_ROWS):
            jobs.append(([texts[i] for i in part], near.num_perm, self.mix.seed, near.shingle_size))
            sizes.append(len(part))
        hashvalues = map_chunks(signatures_job, jobs, sizes, self.mix.num_proc, "minhash", self.show_progress)
        index = NearDuplicateIndex(near.threshold, near.num_perm, self.mix.seed)
        pairs = self.bar(
            iterable=zip(todo, hashvalues, strict=True), total=len(todo), desc="near-duplicates", unit="row"
        )
        for i, values in pairs:
            first = index.match_or_add(i, values)
            if first is not None:
                keep[i] = False
                self._reject_duplicate(NEAR_DUPLICATE, examples[i], examples[first])

    def speech_and_sample(self, examples: list[Example]) -> list[Example]:
        mix = self.mix
        candidates: dict[str, list[Example]] = {str(s.name): [] for s in mix.sources}
        for example in examples:
            candidates[example.source].append(example)
        for name, rows in candidates.items():
            self.counts[name].candidates = len(rows)
        weights = {str(s.name): s.weight for s in mix.sources}
        size = mix.sample.size if mix.sample.enabled else None

        speech_filter = None
        if mix.speech_level.enabled:
            assert self.speech_levels is not None
            speech_filter = AssistantLevelFilter(self.speech_levels, mix.speech_level, self.ledger)
        total = len(examples) if size is None else min(size, len(examples))
        desc = "speech level + sampling" if speech_filter else "sampling"
        start = time.perf_counter()
        with self.bar(total=total, desc=desc, unit="row") as bar:
            kept, judged = sample(
                candidates, weights, size, mix.seed, accept=speech_filter, progress=lambda n: bar.update(n)
            )
        elapsed = time.perf_counter() - start
        speech_seconds = speech_filter.seconds if speech_filter else 0.0
        if speech_filter:
            self.timer.seconds["speech_level"] = round(speech_seconds, 3)
        self.timer.seconds["sample"] = round(elapsed - speech_seconds, 3)

        speech_removed = Counter()
        for reason_key, per_source in self.ledger.removed.items():
            if reason_key.startswith("speech_level/"):
                speech_removed.update(per_source)
        for name, rows in kept.items():
            c = self.counts[name]
            c.speech_judged = judged[name] if speech_filter else 0
            c.sampled = len(rows)
            self.ledger.count_removed("sample", "not_sampled", name, c.candidates - c.sampled - speech_removed[name])
        sampled = [e for name in candidates for e in kept[name]]
        self.ledger.record_passed("sample", _per_source(sampled))
        if speech_filter:
            self.assistant_before = speech_filter.seen
            self.assistant_after = Counter(e.assistant_level for e in sampled)
        return sampled

    def rewrite_users(self, examples: list[Example]) -> None:
        settings = self.mix.banmal_rewrite
        if not settings.enabled:
            return
        assert self.speech_levels is not None
        with self.timer.stage("banmal_rewrite"):
            self.rewrite = rewrite_user_turns(
                examples, self.speech_levels, settings, self.mix.seed, self.show_progress, self.mix.rejected_examples
            )

    def write(self, target: Path, overwrite: bool, train: list[Example], evaluation: list[Example]) -> dict:
        for part, rows in (("train", train), ("eval", evaluation)):
            for name, n in _per_source(rows).items():
                setattr(self.counts[name], part, n)
        with atomic_output_dir(target, overwrite) as building:
            with self.timer.stage("write"):
                write_jsonl(building / "train.jsonl", ({"messages": e.messages} for e in train))
                if self.mix.split.enabled:
                    write_jsonl(building / "eval.jsonl", ({"messages": e.messages} for e in evaluation))
            self.timer.seconds["total"] = round(time.perf_counter() - self.started, 3)
            stats = make_stats(
                self.mix,
                self.ledger,
                self.counts,
                self.assistant_before,
                self.assistant_after,
                self.rewrite,
                dict(self.timer.seconds),
            )
            write_json(building / "stats.json", stats)
            (building / "data_card.md").write_text(render_data_card(stats, self.ledger, self.rewrite), encoding="utf-8")
        return stats


def build_dataset(
    mix: Mix,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    speech_levels: SpeechLevels | None = None,
    show_progress: bool = True,
) -> BuildResult:
    """Build `mix` into `output_dir`: train.jsonl, eval.jsonl, stats.json and data_card.md.

    `speech_levels` replaces the classifier and rewriter of eeve_sft.speech_level (tests pass small fakes).
    Raises UserError, before anything is written, for an output folder in the way or a column mapping
    that names a column a source lacks.
    """
    target = Path(output_dir)
    check_output_dir(target, overwrite)
    if speech_levels is None and (mix.speech_level.enabled or mix.banmal_rewrite.enabled):
        speech_levels = load_speech_levels()
    builder = Builder(mix, speech_levels, show_progress)
    examples = builder.normalise(builder.read())
    examples = builder.clean(examples)
    examples = builder.quality(examples)
    examples = builder.dedup(examples)
    examples = builder.speech_and_sample(examples)
    builder.rewrite_users(examples)
    with builder.timer.stage("split"):
        train, evaluation = split(examples, mix.split, mix.seed)
    stats = builder.write(target, overwrite, train, evaluation)
    return BuildResult(target, stats)
