"""Compare training runs side by side: the recipe keys that differ, the figures each run ended with, and the
train/eval loss curves against step and against tokens seen (``compare.md`` with ``loss_curves.png``). With a DPO
run among them (scripts/dpo.py), also its preference measure and reward curves (``reward_curves.png``)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..training.run_dir import RunDir

# Keys that name the run rather than describe the recipe: they differ between any two runs.
IDENTITY_KEYS = frozenset({"output_dir", "run_name", "logging_dir"})
PLOT_FILE = "loss_curves.png"
REWARD_PLOT_FILE = "reward_curves.png"
REWARD_KEYS = ("rewards/margins", "rewards/accuracies")  # what TRL's DPOTrainer logs (eval_ in front when evaluating)


@dataclass
class Run:
    path: Path
    name: str
    recipe: dict
    metrics: list[dict]
    summary: dict  # empty while a run has not finished (or stopped without writing it)
    polite_rate: float | None = None
    polite_model: str | None = None  # which evaluated model of the run the rate belongs to
    polite_prompts: int | None = None  # how many prompts the rate was measured on
    prompt_set: str | None = None  # which prompts: the evaluation's fingerprint, else its file and count
    prompt_source: str | None = None  # the prompts as a reader knows them: file and count
    configuration: dict = field(default_factory=dict)  # every key's value in use (RunDir.configuration)
    evaluations: list[Evaluated] = field(default_factory=list)  # oldest first
    polite_file: Path | None = None  # the evaluation the rate comes from


def _eval_entry_for(run_dir: Path, models: list[dict]) -> dict | None:
    """The evaluated model that belongs to this run: its final adapter, else its latest checkpoint."""

    def in_run(entry: dict) -> bool:
        path = Path(entry.get("model_path", ""))
        return path.parent.name == run_dir.name or path.resolve().parent == run_dir.resolve()

    def rank(entry: dict) -> float:
        name = Path(entry["model_path"]).name
        if name == "final":
            return math.inf
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        return int(match.group(1)) if match else -1

    own = [m for m in models if in_run(m)]
    if own:
        return max(own, key=rank)
    return models[0] if len(models) == 1 else None


@dataclass
class Evaluated:
    """One evaluation of a run: its file, the document, and the entry of the run's own model in it."""

    path: Path
    document: dict
    entry: dict

    @property
    def prompts(self) -> int | None:
        return self.entry.get("num_prompts", self.document.get("num_prompts"))

    @property
    def source(self) -> str:
        return f"{self.document.get('prompts_file')}, {self.prompts} prompts"

    @property
    def prompt_set(self) -> str:
        # Older evaluations carry no fingerprint: their file and prompt count stand for the set.
        return self.document.get("prompt_set") or self.source


def run_evaluations(run_dir: Path) -> list[Evaluated]:
    """The run's evaluations (:meth:`RunDir.evaluations`, oldest first) that hold one of its models."""
    found = []
    for path, document in RunDir(run_dir).evaluations():
        entry = _eval_entry_for(run_dir, document["models"])
        if entry is not None:
            found.append(Evaluated(path, document, entry))
    return found


def pick_evaluations(runs: list[Run]) -> str | None:
    """Give every evaluated run its 존댓말 rate from evaluations on one prompt set, the one each of them was
    evaluated on (the largest such set, then the most recently evaluated); return the note that says which.

    Rates measured on different prompts are never set side by side: when no prompt set is common to every
    evaluated run, no rate is shown and the note says so.
    """
    evaluated = [r for r in runs if r.evaluations]
    if not evaluated:
        return None
    common = set.intersection(*({e.prompt_set for e in r.evaluations} for r in evaluated))
    if not common:
        found = "; ".join(
            f"`{r.name}`: " + ", ".join(dict.fromkeys(e.source for e in r.evaluations)) for r in evaluated
        )
        return (
            f"No prompt set was evaluated for every run ({found}): 존댓말 rates on different prompts are not "
            "compared. Evaluate each run on the same prompts (scripts/evaluate.py --prompts)."
        )
    everything = [e for r in evaluated for e in r.evaluations]

    def preference(prompt_set: str) -> tuple:
        of_set = [e for e in everything if e.prompt_set == prompt_set]
        return max(e.prompts or 0 for e in of_set), max(e.path.stat().st_mtime for e in of_set)

    chosen = max(common, key=preference)
    for run in evaluated:
        latest = [e for e in run.evaluations if e.prompt_set == chosen][-1]
        run.polite_rate = latest.entry.get("polite_rate")
        run.polite_model = latest.entry.get("name") or latest.entry.get("model_path")
        run.polite_prompts, run.prompt_set, run.prompt_source = latest.prompts, latest.prompt_set, latest.source
        run.polite_file = latest.path
    source = next(r.prompt_source for r in evaluated)
    return f"존댓말 rates on one prompt set, {source}: " + "; ".join(
        f"`{r.name}` from {r.polite_file}" for r in evaluated
    )


def load_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    run = RunDir(path)
    if not run.metrics_file.is_file():
        raise UserError(f"{path} has no training logs (metrics.jsonl): not a training run, or it has not logged yet")
    metrics = [event for event in run.metrics() if isinstance(event, dict)]
    if not metrics:
        raise UserError(f"{run.metrics_file} holds no log events yet")
    if not run.recipe_file.is_file():
        raise UserError(f"{path} has no recipe.yaml: not a training run directory")
    recipe = run.recipe()
    return Run(
        path,
        path.resolve().name,
        recipe,
        metrics,
        run.summary(),
        configuration=_configuration(run, recipe),
        evaluations=run_evaluations(path),
    )


def _configuration(run: RunDir, recipe: dict) -> dict:
    """Every key's value in use, TRL defaults included: as the run recorded it, else by parsing its recipe
    (a recipe this version cannot parse keeps only its own keys)."""
    try:
        return run.configuration()
    except UserError:
        return dict(recipe)


def _unique_names(runs: list[Run]) -> None:
    """Runs from different parents may share a directory name; prefix the parent then."""
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"


def _canonical(value: object) -> str:
    """A comparable form of a recipe value: 2 and 2.0 are the same setting, written by hand or by a parser."""

    def normal(v: object) -> object:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [normal(x) for x in v]
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        return v

    return json.dumps(normal(value), sort_keys=True, ensure_ascii=False, default=str)


def setting(run: Run, key: str) -> object:
    """The value a run trained with: its recipe's, else the default it ran with (from its full configuration)."""
    return run.recipe[key] if key in run.recipe else run.configuration.get(key)


def differing_keys(runs: list[Run]) -> list[str]:
    """Recipe keys whose value is not the same in every run (a key missing from a run counts as different:
    the report then shows the default that run trained with, from its recorded configuration)."""
    keys = sorted({k for r in runs for k in r.recipe} - IDENTITY_KEYS)
    return [k for k in keys if len({_canonical(r.recipe[k]) if k in r.recipe else None for r in runs}) > 1]


def run_figures(run: Run) -> dict:
    """The figures a run ended with; from summary.json, else worked out from its logs."""
    train = [e["loss"] for e in run.metrics if isinstance(e.get("loss"), (int, float))]
    evals = [e["eval_loss"] for e in run.metrics if isinstance(e.get("eval_loss"), (int, float))]
    peaks = [e["peak_gpu_memory_gib"] for e in run.metrics if isinstance(e.get("peak_gpu_memory_gib"), (int, float))]
    s = run.summary
    return {
        "best_eval_loss": s.get("best_eval_loss", min(evals) if evals else None),
        "final_eval_loss": s.get("final_eval_loss", evals[-1] if evals else None),
        "train_loss": s.get("train_loss"),
        "last_train_loss": s.get("last_train_loss", train[-1] if train else None),
        "tokens_per_second": s.get("tokens_per_second"),
        "peak_gpu_memory_gib": s.get("peak_gpu_memory_gib", max(peaks) if peaks else None),
        "wall_time_seconds": s.get("wall_time_seconds"),
        "global_step": s.get("global_step", max((e.get("step", 0) for e in run.metrics), default=None)),
        "polite_rate": run.polite_rate,
        "polite_prompts": run.polite_prompts,
        "polite_evaluation": str(run.polite_file) if run.polite_file else None,
        "finished": bool(s),
        **preference_figures(run),
    }


def preference_figures(run: Run) -> dict:
    """A DPO run's preference measure (summary.json) and its last logged reward margin and accuracy, eval's
    when it evaluated, else train's; None for an SFT run."""
    preference = run.summary.get("preference") or {}

    def last(key: str) -> float | None:
        for name in (f"eval_{key}", key):
            values = [e[name] for e in run.metrics if isinstance(e.get(name), (int, float))]
            if values:
                return values[-1]
        return None

    return {
        "preference_sft_start": preference.get("sft_start"),
        "preference_end": preference.get("end"),
        "preference_pairs": preference.get("eval_pairs"),
        "reward_margin": last(REWARD_KEYS[0]),
        "reward_accuracy": last(REWARD_KEYS[1]),
    }


def is_preference_run(run: Run) -> bool:
    return bool(run.summary.get("preference")) or any(REWARD_KEYS[0] in e for e in run.metrics)


def reward_curves(run: Run) -> dict[str, list[tuple[float, float]]]:
    """``(step, value)`` points of each reward metric, train and eval (``"train rewards/margins"``, ...)."""
    points = {}
    for key in REWARD_KEYS:
        for kind, name in (("train", key), ("eval", f"eval_{key}")):
            points[f"{kind} {key}"] = [
                (e["step"], e[name]) for e in run.metrics if isinstance(e.get(name), (int, float)) and "step" in e
            ]
    return points


def plot_rewards(runs: list[Run], path: Path) -> None:
    """Two panels: reward margin and reward accuracy against step; solid train, dashed eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        data = reward_curves(run)
        for ax, key in zip(axes, REWARD_KEYS, strict=True):
            for kind, style in (("train", {"linestyle": "-"}), ("eval", {"linestyle": "--", "marker": "o"})):
                points = data[f"{kind} {key}"]
                if points:
                    ax.plot(
                        *zip(*points, strict=True), color=colors[i % len(colors)], label=f"{run.name} {kind}", **style
                    )
    axes[0].set(title="Reward margin (chosen - rejected)", xlabel="optimizer step", ylabel="margin")
    axes[1].set(title="Reward accuracy (chosen rewarded higher)", xlabel="optimizer step", ylabel="share of pairs")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves(run: Run) -> dict[str, list[tuple[float, float, float | None]]]:
    """``(step, loss, tokens seen)`` points of the train and eval loss.

    TRL logs the train tokens seen with eval events as ``eval_num_tokens``; where an event lacks a count,
    it is interpolated from the train events around its step (close enough for a plot).
    """

    def logged_tokens(event: dict, key: str) -> float | None:
        # TRL's count first; transformers' num_input_tokens_seen where TRL's is missing.
        for name in (key, "num_input_tokens_seen"):
            if isinstance(event.get(name), (int, float)) and not isinstance(event.get(name), bool):
                return event[name]
        return None

    train_points = [
        (e["step"], e["loss"], logged_tokens(e, "num_tokens"))
        for e in run.metrics
        if isinstance(e.get("loss"), (int, float)) and "step" in e
    ]
    known = [(s, t) for s, _, t in train_points if isinstance(t, (int, float))]

    def tokens_at(step: float) -> float | None:
        if not known:
            return None
        if step <= known[0][0]:
            return known[0][1] * step / known[0][0] if known[0][0] else known[0][1]
        for (s0, t0), (s1, t1) in zip(known, known[1:], strict=False):
            if s0 <= step <= s1:
                return t0 + (t1 - t0) * (step - s0) / (s1 - s0) if s1 != s0 else t1
        last_step, last_tokens = known[-1]
        return last_tokens * step / last_step if last_step else last_tokens  # past the last train log

    eval_points = [
        (e["step"], e["eval_loss"], logged_tokens(e, "eval_num_tokens") or tokens_at(e["step"]))
        for e in run.metrics
        if isinstance(e.get("eval_loss"), (int, float)) and "step" in e
    ]
    return {"train": train_points, "eval": eval_points}


def plot_losses(runs: list[Run], path: Path) -> None:
    """Two panels: loss against optimizer step and against tokens seen; solid train, dashed eval."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    fig, (by_step, by_tokens) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_tokens = False
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        data = curves(run)
        for kind, style in (
            ("train", {"linestyle": "-", "linewidth": 1.4, "alpha": 0.85}),
            ("eval", {"linestyle": "--", "marker": "o", "markersize": 4, "linewidth": 1.6}),
        ):
            points = data[kind]
            if not points:
                continue
            label = f"{run.name} {kind}"
            by_step.plot([p[0] for p in points], [p[1] for p in points], color=color, label=label, **style)
            with_tokens = [p for p in points if p[2] is not None]
            if with_tokens:
                any_tokens = True
                by_tokens.plot(
                    [p[2] for p in with_tokens], [p[1] for p in with_tokens], color=color, label=label, **style
                )
    by_step.set(title="Loss against step", xlabel="optimizer step", ylabel="loss")
    by_tokens.set(title="Loss against tokens seen", xlabel="tokens seen (non-padding)", ylabel="loss")
    by_tokens.xaxis.set_major_formatter(EngFormatter())
    if not any_tokens:
        by_tokens.text(
            0.5,
            0.5,
            "no token counts logged (num_tokens)",
            ha="center",
            va="center",
            transform=by_tokens.transAxes,
            color="gray",
        )
    for ax in (by_step, by_tokens):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: object, kind: str = "") -> str:
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "loss":
        return f"{value:.4f}"
    if kind == "time":
        minutes, seconds = divmod(int(round(value)), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _recipe_value(value: object) -> str:
    """A recipe value as YAML would write it: 2e-4 stays 0.0002, lists and mappings inline."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict, bool)) or value is None:
        return _fmt(json.dumps(value, ensure_ascii=False))
    return _fmt(value)


def render_report(runs: list[Run], plot_file: str = PLOT_FILE, rate_note: str | None = None) -> str:
    names = [r.name for r in runs]
    out = ["# Run comparison", "", "Runs: " + ", ".join(f"`{r.name}` ({r.path})" for r in runs), ""]

    keys = differing_keys(runs)
    out += ["## Recipe differences", ""]
    if keys:
        out += ["| key | " + " | ".join(names) + " |", "|---|" + "---|" * len(runs)]
        for key in keys:
            cells = [
                _recipe_value(r.recipe[key]) if key in r.recipe else f"{_recipe_value(setting(r, key))} (default)"
                for r in runs
            ]
            out.append(f"| `{key}` | " + " | ".join(cells) + " |")
    else:
        out.append(
            "The recipes are the same (apart from output_dir)." if len(runs) > 1 else "One run: nothing to diff."
        )
    out.append("")

    rows = [
        ("best eval loss", "best_eval_loss", "loss"),
        ("final eval loss", "final_eval_loss", "loss"),
        ("train loss (mean over the run)", "train_loss", "loss"),
        ("last logged train loss", "last_train_loss", "loss"),
        ("tokens per second", "tokens_per_second", ""),
        ("peak GPU memory (GiB)", "peak_gpu_memory_gib", ""),
        ("wall time (h:mm:ss)", "wall_time_seconds", "time"),
        ("steps", "global_step", ""),
        ("존댓말 rate", "polite_rate", "pct"),
        ("존댓말 rate measured on (prompts)", "polite_prompts", ""),
    ]
    if any(is_preference_run(r) for r in runs):
        rows += [
            ("preference on held-out pairs, SFT start", "preference_sft_start", "pct"),
            ("preference on held-out pairs, end", "preference_end", "pct"),
            ("preference measured on (pairs)", "preference_pairs", ""),
            ("last reward margin", "reward_margin", "loss"),
            ("last reward accuracy", "reward_accuracy", "pct"),
        ]
    figures = [run_figures(r) for r in runs]
    out += ["## Results", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(runs)]
    for title, key, kind in rows:
        out.append(f"| {title} | " + " | ".join(_fmt(f[key], kind) for f in figures) + " |")
    out.append("")
    notes = [
        f"`{r.name}` has no summary.json (still running, or stopped early): figures come from its logs."
        for r, f in zip(runs, figures, strict=True)
        if not f["finished"]
    ]
    notes += [f"`{r.name}`: 존댓말 rate of `{r.polite_model}`." for r in runs if r.polite_model]
    notes += [rate_note] if rate_note else []
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    out += [
        "## Loss curves",
        "",
        f"![train and eval loss against step and tokens seen]({plot_file})",
        "",
        "Solid lines: train loss at each logging step. Dashed lines with dots: eval loss.",
        "",
    ]
    if any(is_preference_run(r) for r in runs):
        out += [
            "## Reward curves (DPO)",
            "",
            f"![reward margin and accuracy against step]({REWARD_PLOT_FILE})",
            "",
            "Preference: the share of held-out pairs whose chosen (존댓말) answer the model finds likelier than the "
            "rejected (반말) one, before DPO (the SFT model it starts from) and after. Rewards are TRL's: beta "
            "times the log-probability ratio to the SFT model; solid train, dashed eval.",
            "",
        ]
    return "\n".join(out)


def compare_runs(run_dirs: list[str | Path], output_dir: str | Path) -> Path:
    """Write compare.md, loss_curves.png and compare.json for `run_dirs` into `output_dir`; return it."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    if len({r.path.resolve() for r in runs}) != len(runs):
        raise UserError("a run directory is given twice")
    _unique_names(runs)
    rate_note = pick_evaluations(runs)
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a directory")
    output.mkdir(parents=True, exist_ok=True)
    plot_losses(runs, output / PLOT_FILE)
    if any(is_preference_run(r) for r in runs):
        plot_rewards(runs, output / REWARD_PLOT_FILE)
    (output / "compare.md").write_text(render_report(runs, rate_note=rate_note), encoding="utf-8")
    table = {
        "runs": [{"name": r.name, "path": str(r.path), **run_figures(r)} for r in runs],
        "differing_keys": {k: {r.name: setting(r, k) for r in runs} for k in differing_keys(runs)},
        "polite_rate_note": rate_note,
    }
    (output / "compare.json").write_text(
        json.dumps(table, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return output
