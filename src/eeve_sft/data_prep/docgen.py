"""Training rows generated from the user's documents: questions per chunk, answers grounded in retrieved passages.

For every chunk of an index (see :mod:`eeve_sft.retrieval`), an instruction model writes questions a user of the
documents would ask; each question is answered in 존댓말 from the top-k chunks retrieved for it, laid out exactly
as ``scripts/chat.py --rag`` shows them (:func:`eeve_sft.retrieval.format_context`). Rows are kept only when they
pass, in order: question length and duplicates, then on the answer: cut off without eos, length, speech level
(``polite`` only) and groundedness (the share of the answer's nouns and verb stems found in the passages). A share
of the kept questions is then rewritten into 반말. Every removal is counted per stage and reason.

Generation goes through :func:`eeve_sft.inference.answer.generate_batch`; `DocGen` takes any callable with that shape, so
tests drive the pipeline with small deterministic generators. Written question/answer pairs (:func:`load_pairs`) take
the place of both generation steps: no model runs, and retrieval and every filter apply as to generated rows.
"""

from __future__ import annotations

import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError, yaml_problem
from ..inference.answer import GenerationResult
from ..jsonfiles import read_jsonl, write_json, write_jsonl
from ..output_dir import atomic_output_dir, check_output_dir
from ..retrieval.chunking import Chunk
from ..retrieval.context import format_context, sources_of
from ..retrieval.index import Hit, RetrievalIndex
from ..retrieval.lexical import content_words
from ..validation import SchemaError, build, limits

Generate = Callable[[list[list[dict]], dict], list[GenerationResult]]  # (conversations, sampling) -> results

QUESTION_SYSTEM = "당신은 회사 업무 문서를 읽고, 그 문서를 쓰는 직원이 실제로 물어볼 만한 질문을 만드는 도우미입니다."
QUESTION_PROMPT = (
    "위 문서를 읽고, 이 문서로 답할 수 있는 질문을 {n}개 만들어 주세요. "
    "질문은 존댓말 한 문장으로, 한 줄에 하나씩, 번호를 붙여 써 주세요."
)
ANSWER_SYSTEM = (
    "당신은 회사 문서를 근거로 답하는 도우미입니다. 질문 앞에 인용된 참고 문서의 내용만으로, "
    "정확하고 자연스러운 존댓말로 답하세요. 문서에 없는 내용은 지어내지 마세요."
)
_LIST_MARK = re.compile(r"^\s*(?:[-*•·]|\(?\d{1,2}[.)]|Q\d*[.:)]?|질문\s*\d*[.:)]?)\s*")
_HANGUL = re.compile(r"[가-힣]")


@dataclass(frozen=True)
class DocGenConfig:
    """Settings of one generation run (a YAML file of these keys overrides the defaults)."""

    questions_per_chunk: int = field(default=2, metadata=limits(1, 20))
    top_k: int = field(default=3, metadata=limits(1, 20))
    retrieval_mode: str | None = None  # bm25, dense or hybrid; default: the index's best
    banmal_share: float = field(default=0.5, metadata=limits(0, 1))
    min_groundedness: float = field(default=0.6, metadata=limits(0, 1))
    min_question_chars: int = field(default=6, metadata=limits(low=1))
    max_question_chars: int = field(default=200, metadata=limits(low=1))
    min_answer_chars: int = field(default=15, metadata=limits(low=1))
    max_answer_chars: int = field(default=1500, metadata=limits(low=1))
    # None: as many prompts at once as GPU memory holds (generate_batch's automatic size), since a decoding step
    # costs about as much for a few rows as for many (benchmarks/RESULTS.md)
    batch_size: int | None = field(default=None, metadata=limits(low=1))
    question_max_new_tokens: int = field(default=256, metadata=limits(low=1))
    answer_max_new_tokens: int = field(default=512, metadata=limits(low=1))
    temperature: float = field(default=0.7, metadata=limits(above=0))
    top_p: float = field(default=0.9, metadata=limits(high=1, above=0))
    repetition_penalty: float = field(default=1.1, metadata=limits(above=0))
    seed: int = 42
    examples_per_reason: int = field(default=3, metadata=limits(low=0))  # rejected examples in the data card

    def check(self, where: str) -> None:
        if self.min_question_chars > self.max_question_chars:
            raise SchemaError("'min_question_chars' is above 'max_question_chars'")
        if self.min_answer_chars > self.max_answer_chars:
            raise SchemaError("'min_answer_chars' is above 'max_answer_chars'")
        if self.retrieval_mode not in (None, "bm25", "dense", "hybrid"):
            raise SchemaError(f"'retrieval_mode' must be bm25, dense or hybrid, got {self.retrieval_mode!r}")

    def sampling(self, max_new_tokens: int) -> dict:
        return {
            "max_new_tokens": max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }


def load_config(path: str | Path | None, **overrides) -> DocGenConfig:
    """Defaults, then the YAML file's keys, then the command line's (those that are not None)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config {path}: not valid YAML{yaml_problem(err)}") from None
        if not isinstance(data, dict):
            raise UserError(f"config {path}: expected a mapping of keys to values")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = build(DocGenConfig, data, "")
    except SchemaError as err:
        raise UserError(f"config{' ' + str(path) if path else ''}: {err}") from None
    assert isinstance(config, DocGenConfig)
    return config


def normalise_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def question_prompt(chunk: Chunk, n: int) -> list[dict]:
    quoted = format_context("", [Hit(1, 0.0, chunk)]).rstrip()
    return [
        {"role": "system", "content": QUESTION_SYSTEM},
        {"role": "user", "content": f"{quoted}\n\n{QUESTION_PROMPT.format(n=n)}"},
    ]


def answer_prompt(question: str, hits: list[Hit]) -> list[dict]:
    """The answering conversation: the passages and the question in the layout chat --rag shows the model."""
    return [{"role": "system", "content": ANSWER_SYSTEM}, {"role": "user", "content": format_context(question, hits)}]


def parse_questions(text: str, limit: int) -> list[str]:
    """The questions in a model's numbered or bulleted list: one per line, list marks removed, Korean only."""
    out: list[str] = []
    for line in text.splitlines():
        question = normalise_text(_LIST_MARK.sub("", line, count=1)).strip("\"'“”")
        if question and _HANGUL.search(question) and question not in out:
            out.append(question)
        if len(out) == limit:
            break
    return out


def groundedness(answer: str, context: str) -> float:
    """Share of the answer's content words (Kiwi nouns and verb stems) that occur in the context."""
    words = content_words(answer)
    if not words:
        return 0.0
    return len(words & content_words(context)) / len(words)


@dataclass
class Candidate:
    chunk_id: int
    question: str
    hits: list[Hit] = field(default_factory=list)
    answer: str = ""
    answer_tokens: int = 0
    groundedness: float = 0.0
    banmal: bool = False

    def user_turn(self) -> str:
        return format_context(self.question, self.hits)

    def row(self) -> dict:
        return {
            "messages": [{"role": "user", "content": self.user_turn()}, {"role": "assistant", "content": self.answer}],
            "sources": sources_of(self.hits),
        }


class Tally:
    """Counts per stage and reason, and a few rejected examples per reason for the data card."""

    def __init__(self, examples_per_reason: int) -> None:
        self.removed: dict[str, Counter] = {}
        self.passed: dict[str, int] = {}
        self.examples: dict[str, list[dict]] = {}
        self.keep = examples_per_reason

    def reject(self, stage: str, reason: str, example: dict) -> None:
        self.removed.setdefault(stage, Counter())[reason] += 1
        bucket = self.examples.setdefault(f"{stage}/{reason}", [])
        if len(bucket) < self.keep:
            bucket.append(example)

    def as_dict(self) -> dict:
        return {"passed": dict(self.passed), "removed": {s: dict(sorted(c.items())) for s, c in self.removed.items()}}


def load_pairs(path: str | Path) -> list[Candidate]:
    """Written question/answer pairs, JSON Lines ``{"question": ..., "answer": ...}``, as candidates to retrieve
    passages for and filter like generated ones."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file not found: {path}")
    pairs = []
    for number, row in read_jsonl(path):
        if not all(isinstance(row.get(k), str) and row[k].strip() for k in ("question", "answer")):
            raise UserError(f"{path} line {number}: needs non-empty string 'question' and 'answer'")
        pairs.append(Candidate(-1, normalise_text(row["question"]), answer=row["answer"].strip()))
    if not pairs:
        raise UserError(f"pairs file {path} is empty: it holds no question/answer pair")
    return pairs


@dataclass
class DocGenResult:
    output_dir: Path
    stats: dict


class DocGen:
    def __init__(
        self, index: RetrievalIndex, generate: Generate, config: DocGenConfig, model_name: str = "", speech=None
    ) -> None:
        from .. import speech_level

        self.index = index
        self.generate = generate
        self.config = config
        self.model_name = model_name
        self.speech = speech or speech_level
        self.tally = Tally(config.examples_per_reason)
        self.timings: dict[str, float] = {}
        self.tokens = Counter()

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def questions(self, chunks: list[Chunk]) -> list[Candidate]:
        cfg = self.config
        start = time.perf_counter()
        prompts = [question_prompt(c, cfg.questions_per_chunk) for c in chunks]
        results = self.generate(prompts, cfg.sampling(cfg.question_max_new_tokens))
        self._timed("generate_questions", start)
        written: list[Candidate] = []
        for chunk, result in zip(chunks, results, strict=True):
            self.tokens["question"] += result.new_tokens
            parsed = parse_questions(result.text, cfg.questions_per_chunk)
            if not parsed:
                self.tally.reject("questions", "no_question_parsed", {"chunk": chunk.id, "output": result.text[:300]})
            written += [Candidate(chunk.id, question) for question in parsed]
        return self.keep_questions(written)

    def keep_questions(self, candidates: list[Candidate]) -> list[Candidate]:
        """The question filters: length, then repeats of an earlier question."""
        cfg = self.config
        seen: set[str] = set()
        out: list[Candidate] = []
        for candidate in candidates:
            question = candidate.question
            example = {"chunk": candidate.chunk_id, "question": question}
            if not cfg.min_question_chars <= len(question) <= cfg.max_question_chars:
                self.tally.reject("questions", "question_length", example)
            elif question.rstrip("?？ ") in seen:
                self.tally.reject("questions", "duplicate_question", example)
            else:
                seen.add(question.rstrip("?？ "))
                out.append(candidate)
        self.tally.passed["questions"] = len(out)
        return out

    def answers(self, candidates: list[Candidate], written: bool = False) -> list[Candidate]:
        """Retrieve passages for every question, answer it (or, when `written`, keep the answer it came with) and
        filter the answers."""
        cfg = self.config
        start = time.perf_counter()
        hit_lists = self.index.search_batch([c.question for c in candidates], cfg.top_k, cfg.retrieval_mode)
        answerable = []
        for candidate, hits in zip(candidates, hit_lists, strict=True):
            candidate.hits = hits
            if hits:
                answerable.append(candidate)
            else:  # no chunk shares a word with the question: nothing to answer from
                self.tally.reject("answers", "nothing_retrieved", {"question": candidate.question})
        candidates = answerable
        self._timed("retrieve", start)
        cut_off = [False] * len(candidates)
        if not written:
            start = time.perf_counter()
            prompts = [answer_prompt(c.question, c.hits) for c in candidates]
            results = self.generate(prompts, cfg.sampling(cfg.answer_max_new_tokens)) if prompts else []
            self._timed("generate_answers", start)
            for candidate, result in zip(candidates, results, strict=True):
                self.tokens["answer"] += result.new_tokens
                candidate.answer = result.text.strip()
                candidate.answer_tokens = result.new_tokens
            cut_off = [result.hit_length_limit for result in results]
        start = time.perf_counter()
        pending: list[Candidate] = []
        for candidate, was_cut in zip(candidates, cut_off, strict=True):
            example = {"question": candidate.question, "answer": candidate.answer[:300]}
            if was_cut:
                self.tally.reject("answers", "cut_off_without_eos", example)
            elif not cfg.min_answer_chars <= len(candidate.answer) <= cfg.max_answer_chars:
                self.tally.reject("answers", "answer_length", example)
            else:
                pending.append(candidate)
        labels = self.speech.classify_batch([c.answer for c in pending]) if pending else []
        kept: list[Candidate] = []
        for candidate, label in zip(pending, labels, strict=True):
            example = {"question": candidate.question, "answer": candidate.answer[:300]}
            if label != "polite":
                self.tally.reject("answers", f"answer_{label}", example)
                continue
            context = "\n".join(h.chunk.text for h in candidate.hits)
            candidate.groundedness = groundedness(candidate.answer, context)
            if candidate.groundedness < cfg.min_groundedness:
                example["groundedness"] = round(candidate.groundedness, 3)
                self.tally.reject("answers", "not_grounded", example)
                continue
            kept.append(candidate)
        self._timed("filter_answers", start)
        self.tally.passed["answers"] = len(kept)
        return kept

    def rewrite(self, candidates: list[Candidate]) -> dict:
        """Rewrite `banmal_share` of the questions into 반말; a rewrite that does not read as 반말 is not used."""
        cfg = self.config
        start = time.perf_counter()
        levels = self.speech.classify_batch([c.question for c in candidates]) if candidates else []
        polite = [c for c, level in zip(candidates, levels, strict=True) if level == "polite"]
        target = round(cfg.banmal_share * len(candidates))
        random.Random(f"{cfg.seed}:docgen_banmal").shuffle(polite)
        chosen = polite[: target + target // 4 + 2]  # a few spare: some rewrites fail the check
        rewritten = self.speech.to_banmal_batch([c.question for c in chosen]) if chosen else []
        labels = self.speech.classify_batch(rewritten) if rewritten else []
        done = failed = 0
        for candidate, after, label in zip(chosen, rewritten, labels, strict=True):
            if done >= target:
                break
            if label == "banmal" and after != candidate.question:
                candidate.question, candidate.banmal = after, True
                done += 1
            else:
                failed += 1
        self._timed("banmal_rewrite", start)
        return {"target": target, "rewritten": done, "not_banmal": failed, "polite_questions": len(polite)}

    def run(self, limit: int | None, pairs: list[Candidate] | None = None) -> tuple[list[Candidate], dict]:
        """Generate questions and answers for the first `limit` chunks; or, given written question/answer `pairs`,
        put each through retrieval and the same filters without a model."""
        chunks = [] if pairs is not None else self.index.chunks if limit is None else self.index.chunks[:limit]
        started = time.perf_counter()
        candidates = self.keep_questions(pairs) if pairs is not None else self.questions(chunks)
        kept = self.answers(candidates, written=pairs is not None) if candidates else []
        rewrite = self.rewrite(kept)
        self.timings["total"] = round(time.perf_counter() - started, 3)
        generate_s = self.timings.get("generate_questions", 0.0) + self.timings.get("generate_answers", 0.0)
        generated = self.tokens["question"] + self.tokens["answer"]
        stats = {
            "model": self.model_name,
            "index": str(self.index.dir),
            "index_documents": [f["path"] for f in self.index.manifest["files"]],
            "config": asdict(self.config),
            "counts": {
                "chunks": len(chunks),
                "written_pairs": len(pairs) if pairs is not None else None,
                "questions": len(candidates),
                "rows": len(kept),
                "banmal_questions": sum(c.banmal for c in kept),
            },
            "stages": self.tally.as_dict(),
            "banmal_rewrite": rewrite,
            "mean_groundedness": round(sum(c.groundedness for c in kept) / len(kept), 4) if kept else None,
            "generated_tokens": {"question": self.tokens["question"], "answer": self.tokens["answer"]},
            "speed": {
                "tokens_per_s": round(generated / generate_s, 2) if generate_s else None,
                "rows_per_hour": round(len(kept) * 3600 / self.timings["total"], 1) if self.timings["total"] else None,
            },
            "timings_s": dict(self.timings),
        }
        return kept, stats


def render_data_card(stats: dict, rows: list[Candidate], examples: dict[str, list[dict]]) -> str:
    c = stats["counts"]
    lines = [
        "# Data card: rows generated from documents",
        "",
        f"- model: `{stats['model']}`",
        f"- index: `{stats['index']}` ({len(stats['index_documents'])} documents)",
        (
            f"- {c['written_pairs']} written question/answer pairs"
            if c.get("written_pairs")
            else f"- chunks used: {c['chunks']}"
        )
        + f"; questions kept: {c['questions']}; rows kept: {c['rows']} ({c['banmal_questions']} with a 반말 question)",
        (
            f"- groundedness threshold: {stats['config']['min_groundedness']}; mean groundedness of kept rows: "
            f"{stats['mean_groundedness']}"
        ),
        "",
    ]
    if not c.get("written_pairs"):  # written pairs generate nothing
        lines.insert(
            -1,
            f"- generated tokens: {stats['generated_tokens']['question']} for questions, "
            f"{stats['generated_tokens']['answer']} for answers; {stats['speed']['tokens_per_s']} tokens/s; "
            f"{stats['speed']['rows_per_hour']} rows/hour",
        )
    lines += [
        "## Removed, per stage and reason",
        "",
        "| stage | reason | rows |",
        "|---|---|---|",
    ]
    for stage, reasons in stats["stages"]["removed"].items():
        for reason, n in reasons.items():
            lines.append(f"| {stage} | {reason} | {n} |")
    rw = stats["banmal_rewrite"]
    lines += [
        "",
        (
            f"반말 rewrite: {rw['rewritten']} of a target {rw['target']} questions "
            f"({rw['not_banmal']} rewrites did not read as 반말 and were not used)."
        ),
        "",
    ]
    if examples:
        lines += ["## Rejected examples", ""]
        for key, items in examples.items():
            lines.append(f"**{key}**")
            lines.append("")
            for item in items:
                text = " / ".join(f"{k}: {' '.join(str(v).split())[:160]}" for k, v in item.items())
                lines.append(f"- {text}")
            lines.append("")
    if rows:
        lines += ["## Kept examples", ""]
        for row in rows[:3]:
            lines.append(f"- Q: {row.question}")
            lines.append(f"  A: {' '.join(row.answer.split())[:300]}")
            lines.append(f"  sources: {', '.join(h.chunk.source for h in row.hits)}")
        lines.append("")
    return "\n".join(lines)


def no_rows_reason(stats: dict) -> str:
    """Why a run kept no row, in one line: what came in and how many each filter removed."""
    counts = stats["counts"]
    removed = "; ".join(
        f"{stage}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
        for stage, reasons in stats["stages"]["removed"].items()
    )
    source = f"{counts['written_pairs']} written pairs" if counts.get("written_pairs") else f"{counts['chunks']} chunks"
    return (
        f"no generated row passed the filters ({source}, {counts['questions']} questions kept); "
        f"removed: {removed or 'none'}"
    )


def generate_from_docs(
    index: RetrievalIndex,
    generate: Generate | None,
    config: DocGenConfig,
    output_dir: str | Path,
    *,
    limit: int | None = None,
    model_name: str = "",
    overwrite: bool = False,
    pairs: list[Candidate] | None = None,
) -> DocGenResult:
    """Generate, filter and write ``train.jsonl``, ``stats.json`` and ``data_card.md`` into `output_dir`; with
    written `pairs` (:func:`load_pairs`) instead of a model, retrieve and filter those."""
    target = Path(output_dir)
    check_output_dir(target, overwrite)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if config.retrieval_mode not in (None, "bm25") and not index.has_dense:
        raise UserError(f"retrieval_mode {config.retrieval_mode} needs a dense index; {index.dir} has none")
    if (generate is None) == (pairs is None):
        raise ValueError("give either a generate callable or written pairs")
    gen = DocGen(index, generate, config, model_name)
    rows, stats = gen.run(limit, pairs)
    if not rows:
        raise UserError(f"{no_rows_reason(stats)}; nothing written to {target}")
    with atomic_output_dir(target, overwrite) as building:
        write_jsonl(building / "train.jsonl", (row.row() for row in rows))
        write_json(building / "stats.json", stats)
        (building / "data_card.md").write_text(render_data_card(stats, rows, gen.tally.examples), encoding="utf-8")
    return DocGenResult(target, stats)


def model_generator(model, tokenizer, batch_size: int | None) -> Generate:
    """The project's batched generation as a `Generate` callable."""
    from ..inference.answer import generate_batch

    def generate(conversations: list[list[dict]], sampling: dict) -> list[GenerationResult]:
        return generate_batch(model, tokenizer, conversations, batch_size=batch_size, **sampling)

    return generate
