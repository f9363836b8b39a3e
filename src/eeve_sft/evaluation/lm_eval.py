"""lm-evaluation-harness benchmarks (KoBEST, KMMLU, HAE-RAE) for the same models, optional dependency."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UserError
from ..inference.loading import ModelSource

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
        raise UserError("--lm-eval needs lm-evaluation-harness, which is not installed: pip install 'eeve-sft[lmeval]'")


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
            key: value
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "alias"
        }
    return results
