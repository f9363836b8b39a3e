"""eval.md: the side-by-side table, the rate per category and sample answers per label."""

from __future__ import annotations

import random

from ..eval_table import cell as _cell
from ..eval_table import pct as _pct
from ..eval_table import results_table
from ..speech_level import LABELS


def render_markdown(document: dict, samples_per_label: int = 3, seed: int = 0) -> str:
    models = document["models"]
    gen = document["generation"]
    decoding = (
        "greedy"
        if not gen["do_sample"]
        else (
            f"sampling (temperature {gen['temperature']}, top_p {gen['top_p']}, top_k {gen['top_k']}, seed {gen['seed']})"
        )
    )
    out = [
        "# Politeness evaluation",
        "",
        f"{document['num_prompts']} prompts from `{document['prompts_file']}`"
        + (f" (prompt set `{document['prompt_set']}`)" if document.get("prompt_set") else "")
        + f"; {decoding}, "
        f"repetition penalty {gen['repetition_penalty']}, at most {gen['max_new_tokens']} new tokens.",
        "The 존댓말 rate is the share of all answers labelled `polite`, over the number of prompts in its row.",
    ]
    if document.get("eval_data"):
        out.append(f"Eval loss: mean token loss on the assistant tokens of {document['eval_data']}.")
    out += ["", "## Results", "", results_table(models), ""]

    categories = sorted({c for m in models for c in m["per_category"]})
    out += [
        "## 존댓말 rate per category",
        "",
        "| category | prompts | " + " | ".join(_cell(m["name"]) for m in models) + " |",
        "|---|---:|" + "---:|" * len(models),
    ]
    for category in categories:
        n = next(m["per_category"][category]["prompts"] for m in models if category in m["per_category"])
        rates = [_pct(m["per_category"].get(category, {}).get("polite_rate")) for m in models]
        out.append(f"| {_cell(category)} | {n} | " + " | ".join(rates) + " |")
    out.append("")

    lm_models = [m for m in models if m.get("lm_eval")]
    if lm_models:
        out += ["## lm-evaluation-harness", "", "| model | task | metric | value |", "|---|---|---|---:|"]
        for m in lm_models:
            for task, metrics in m["lm_eval"].items():
                for metric, value in metrics.items():
                    out.append(f"| {_cell(m['name'])} | {_cell(task)} | {_cell(metric)} | {value:.4f} |")
        out.append("")

    out += ["## Sample answers", ""]
    rng = random.Random(seed)  # a fixed sample, so the report does not change between identical runs
    for m in models:
        out += [f"### {m['name']}", ""]
        for label in LABELS:
            picked = [a for a in m["answers"] if a["label"] == label]
            if not picked:
                continue
            shown = rng.sample(picked, min(samples_per_label, len(picked)))
            out.append(f"**{label}** ({len(picked)})")
            out.append("")
            for a in shown:
                cut = "" if a["stopped_on_eos"] else " *(hit the length limit)*"
                out.append(f"- `{_cell(a['id'])}` Q: {_cell(a['prompt'])}")
                out.append(f"  A: {_cell(a['answer']) or '(empty)'}{cut}")
            out.append("")
    return "\n".join(out).rstrip() + "\n"
