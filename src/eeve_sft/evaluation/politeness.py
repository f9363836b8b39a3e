"""The 존댓말 rate: answer every prompt with each model, label the answers, and write the evaluation as JSON and
Markdown. Every evaluation keeps its own pair of files, named after its prompts and a digest of what it measured
(:func:`evaluation_name`), so a second evaluation never replaces an earlier one."""

from __future__ import annotations

import gc
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..inference.answer import generate_batch
from ..inference.loading import ModelSource, load_for_inference, resolve_model_source
from ..inference.sampling import EVAL_SAMPLING, SamplingConfig
from ..jsonfiles import write_json
from ..speech_level import LABELS, POLITE, classify_batch
from .lm_eval import check_lm_eval_settings, lm_eval_request, run_lm_eval
from .loss import EvalData, eval_loss, load_eval_data
from .markdown import render_markdown
from .prompts import EvalPrompt, default_prompts_path, load_prompts, prompt_set_id

BASE_KEYWORD = "base"


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
        name=display_name(source),
        model_path=source.given,
        kind=source.kind,
        base_model=source.base,
        answers=[asdict(a) for a in answers],
        **figures,
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
            source,
            settings.lm_eval_tasks,
            device,
            dtype,
            settings.batch_size or "auto",
            settings.lm_eval_limit,
            settings.lm_eval_include,
        )
        report.lm_eval = run_lm_eval(request)
    return report


def evaluation_name(document: dict) -> str:
    """``eval_<prompts file stem>_<N>p_<digest>``: the prompts a reader knows, their number, and a digest of the
    prompt set, models, decoding settings and eval data. Two evaluations share a name only when they measured the
    same thing."""
    measured = {
        "prompt_set": document["prompt_set"],
        "models": [m["model_path"] for m in document["models"]],
        "generation": document["generation"],
        "eval_data": document["eval_data"],
        "lm_eval": document.get("lm_eval"),
    }
    digest = hashlib.sha256(json.dumps(measured, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(document["prompts_file"]).stem)
    return f"eval_{stem}_{document['num_prompts']}p_{digest}"


def run_evaluation(
    model_paths: list[str],
    prompts_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    settings: EvalSettings | None = None,
    recipe: str | Path | None = None,
    loss_limit: int | None = None,
    prompt_limit: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Evaluate every model on the prompts; write ``NAME.json`` and ``NAME.md`` (:func:`evaluation_name`) into
    `output_dir` and return the JSON file. The same evaluation written before is refused unless `overwrite`."""
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

    generation = {**asdict(settings.sampling), "batch_size": settings.batch_size, "load_in_4bit": settings.load_in_4bit}
    planned = {
        "prompts_file": str(prompts_path),
        "num_prompts": len(prompts),
        "prompt_set": prompt_set_id(prompts),
        "generation": generation,
        "eval_data": eval_data.description if eval_data else None,
        "lm_eval": {"tasks": settings.lm_eval_tasks, "limit": settings.lm_eval_limit}
        if settings.lm_eval_tasks
        else None,
        "models": [{"model_path": s.given} for s in sources],
    }
    name = evaluation_name(planned)
    json_file, md_file = output / f"{name}.json", output / f"{name}.md"
    if json_file.exists() and not overwrite:  # checked before an hour of generation, not after
        raise UserError(
            f"{json_file} already holds this evaluation (same prompts, models and settings): "
            "pass --overwrite to replace it, or --output another folder"
        )

    reports = [evaluate_model(source, prompts, settings, eval_data) for source in sources]
    document = {**planned, "models": [asdict(r) for r in reports]}
    output.mkdir(parents=True, exist_ok=True)
    md_file.write_text(render_markdown(document), encoding="utf-8")
    write_json(json_file, document)  # last: compare.py and the model card read the JSON
    return json_file
