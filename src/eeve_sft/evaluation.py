"""Politeness evaluation: answer a set of 반말 prompts with each model and measure how often it answers in 존댓말.

Per model: the share of answers the speech-level toolkit labels ``polite`` (the 존댓말 rate, over all answers),
the 반말 / mixed / neutral counts, answers cut off by the length limit, mean answer length, the 존댓말 rate per
prompt category and, given a recipe, the mean token loss on the recipe's eval split (same template and masking
as training). Optionally lm-evaluation-harness benchmarks. Results go to ``eval.json`` and ``eval.md``.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data import conversation_problem
from .errors import UserError
from .inference import (
    ModelSource,
    SamplingConfig,
    generate_batch,
    load_for_inference,
    resolve_model_source,
)
from .sampling import EVAL_SAMPLING
from .speech_level import BANMAL, LABELS, MIXED, NEUTRAL, POLITE, classify_batch
from .template import pad_token_id

DEFAULT_PROMPTS = "eval/prompts_banmal.jsonl"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when the package is installed editable
BASE_KEYWORD = "base"



# ---------------------------------------------------------------------------------------------------- prompts


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


# ------------------------------------------------------------------------------------------------- model list


def expand_model_paths(paths: list[str]) -> list[ModelSource]:
    """Resolve every path; the word ``base`` stands for the base model the adapters in the list name."""
    sources: list[ModelSource | None] = []
    for path in paths:
        keyword = path == BASE_KEYWORD and not Path(path).exists()
        sources.append(None if keyword else resolve_model_source(path))
    if any(s is None for s in sources):
        bases = {s.base for s in sources if s is not None and s.kind == "adapter"}
        if len(bases) != 1:
            found = "none" if not bases else ", ".join(sorted(bases))
            raise UserError(
                f"'{BASE_KEYWORD}' stands for the base model of the adapters given, which must name exactly one; "
                f"they name {found}"
            )
        base = bases.pop()
        sources = [s if s is not None else ModelSource(base, "model", base) for s in sources]
    seen = set()
    for source in sources:
        if source.given in seen:
            raise UserError(f"model path given twice: {source.given}")
        seen.add(source.given)
    return sources  # type: ignore[return-value]


def display_name(source: ModelSource) -> str:
    """A short column name: ``run/checkpoint-250`` for a local path, the id for a Hub model."""
    path = Path(source.path)
    if not path.exists():
        return source.path
    parts = path.resolve().parts
    return "/".join(parts[-2:])


def default_output_dir(sources: list[ModelSource]) -> Path:
    """``RUN/eval`` when the models that come from a training run all come from one (a base model comes from
    none), else ``outputs/eval``. There ``scripts/compare.py`` and the model card find the results."""
    runs = set()
    for source in sources:
        path = Path(source.path)
        if path.exists() and (path.resolve().parent / "recipe.yaml").is_file():
            runs.add(path.resolve().parent)
    return runs.pop() / "eval" if len(runs) == 1 else Path("outputs/eval")


# ----------------------------------------------------------------------------------------------------- scoring


@dataclass
class Answer:
    id: str
    category: str
    prompt: str
    answer: str
    label: str
    stopped_on_eos: bool
    new_tokens: int


@dataclass
class ModelReport:
    name: str
    model_path: str
    kind: str
    base_model: str | None
    num_prompts: int
    counts: dict[str, int]
    polite_rate: float
    length_limit_hits: int
    mean_answer_chars: float
    mean_answer_tokens: float
    per_category: dict[str, dict]
    eval_loss: float | None = None
    eval_loss_tokens: int | None = None
    lm_eval: dict | None = None
    answers: list[dict] = field(default_factory=list)


def score_answers(prompts: list[EvalPrompt], results) -> tuple[list[Answer], dict]:
    """Label every answer and compute the figures of one model."""
    labels = classify_batch([r.text for r in results])
    answers = [
        Answer(p.id, p.category, p.messages[-1]["content"], r.text, label, r.stopped_on_eos, r.new_tokens)
        for p, r, label in zip(prompts, results, labels, strict=True)
    ]
    counts = {label: 0 for label in LABELS}
    for a in answers:
        counts[a.label] = counts.get(a.label, 0) + 1
    per_category: dict[str, dict] = {}
    for a in answers:
        entry = per_category.setdefault(a.category, {"prompts": 0, "polite": 0})
        entry["prompts"] += 1
        entry["polite"] += a.label == POLITE
    for entry in per_category.values():
        entry["polite_rate"] = entry["polite"] / entry["prompts"]
    n = len(answers)
    figures = {
        "num_prompts": n,
        "counts": counts,
        "polite_rate": counts[POLITE] / n,
        "length_limit_hits": sum(not a.stopped_on_eos for a in answers),
        "mean_answer_chars": sum(len(a.answer) for a in answers) / n,
        "mean_answer_tokens": sum(a.new_tokens for a in answers) / n,
        "per_category": dict(sorted(per_category.items())),
    }
    return answers, figures


# --------------------------------------------------------------------------------------------------- eval loss


@dataclass
class EvalData:
    conversations: list[list[dict]]
    max_length: int | None
    assistant_only_loss: bool
    description: str


def load_eval_data(recipe_or_run_dir: str | Path, limit: int | None = None) -> EvalData:
    """The eval split a recipe trains against, selected exactly as training selects it."""
    from .recipe import parse_recipe
    from .run_dir import RunDir
    from .training import select_data

    path = Path(recipe_or_run_dir)
    recipe_file = path / "recipe.yaml" if path.is_dir() else path
    if path.is_dir() and not recipe_file.is_file():
        raise UserError(f"{path} has no recipe.yaml: give a recipe file or a training run directory")
    recipe = parse_recipe(recipe_file, check_device=False)
    script, training = recipe.script, recipe.training
    # A relative dataset path is as given (cwd), else found through the run's parents (a run read elsewhere).
    found = RunDir(recipe_file.parent).find_near(script.dataset_name)
    eval_split = select_data(recipe, with_eval=True, dataset_name=str(found) if found else None).eval
    if limit is not None:
        eval_split = eval_split.select(range(min(limit, len(eval_split))))
    description = f"{script.dataset_name} [{script.dataset_test_split}], {len(eval_split)} conversations"
    return EvalData(list(eval_split["messages"]), training.max_length, training.assistant_only_loss, description)


@torch.inference_mode()
def eval_loss(model, tokenizer, data: EvalData, batch_size: int = 4) -> tuple[float, int]:
    """Mean token cross-entropy over the trained (assistant) tokens of `data`, and how many tokens that was."""
    from .data import IGNORE_INDEX, tokenize_conversation

    rows = [tokenize_conversation(m, tokenizer, data.max_length, data.assistant_only_loss) for m in data.conversations]
    rows = [r for r in rows if r["num_trained"] > 0]  # training drops these too
    rows.sort(key=lambda r: len(r["input_ids"]))  # similar lengths per batch: less padding; the sum is the same
    if not rows:
        raise UserError(f"no eval conversation keeps a trained token at max_length={data.max_length}")
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk], device=device)
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk],
                            device=device)
        labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in chunk],
                              device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        # Token t predicts token t+1, as in the trainer's causal LM loss.
        shifted_logits, shifted_labels = logits[:, :-1].float(), labels[:, 1:]
        total += torch.nn.functional.cross_entropy(
            shifted_logits.reshape(-1, shifted_logits.size(-1)),
            shifted_labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).item()
        count += int((shifted_labels != IGNORE_INDEX).sum())
    return total / count, count


# ----------------------------------------------------------------------------------------------------- lm-eval

LM_EVAL_TASKS = ("kobest", "kmmlu", "haerae")


def lm_eval_model_args(source: ModelSource, device: str, dtype: str) -> dict:
    """lm-eval's HF model arguments: the base weights plus the adapter (and its tokenizer, which has the template)."""
    if source.kind == "adapter":
        args = {"pretrained": source.base, "peft": source.path, "tokenizer": source.path}
    else:
        args = {"pretrained": source.path}
    args.update(device=device, dtype=dtype)
    return args


def lm_eval_request(
    source: ModelSource,
    tasks: list[str],
    device: str,
    dtype: str,
    batch_size: int | str,
    limit: int | None = None,
    include_path: str | None = None,
) -> dict:
    """The keyword arguments of ``lm_eval.simple_evaluate`` for one model (task manager built when it runs)."""
    check_lm_eval_settings(tasks, include_path, installed=False)
    return {
        "model": "hf",
        "model_args": lm_eval_model_args(source, device, dtype),
        "tasks": list(tasks),
        "batch_size": batch_size,
        "limit": limit,
        "include_path": include_path,
        "log_samples": False,
    }


def check_lm_eval_settings(tasks: list[str], include_path: str | None, installed: bool = True) -> None:
    if not tasks:
        raise UserError("--lm-eval needs at least one task name (kobest, kmmlu, haerae, or one of --lm-eval-include)")
    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"--lm-eval-include: task directory not found: {include_path}")
    if installed:
        require_lm_eval()


def require_lm_eval() -> None:
    """Fail with the install hint when lm-evaluation-harness (an optional dependency) is missing."""
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(
            "--lm-eval needs lm-evaluation-harness, which is not installed: pip install 'eeve-sft[lmeval]'"
        )


def run_lm_eval(request: dict) -> dict:
    """Run lm-evaluation-harness; return ``{task: {metric: value}}``."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    kwargs = dict(request)
    include = kwargs.pop("include_path")
    task_manager = None
    if include is not None:  # indexing lm-eval's own thousands of tasks takes seconds: skip it when unneeded
        task_manager = TaskManager(include_path=include, include_defaults=False)
        if not set(kwargs["tasks"]) <= set(task_manager.all_tasks):
            task_manager = None
    task_manager = task_manager or TaskManager(include_path=include)
    unknown = [t for t in kwargs["tasks"] if t not in task_manager.all_tasks]
    if unknown:
        raise UserError(f"lm-eval does not know task(s) {', '.join(unknown)}")
    output = simple_evaluate(task_manager=task_manager, **kwargs)
    results = {}
    for task, metrics in (output or {}).get("results", {}).items():
        results[task] = {
            key: value for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "alias"
        }
    return results


# ---------------------------------------------------------------------------------------------------- running


@dataclass
class EvalSettings:
    sampling: SamplingConfig = EVAL_SAMPLING
    batch_size: int | str | None = "auto"  # a number, or "auto": as many prompts at once as GPU memory holds
    load_in_4bit: bool = False
    device: str | None = None
    loss_batch_size: int = 4
    lm_eval_tasks: list[str] = field(default_factory=list)
    lm_eval_include: str | None = None
    lm_eval_limit: int | None = None


def evaluate_model(
    source: ModelSource, prompts: list[EvalPrompt], settings: EvalSettings, eval_data: EvalData | None = None
) -> ModelReport:
    model, tokenizer = load_for_inference(source.given, settings.load_in_4bit, settings.device)
    results = generate_batch(
        model, tokenizer, [p.messages for p in prompts], batch_size=settings.batch_size, **asdict(settings.sampling)
    )
    answers, figures = score_answers(prompts, results)
    report = ModelReport(
        name=display_name(source), model_path=source.given, kind=source.kind, base_model=source.base,
        answers=[asdict(a) for a in answers], **figures,
    )
    if eval_data is not None:
        report.eval_loss, report.eval_loss_tokens = eval_loss(model, tokenizer, eval_data, settings.loss_batch_size)
    device = str(next(model.parameters()).device)
    del model, tokenizer  # free the weights before the next model (or lm-eval's own copy) loads
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if settings.lm_eval_tasks:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        request = lm_eval_request(
            source, settings.lm_eval_tasks, device, dtype, settings.batch_size or "auto",
            settings.lm_eval_limit, settings.lm_eval_include,
        )
        report.lm_eval = run_lm_eval(request)
    return report


def run_evaluation(
    model_paths: list[str],
    prompts_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    settings: EvalSettings | None = None,
    recipe: str | Path | None = None,
    loss_limit: int | None = None,
    prompt_limit: int | None = None,
) -> Path:
    """Evaluate every model on the prompts; write eval.json and eval.md to `output_dir`; return that dir."""
    settings = settings or EvalSettings()
    if not model_paths:
        raise UserError("give at least one --model-path")
    sources = expand_model_paths(model_paths)
    prompts_path = Path(prompts_path) if prompts_path else default_prompts_path()
    prompts = load_prompts(prompts_path)
    if prompt_limit is not None:
        prompts = prompts[:prompt_limit]
    if settings.lm_eval_tasks:  # check before any model loads, not after an hour of generation
        check_lm_eval_settings(settings.lm_eval_tasks, settings.lm_eval_include)
    eval_data = load_eval_data(recipe, loss_limit) if recipe else None
    output = Path(output_dir) if output_dir else default_output_dir(sources)
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a directory")

    reports = [evaluate_model(source, prompts, settings, eval_data) for source in sources]
    document = {
        "prompts_file": str(prompts_path),
        "num_prompts": len(prompts),
        "prompt_set": prompt_set_id(prompts),
        "generation": {**asdict(settings.sampling), "batch_size": settings.batch_size,
                       "load_in_4bit": settings.load_in_4bit},
        "eval_data": eval_data.description if eval_data else None,
        "models": [asdict(r) for r in reports],
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (output / "eval.md").write_text(render_markdown(document), encoding="utf-8")
    return output


# ----------------------------------------------------------------------------------------------------- reports


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 4) -> str:
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
            f"| {_cell(m['name'])} | {_pct(m['polite_rate'])} | {m.get('num_prompts', '—')} | {c.get(POLITE, 0)} | {c.get(BANMAL, 0)} | "
            f"{c.get(MIXED, 0)} | {c.get(NEUTRAL, 0)} | {m['length_limit_hits']} | "
            f"{m['mean_answer_chars']:.1f} | {m['mean_answer_tokens']:.1f} | {_num(m.get('eval_loss'))} |"
        )
    return "\n".join(lines)


def render_markdown(document: dict, samples_per_label: int = 3, seed: int = 0) -> str:
    models = document["models"]
    gen = document["generation"]
    decoding = "greedy" if not gen["do_sample"] else (
        f"sampling (temperature {gen['temperature']}, top_p {gen['top_p']}, top_k {gen['top_k']}, seed {gen['seed']})"
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
    out += ["## 존댓말 rate per category", "",
            "| category | prompts | " + " | ".join(_cell(m["name"]) for m in models) + " |",
            "|---|---:|" + "---:|" * len(models)]
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
