"""Preference pairs against 반말 slips, in TRL's conversational preference format.

Each row is ``{"prompt": [messages up to the last user turn], "chosen": [one assistant message], "rejected":
[one assistant message], "origin": ...}``. The two answers say the same thing and differ in speech level only:

- ``rewrite``: a chat dataset's 존댓말 answer (chosen) and the same answer rewritten into 반말 by the project's
  converter (rejected);
- ``eval`` and ``generate``: an answer a trained model really gave that the classifier labels 반말 or mixed
  (rejected), paired with the dataset's own answer to that prompt when there is one, else the converter's 존댓말
  rewrite of it (chosen).

Every pair that is not kept is counted under its reason in the :class:`~eeve_sft.data_prep.ledger.Ledger`, and the
output is written whole (``train.jsonl``, ``eval.jsonl``, ``stats.json``, ``data_card.md``) or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..jsonfiles import write_json, write_jsonl
from ..output_dir import atomic_output_dir, check_output_dir
from .ledger import Ledger
from .normalise import preview

STAGE = "pairs"
PAIR_FIELDS = ("prompt", "chosen", "rejected")
ORIGINS = ("rewrite", "eval", "generate")

# Reasons a candidate pair is dropped, as stats.json and the data card name them.
CHOSEN_NOT_POLITE = "chosen_not_polite"
REWRITE_UNCHANGED = "rewrite_unchanged"
REJECTED_NOT_BANMAL = "rejected_not_banmal"
ANSWER_ALREADY_POLITE = "answer_already_polite"  # on-policy: the model's answer was no slip
POLITE_REWRITE_NOT_POLITE = "polite_rewrite_not_polite"


@dataclass(frozen=True)
class SpeechTools:
    """The classifier and both converters; tests pass small fakes."""

    classify_batch: Callable[[list[str]], list[str]]
    to_banmal_batch: Callable[[list[str]], list[str]]
    to_polite_batch: Callable[[list[str]], list[str]]


def project_speech_tools() -> SpeechTools:
    from ..speech_level import classify_batch, to_banmal_batch, to_polite_batch

    return SpeechTools(classify_batch, to_banmal_batch, to_polite_batch)


@dataclass
class Candidate:
    """A conversation or answer that may become a pair, with where it came from (for counts and examples)."""

    source: str
    row: int  # 1-based, in its source
    prompt: list[dict]
    answer: str
    split: str  # "train" or "eval"


@dataclass
class PairSet:
    ledger: Ledger
    rows: dict[str, list[dict]] = field(default_factory=lambda: {"train": [], "eval": []})
    considered: Counter = field(default_factory=Counter)  # candidates per source

    def add(self, split: str, prompt: list[dict], chosen: str, rejected: str, origin: str) -> None:
        self.rows[split].append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "origin": origin,
            }
        )


def _glimpse(answer: str) -> str:
    return preview([{"role": "assistant", "content": answer}])


def held_out(prompt: list[dict], seed: int, fraction: float) -> bool:
    """Whether a pair goes to eval: decided by its prompt's text and the seed alone, so a build is deterministic
    and every pair of one prompt lands in the same split."""
    if fraction <= 0:
        return False
    key = json.dumps([seed, prompt], ensure_ascii=False, sort_keys=True).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64 < fraction


def rewrite_pairs(candidates: list[Candidate], tools: SpeechTools, pairs: PairSet) -> None:
    """chosen = the dataset's 존댓말 answer, rejected = the converter's 반말 rewrite of it."""
    answers = [c.answer for c in candidates]
    chosen_levels = tools.classify_batch(answers)
    rewritten = tools.to_banmal_batch(answers)
    rejected_levels = tools.classify_batch(rewritten)
    for c, level, banmal, banmal_level in zip(candidates, chosen_levels, rewritten, rejected_levels, strict=True):
        pairs.considered[c.source] += 1
        if level != "polite":
            pairs.ledger.reject(STAGE, CHOSEN_NOT_POLITE, c.source, c.row, _glimpse(c.answer), f"labelled {level}")
        elif banmal.strip() == c.answer.strip():
            pairs.ledger.reject(STAGE, REWRITE_UNCHANGED, c.source, c.row, _glimpse(c.answer))
        elif banmal_level != "banmal":
            pairs.ledger.reject(
                STAGE, REJECTED_NOT_BANMAL, c.source, c.row, _glimpse(banmal), f"labelled {banmal_level}"
            )
        else:
            pairs.add(c.split, c.prompt, c.answer, banmal, "rewrite")


def on_policy_pairs(
    candidates: list[Candidate], origin: str, tools: SpeechTools, own_answers: dict[str, str], pairs: PairSet
) -> None:
    """rejected = a model's answer the classifier labels 반말 or mixed; chosen = the dataset's answer to the same
    prompt (`own_answers`, keyed by :func:`prompt_key`), else the converter's 존댓말 rewrite of the answer."""
    levels = tools.classify_batch([c.answer for c in candidates])
    slips = []
    for c, level in zip(candidates, levels, strict=True):
        pairs.considered[c.source] += 1
        if level in ("banmal", "mixed"):
            slips.append(c)
        else:
            pairs.ledger.reject(STAGE, ANSWER_ALREADY_POLITE, c.source, c.row, _glimpse(c.answer), f"labelled {level}")
    need_rewrite = [c for c in slips if prompt_key(c.prompt) not in own_answers]
    rewritten = dict(zip(map(id, need_rewrite), tools.to_polite_batch([c.answer for c in need_rewrite]), strict=True))
    polite_levels = tools.classify_batch(list(rewritten.values()))
    rewrite_level = dict(zip(rewritten, polite_levels, strict=True))
    for c in slips:
        chosen = own_answers.get(prompt_key(c.prompt))
        if chosen is None:
            chosen = rewritten[id(c)]
            if chosen.strip() == c.answer.strip():
                pairs.ledger.reject(STAGE, REWRITE_UNCHANGED, c.source, c.row, _glimpse(c.answer))
                continue
            if rewrite_level[id(c)] != "polite":
                detail = f"labelled {rewrite_level[id(c)]}"
                pairs.ledger.reject(STAGE, POLITE_REWRITE_NOT_POLITE, c.source, c.row, _glimpse(chosen), detail)
                continue
        pairs.add(c.split, c.prompt, chosen, c.answer, origin)


def prompt_key(prompt: list[dict]) -> str:
    """What identifies a prompt across files: its last user turn's text (eval.json keeps only that)."""
    return " ".join(prompt[-1]["content"].split())


# ------------------------------------------------------------------------------------------------ reading inputs


def conversation_candidates(source: str, limit: int | None, eval_fraction: float, seed: int) -> list[Candidate]:
    """A chat dataset (the data build's folder or a ``{"messages": ...}`` JSONL file) as candidates: the last
    assistant answer of each conversation. A folder's eval split stays eval; a single file holds out
    `eval_fraction` of its prompts."""
    from ..training.data import check_conversations, load_splits, split_file

    splits = load_splits(source)
    candidates = []
    for name in sorted(splits):
        split = splits[name]
        check_conversations(split, name, source)
        rows = split["messages"][: limit if limit is not None else len(split)]
        label = str(split_file(source, name) or f"{source}:{name}")
        for index, messages in enumerate(rows):
            prompt, answer = messages[:-1], messages[-1]["content"]
            where = "eval" if name == "eval" else "train"
            if name != "eval" and "eval" not in splits and held_out(prompt, seed, eval_fraction):
                where = "eval"
            candidates.append(Candidate(label, index + 1, _plain(prompt), answer, where))
    return candidates


def _plain(messages: list[dict]) -> list[dict]:
    """Messages with only role and content (datasets fills absent keys of other rows with None)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def eval_candidates(eval_dir: str, limit: int | None) -> list[Candidate]:
    """The answers ``scripts/evaluate.py`` saved (EVAL_DIR/eval.json, or the file itself), one per model and
    prompt: every model in the file counts, each is its own source."""
    path = Path(eval_dir)
    path = path / "eval.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"--from-eval: no eval.json at {path} (the folder scripts/evaluate.py wrote)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"--from-eval: {path} is not valid JSON") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list):
        raise UserError(f"--from-eval: {path} is not an evaluation result (eval.json from scripts/evaluate.py)")
    candidates = []
    for model in models:
        answers = model.get("answers") if isinstance(model, dict) else None
        if not isinstance(answers, list) or not answers:
            raise UserError(f"--from-eval: {path}: a model entry holds no saved answers")
        name = f"eval:{model.get('name') or model.get('model_path')}"
        for number, answer in enumerate(answers[:limit] if limit is not None else answers, start=1):
            if not isinstance(answer, dict) or not all(
                isinstance(answer.get(k), str) and answer[k].strip() for k in ("prompt", "answer")
            ):
                raise UserError(f"--from-eval: {path}: {name} answer {number} lacks a 'prompt' or 'answer' text")
            prompt = [{"role": "user", "content": answer["prompt"]}]
            candidates.append(Candidate(name, number, prompt, answer["answer"], "train"))
    return candidates


def generated_candidates(model_path: str, prompts_file: str, limit: int | None, batch_size) -> list[Candidate]:
    """Answers `model_path` gives to `prompts_file` now, through the fast generation path (greedy)."""
    from ..evaluation.prompts import load_prompts
    from ..inference.answer import generate_batch
    from ..inference.loading import load_for_inference
    from ..inference.sampling import EVAL_SAMPLING

    prompts = load_prompts(prompts_file)
    prompts = prompts[:limit] if limit is not None else prompts
    model, tokenizer = load_for_inference(model_path)
    from dataclasses import asdict

    results = generate_batch(
        model, tokenizer, [p.messages for p in prompts], batch_size=batch_size, **asdict(EVAL_SAMPLING)
    )
    name = f"generate:{model_path}"
    return [
        Candidate(name, number, _plain(p.messages), r.text, "train")
        for number, (p, r) in enumerate(zip(prompts, results, strict=True), start=1)
        if r.text.strip()
    ]


# ------------------------------------------------------------------------------------------------------ the build


@dataclass
class PairsRequest:
    source: str | None = None
    from_eval: str | None = None
    generate: str | None = None
    prompts: str | None = None
    limit: int | None = None
    eval_fraction: float = 0.1
    seed: int = 42
    batch_size: int | str | None = "auto"


def check_request(request: PairsRequest) -> None:
    if not (request.source or request.from_eval or request.generate):
        raise UserError("nothing to build pairs from: give a chat dataset, --from-eval EVAL_DIR or --generate MODEL")
    if bool(request.generate) != bool(request.prompts):
        raise UserError("--generate MODEL and --prompts FILE go together")
    if request.limit is not None and request.limit < 1:
        raise UserError(f"--limit must be at least 1, got {request.limit}")
    if not 0.0 <= request.eval_fraction < 1.0:
        raise UserError(f"--eval-fraction must be in [0, 1), got {request.eval_fraction}")


def build_pairs(
    request: PairsRequest, output_dir: str | Path, overwrite: bool = False, tools: SpeechTools | None = None
) -> dict:
    """Build the pairs `request` asks for into `output_dir`; return stats.json's content."""
    check_request(request)
    target = Path(output_dir)
    check_output_dir(target, overwrite)
    tools = tools or project_speech_tools()
    conversations = (
        conversation_candidates(request.source, request.limit, request.eval_fraction, request.seed)
        if request.source
        else []
    )
    on_policy = []
    if request.from_eval:
        on_policy.append(("eval", eval_candidates(request.from_eval, request.limit)))
    if request.generate:
        answers = generated_candidates(request.generate, request.prompts, request.limit, request.batch_size)
        on_policy.append(("generate", answers))

    sources = sorted({c.source for c in conversations} | {c.source for _, group in on_policy for c in group})
    pairs = PairSet(Ledger(sources))
    if conversations:
        rewrite_pairs(conversations, tools, pairs)
    own_answers = {prompt_key(c.prompt): c.answer for c in conversations}
    for origin, group in on_policy:
        on_policy_pairs(group, origin, tools, own_answers, pairs)
    if not pairs.rows["train"]:
        raise UserError(f"no pair kept for training ({_reasons_line(pairs.ledger)}); nothing written")

    stats = pair_stats(request, pairs)
    with atomic_output_dir(target, overwrite) as building:
        write_jsonl(building / "train.jsonl", pairs.rows["train"])
        if pairs.rows["eval"]:
            write_jsonl(building / "eval.jsonl", pairs.rows["eval"])
        write_json(building / "stats.json", stats)
        (building / "data_card.md").write_text(render_pairs_card(stats, pairs.ledger), encoding="utf-8")
    return stats


def _reasons_line(ledger: Ledger) -> str:
    counts = {reason: ledger.total(stage, reason) for stage, reason in ledger.reasons()}
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "no candidates"


def pair_stats(request: PairsRequest, pairs: PairSet) -> dict:
    ledger = pairs.ledger
    per_origin = Counter(row["origin"] for rows in pairs.rows.values() for row in rows)
    return {
        "inputs": {
            "source": request.source,
            "from_eval": request.from_eval,
            "generate": request.generate,
            "prompts": request.prompts,
            "limit": request.limit,
            "eval_fraction": request.eval_fraction,
            "seed": request.seed,
        },
        "considered": dict(sorted(pairs.considered.items())),
        "dropped": {reason: ledger.total(stage, reason) for stage, reason in ledger.reasons()},
        "dropped_by_source": {s: ledger.removed_by_source(s) for s in ledger.sources if ledger.removed_by_source(s)},
        "output": {"train": len(pairs.rows["train"]), "eval": len(pairs.rows["eval"])},
        "by_origin": {origin: per_origin[origin] for origin in ORIGINS if per_origin[origin]},
    }


REASON_TEXT = {
    CHOSEN_NOT_POLITE: "the dataset's answer is not labelled 존댓말",
    REWRITE_UNCHANGED: "the converter changed nothing",
    REJECTED_NOT_BANMAL: "the 반말 rewrite is not labelled 반말",
    ANSWER_ALREADY_POLITE: "the model's answer was no 반말 slip",
    POLITE_REWRITE_NOT_POLITE: "the 존댓말 rewrite of the slip is not labelled 존댓말",
}


def render_pairs_card(stats: dict, ledger: Ledger) -> str:
    """data_card.md: what went in, what was dropped and why (with examples), what came out. Derived from the
    counts only, so two builds of the same inputs give the same card."""
    out = ["# Preference pairs", "", "Rows: `prompt` (messages up to the last user turn), `chosen` (존댓말 answer),"]
    out += ["`rejected` (the same content in 반말), `origin`. Built by `data_prep/build_pairs.py`.", ""]
    out += ["## Inputs", ""]
    out += [f"- {key}: `{value}`" for key, value in stats["inputs"].items() if value is not None]
    out += ["", "## Candidates per source", "", "| source | candidates | dropped |", "|---|---:|---:|"]
    for source, n in stats["considered"].items():
        out.append(f"| `{source}` | {n} | {sum(stats['dropped_by_source'].get(source, {}).values())} |")
    out += ["", "## Dropped, per reason", ""]
    if not stats["dropped"]:
        out.append("Nothing was dropped.")
    else:
        out += ["| reason | pairs | meaning |", "|---|---:|---|"]
        for reason, n in stats["dropped"].items():
            out.append(f"| `{reason}` | {n} | {REASON_TEXT.get(reason, '')} |")
        for key, examples in sorted(ledger.examples.items()):
            out += ["", f"Examples of `{key.split('/', 1)[1]}`:", ""]
            for example in examples:
                detail = f" ({example.detail})" if example.detail else ""
                out.append(f"- `{example.source}` row {example.row}{detail}: {example.preview}")
    out += ["", "## Output", "", "| split | pairs |", "|---|---:|"]
    out += [f"| {split} | {n} |" for split, n in stats["output"].items()]
    out += ["", "| origin | pairs |", "|---|---:|"]
    out += [f"| {origin} | {n} |" for origin, n in stats["by_origin"].items()]
    return "\n".join(out) + "\n"
