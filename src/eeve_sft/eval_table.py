"""An evaluation's per-model table: the 존댓말 rate, label counts, answer lengths and eval loss of each model.

Both the evaluation's NAME.md (:mod:`eeve_sft.evaluation.markdown`) and a merged model's card
(:mod:`eeve_sft.inference.export`) show it, so it sits below both packages and neither imports the other for it.
"""

from __future__ import annotations

import math

from .speech_level import BANMAL, MIXED, NEUTRAL, POLITE


def cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_table(models: list[dict]) -> str:
    """The per-model summary table (also used by the model card)."""
    lines = [
        "| model | 존댓말 rate | prompts | polite | 반말 | mixed | neutral | hit length limit | mean chars "
        "| mean tokens | eval loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        c = m["counts"]
        lines.append(
            f"| {cell(m['name'])} | {pct(m['polite_rate'])} | {m.get('num_prompts', '—')} | {c.get(POLITE, 0)} | {c.get(BANMAL, 0)} | "
            f"{c.get(MIXED, 0)} | {c.get(NEUTRAL, 0)} | {m['length_limit_hits']} | "
            f"{m['mean_answer_chars']:.1f} | {m['mean_answer_tokens']:.1f} | {num(m.get('eval_loss'))} |"
        )
    return "\n".join(lines)
