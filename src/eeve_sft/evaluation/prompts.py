"""Politeness evaluation: answer a set of 반말 prompts with each model and measure how often it answers in 존댓말.

Per model: the share of answers the speech-level toolkit labels ``polite`` (the 존댓말 rate, over all answers),
the 반말 / mixed / neutral counts, answers cut off by the length limit, mean answer length, the 존댓말 rate per
prompt category and, given a recipe, the mean token loss on the recipe's eval split (same template and masking
as training). Optionally lm-evaluation-harness benchmarks. Results go to ``eval.json`` and ``eval.md``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..jsonfiles import read_jsonl
from ..training.data import conversation_problem

DEFAULT_PROMPTS = "eval/prompts_banmal.jsonl"
REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout, when the package is installed editable


@dataclass
class EvalPrompt:
    id: str
    category: str
    messages: list[dict]


def default_prompts_path() -> Path:
    """``eval/prompts_banmal.jsonl`` in the working directory, else in the checkout the package runs from."""
    here = Path(DEFAULT_PROMPTS)
    return here if here.is_file() else REPO_ROOT / DEFAULT_PROMPTS


def _prompt_messages(messages: object) -> tuple[object, str | None]:
    """The conversation the model answers and why it cannot be one (None when it can).

    A training row (ending with the assistant's answer, as in an eval split) becomes a prompt without that last
    answer; otherwise the training data's rules apply, except that a prompt ends with a user turn.
    """
    if not isinstance(messages, list) or not messages:
        return messages, "'messages' must be a non-empty list"
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        problem = conversation_problem(messages)
        return messages[:-1], (f"as a training row: {problem}" if problem else None)
    if isinstance(last, dict) and last.get("role") == "system":
        return messages, "the last message must be a user turn (the one the model answers) or an assistant answer"
    # With an answer appended, a valid prompt is a valid training conversation.
    return messages, conversation_problem([*messages, {"role": "assistant", "content": "."}])


def _text_prompt(line: str) -> dict:
    return {"messages": [{"role": "user", "content": line.strip()}]}


def _rows(path: Path) -> list[tuple[int, dict]]:
    if path.suffix.lower() != ".txt":
        return read_jsonl(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"prompt file {path} is not UTF-8 text") from None
    return [(number, _text_prompt(line)) for number, line in enumerate(lines, 1) if line.strip()]


def load_prompts(path: str | Path) -> list[EvalPrompt]:
    """Read a prompts file: JSONL rows ``{"messages": [...]}`` with ``id`` and ``category`` optional, or a ``.txt``
    file with one 반말 prompt per line. Blank lines are skipped; a prompt's id defaults to its line number. A row
    ends with the user turn the model answers, or is a training row whose final assistant answer is left out.

    Any malformed row stops the run with its line number: a silently skipped prompt would change the rates.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    prompts: list[EvalPrompt] = []
    seen: dict[str, int] = {}
    for lineno, row in _rows(path):
        where = f"{path} line {lineno}"
        prompt_id = row.get("id", lineno)
        if not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool) or str(prompt_id) == "":
            raise UserError(f"{where}: 'id' must be a non-empty string or an integer")
        prompt_id = str(prompt_id)
        if prompt_id in seen:
            raise UserError(f"{where}: id '{prompt_id}' already used on line {seen[prompt_id]}")
        seen[prompt_id] = lineno
        category = row.get("category", "uncategorized")
        if not isinstance(category, str) or not category.strip():
            raise UserError(f"{where}: 'category' must be a non-empty string")
        messages, problem = _prompt_messages(row.get("messages"))
        if problem:
            raise UserError(f"{where}: {problem}")
        prompts.append(EvalPrompt(prompt_id, category.strip(), messages))
    if not prompts:
        raise UserError(f"prompt file {path} holds no prompts")
    return prompts


def prompt_set_id(prompts: list[EvalPrompt]) -> str:
    """A short fingerprint of the prompts themselves (ids and messages), whatever file they came from: two runs
    with the same fingerprint answered the same questions."""
    payload = json.dumps([[p.id, p.messages] for p in prompts], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
