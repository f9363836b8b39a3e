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


def _prompt_problem(messages: object) -> str | None:
    """Why `messages` cannot be a prompt: the training data's rules, except that it ends with a user turn."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") in ("assistant", "system"):
        return "the last message must be a user turn (the one the model answers)"
    # With an answer appended, a valid prompt is a valid training conversation.
    return conversation_problem([*messages, {"role": "assistant", "content": "."}])


def _text_prompt(line: str) -> dict:
    return {"messages": [{"role": "user", "content": line.strip()}]}


def load_prompts(path: str | Path) -> list[EvalPrompt]:
    """Read a prompts file: JSONL rows ``{"messages": [..., {"role": "user", ...}]}`` (the training format) with
    ``id`` and ``category`` optional, or a ``.txt`` file with one 반말 prompt per line. Blank lines are skipped;
    a prompt's id defaults to its line number.

    Any malformed row stops the run with its line number: a silently skipped prompt would change the rates.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    prompts: list[EvalPrompt] = []
    seen: dict[str, int] = {}
    plain_text = path.suffix.lower() == ".txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"prompt file {path} is not UTF-8 text") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        if plain_text:
            row = _text_prompt(line)
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: a row must be a JSON object with messages (id and category optional)")
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
        problem = _prompt_problem(row.get("messages"))
        if problem:
            raise UserError(f"{where}: {problem}")
        prompts.append(EvalPrompt(prompt_id, category.strip(), row["messages"]))
    if not prompts:
        raise UserError(f"prompt file {path} holds no prompts")
    return prompts


def prompt_set_id(prompts: list[EvalPrompt]) -> str:
    """A short fingerprint of the prompts themselves (ids and messages), whatever file they came from: two runs
    with the same fingerprint answered the same questions."""
    payload = json.dumps([[p.id, p.messages] for p in prompts], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
