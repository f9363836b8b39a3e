"""stats.json and data_card.md: what went in, what each stage removed and why, and what came out.

Everything here is derived from the build's counts, so the data card is byte-identical between two builds of
the same mix and seed. Only stats.json's ``timings_s`` changes from run to run.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import yaml

from ..speech_level import LABELS
from .ledger import STAGES, Ledger
from .mix import Mix
from .speech_level_stages import RewriteReport

STAGE_TITLES = {
    "load": "reading",
    "normalise": "normalisation",
    "clean": "clean-up",
    "quality": "quality filters",
    "dedup": "deduplication",
    "speech_level": "assistant speech level",
    "sample": "sampling",
}


@dataclass
class SourceCounts:
    location: str
    rows_available: int  # in the source, before max_rows
    rows_in: int
    candidates: int = 0  # after deduplication: what sampling chose from
    speech_judged: int = 0  # rows whose answers were classified
    sampled: int = 0
    train: int = 0
    eval: int = 0


def _levels(counter: Counter | None) -> dict[str, int] | None:
    return None if counter is None else {level: int(counter.get(level, 0)) for level in LABELS}


def _mix_settings(mix: Mix) -> dict:
    """The mix as the build understood it (defaults filled in), for the record."""
    data = dataclasses.asdict(mix)
    data.pop("mix_path", None)
    data.pop("mix_sha256", None)
    for entry in data["sources"]:
        entry["path"] = entry.pop("given_path")  # as written: an absolute path differs between machines
    return data


def make_stats(
    mix: Mix,
    ledger: Ledger,
    counts: dict[str, SourceCounts],
    assistant_before: Counter | None,
    assistant_after: Counter | None,
    rewrite: RewriteReport | None,
    timings: dict[str, float],
) -> dict:
    removed: dict[str, dict[str, int]] = {}
    for stage, reason in ledger.reasons():
        removed.setdefault(stage, {})[reason] = ledger.total(stage, reason)
    sources = {}
    for name, c in counts.items():
        entry = dataclasses.asdict(c)
        entry["after_stage"] = {stage: int(ledger.passed[stage][name]) for stage in STAGES if stage in ledger.passed}
        entry["removed"] = ledger.removed_by_source(name)
        sources[name] = entry
    return {
        "mix": {
            "name": mix.name,
            "file": mix.mix_path.name if mix.mix_path else None,
            "sha256": mix.mix_sha256,
            "seed": mix.seed,
        },
        "output": {
            "train": sum(c.train for c in counts.values()),
            "eval": sum(c.eval for c in counts.values()),
        },
        "rows_in": sum(c.rows_in for c in counts.values()),
        "sources": sources,
        "removed": removed,
        "speech_level": {
            "assistant": {
                "judged": sum(c.speech_judged for c in counts.values()) if assistant_before is not None else None,
                "before": _levels(assistant_before),
                "after": _levels(assistant_after),
            },
            "user": {
                "before": _levels(rewrite.user_before) if rewrite else None,
                "after": _levels(rewrite.user_after) if rewrite else None,
            },
            "rewrite": rewrite.as_dict() if rewrite else None,
        },
        "settings": _mix_settings(mix),
        "timings_s": timings,
    }


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.1f}%)" if whole else f"{part:,}"


def _level_table(before: dict | None, after: dict | None, before_title: str, after_title: str) -> list[str]:
    total_before = sum(before.values()) if before else 0
    total_after = sum(after.values()) if after else 0
    rows = []
    for level in LABELS:
        rows.append(
            [
                level,
                _share(before[level], total_before) if before else "-",
                _share(after[level], total_after) if after else "-",
            ]
        )
    return _table(["level", before_title, after_title], rows)


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


class _CardDumper(yaml.SafeDumper):
    """YAML for the data card: strings holding line breaks are written quoted on one line."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None)


_CardDumper.add_representer(str, _represent_str)


def _quote(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    flat = flat if len(flat) <= limit else flat[:limit] + "…"
    return flat.replace("`", "'")


def render_data_card(stats: dict, ledger: Ledger, rewrite: RewriteReport | None) -> str:
    mix = stats["mix"]
    out = stats["output"]
    lines = [
        f"# Data card: {mix['name']}",
        "",
        f"Built from the mix file `{mix['file']}` (sha256 `{mix['sha256'][:16]}`) with seed {mix['seed']}: "
        f"{stats['rows_in']:,} rows in, {out['train']:,} train and {out['eval']:,} eval conversations out.",
        "",
        'Each line of `train.jsonl` and `eval.jsonl` is `{"messages": [{"role": "user", "content": ...}, '
        '{"role": "assistant", "content": ...}]}`, with an optional leading system message; roles alternate '
        "user/assistant and end with the assistant. Point a recipe's `dataset_name` at this directory.",
        "",
        "## Sources",
        "",
    ]
    source_rows = []
    for name, s in stats["sources"].items():
        removed = sum(s["removed"].values())
        counts = [s["rows_in"], removed, s["sampled"], s["train"], s["eval"]]
        source_rows.append([f"`{name}`", s["location"]] + [f"{n:,}" for n in counts])
    lines += _table(["source", "from", "rows in", "removed", "sampled", "train", "eval"], source_rows)
    lines += ["", "Rows left after each stage:", ""]
    stage_names = [st for st in STAGES if any(st in s["after_stage"] for s in stats["sources"].values())]
    lines += _table(
        ["source", "rows in"] + [STAGE_TITLES[st] for st in stage_names],
        [
            [f"`{name}`", f"{s['rows_in']:,}"] + [f"{s['after_stage'].get(st, 0):,}" for st in stage_names]
            for name, s in stats["sources"].items()
        ],
    )

    lines += ["", "## Removed rows by reason", ""]
    names = list(stats["sources"])
    reason_rows = []
    for stage, reason in ledger.reasons():
        per_source = ledger.removed[f"{stage}/{reason}"]
        reason_rows.append(
            [STAGE_TITLES.get(stage, stage), f"`{reason}`", f"{ledger.total(stage, reason):,}"]
            + [f"{per_source.get(n, 0):,}" for n in names]
        )
    if reason_rows:
        lines += _table(["stage", "reason", "total"] + [f"`{n}`" for n in names], reason_rows)
    else:
        lines.append("No row was removed.")

    speech = stats["speech_level"]
    lines += ["", "## Speech level", ""]
    assistant = speech["assistant"]
    if assistant["before"] is not None:
        candidates = sum(s["candidates"] for s in stats["sources"].values())
        lines += [
            "Answers are labelled per conversation (all answers of a multi-turn row together). Rows are judged in "
            f"sampling order until every source's share is filled: {assistant['judged']:,} of the {candidates:,} "
            "rows left after deduplication were judged, the rest were not needed. Judged rows are a random sample, "
            "so their mix estimates the mix of all rows.",
            "",
        ]
        lines += _level_table(assistant["before"], assistant["after"], "judged rows", "output rows")
    else:
        lines.append("The assistant speech-level stage was off.")
    lines.append("")
    if speech["user"]["before"] is not None and rewrite is not None:
        r = speech["rewrite"]
        lines += [
            f"User turns of the sampled rows, before and after the 반말 rewrite: {r['rows_rewritten']:,} of "
            f"{r['target_rows']:,} targeted rows rewritten ({r['turns_rewritten']:,} turns); {r['turns_not_banmal']:,} "
            f"rewrites did not classify as 반말 and kept the original; {r['eligible_rows']:,} rows had a polite "
            "user turn to rewrite.",
            "",
        ]
        lines += _level_table(speech["user"]["before"], speech["user"]["after"], "before", "after")
        if rewrite.examples:
            lines += ["", "Example rewrites:", ""]
            for before, after in rewrite.examples:
                lines.append(f"- `{_quote(before, 120)}` → `{_quote(after, 120)}`")
    else:
        lines.append("The 반말 rewrite of user turns was off.")

    lines += ["", "## Rejected examples", ""]
    shown = False
    for stage, reason in ledger.reasons():
        examples = ledger.examples.get(f"{stage}/{reason}", [])
        if not examples:
            continue
        shown = True
        lines += [f"### {STAGE_TITLES.get(stage, stage)}: `{reason}` ({_rows(ledger.total(stage, reason))})", ""]
        for ex in examples:
            detail = f" ({ex.detail})" if ex.detail else ""
            lines.append(f"- `{ex.source}` row {ex.row}{detail}: `{_quote(ex.preview)}`")
        lines.append("")
    if not shown:
        lines += ["None.", ""]

    lines += [
        "## Settings",
        "",
        "The mix as the build read it, defaults included:",
        "",
        "```yaml",
        yaml.dump(stats["settings"], Dumper=_CardDumper, allow_unicode=True, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
