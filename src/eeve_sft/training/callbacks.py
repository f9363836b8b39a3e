"""Trainer callbacks that keep a run's record: metrics.jsonl and train.log per log event, summary.json at the end,
and the template, tokenizer and stop ids in every checkpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..jsonfiles import write_json
from .run_dir import PROGRESS_FILE, RunDir

logger = logging.getLogger(__name__)


def peak_gpu_memory_gib() -> dict:
    if not torch.cuda.is_available():
        return {"peak_gpu_memory_gib": None, "peak_gpu_reserved_gib": None}
    return {
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
    }


TOTALS = ("train_loss", "train_runtime", "wall_time_seconds")  # summed or averaged over a resumed run's parts


class RunRecordCallback(TrainerCallback):
    """Append each log event to metrics.jsonl and train.log; write summary.json when training ends.

    A resumed run reads like an uninterrupted one: the records logged after the checkpoint it resumes from are
    dropped (training logs those steps again), and summary.json's train_loss and train_runtime cover the whole
    run, with both parts stated under ``parts``.
    """

    def __init__(self, run: RunDir, data_stats: dict):
        self.run = run
        self.data_stats = data_stats
        self.started = time.time()
        self.first_step: tuple[float, int] | None = None  # (time, tokens seen) when the first step ended
        self.train_started = self.started
        self.start_step = 0
        self.before: dict = {}  # the run up to the checkpoint it resumed from

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_started = time.time()
        self.start_step = state.global_step
        if not state.is_world_process_zero or not self.start_step:
            return
        checkpoint = self.run.path / f"checkpoint-{self.start_step}"
        logged = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h and h["step"] <= self.start_step]
        previous = 0
        loss_sum = steps = 0.0
        for step, loss in logged:  # each logged loss is the mean over the steps since the previous one
            loss_sum += loss * (step - previous)
            steps += step - previous
            previous = step
        progress = self.run.progress_at(checkpoint)
        self.before = {
            "steps": [0, self.start_step],
            "train_loss": loss_sum / steps if steps else None,
            "train_runtime": progress.get("train_runtime"),
            "wall_time_seconds": progress.get("wall_time_seconds"),
        }
        self.run.keep_metrics_until(self.start_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = (time.time(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.run.append_metrics({"step": state.global_step, "epoch": state.epoch, **logs, **peak_gpu_memory_gib()})
        logger.info("step %d: %s", state.global_step, json.dumps(logs, ensure_ascii=False))

    def fill_checkpoint(self, folder: Path, trainer) -> None:
        """What the run had done at this checkpoint: training time, and TRL's trained-token count (which TRL
        itself does not save), so a resumed run continues both."""
        now = time.time()
        tokens = getattr(trainer, "_total_train_tokens", None)
        write_json(
            folder / PROGRESS_FILE,
            {
                "train_runtime": round((self.before.get("train_runtime") or 0.0) + now - self.train_started, 3),
                "wall_time_seconds": round((self.before.get("wall_time_seconds") or 0.0) + now - self.started, 2),
                "num_tokens": int(tokens) if tokens is not None else None,
            },
        )

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        history = state.log_history
        evals = [h["eval_loss"] for h in history if "eval_loss" in h]
        train_losses = [h["loss"] for h in history if "loss" in h]
        end = next((h for h in reversed(history) if "train_runtime" in h), {})
        tokens = state.num_input_tokens_seen
        # Throughput after the first step, so model compilation and warm-up do not count.
        steady = None
        if self.first_step and state.global_step > 1 and tokens > self.first_step[1]:
            steady = (tokens - self.first_step[1]) / max(time.time() - self.first_step[0], 1e-9)
        summary = {
            "global_step": state.global_step,
            "epoch": state.epoch,
            "train_loss": end.get("train_loss"),
            "last_train_loss": train_losses[-1] if train_losses else None,
            "best_eval_loss": min(evals) if evals else None,
            "final_eval_loss": evals[-1] if evals else None,
            "best_model_checkpoint": state.best_model_checkpoint,
            "num_input_tokens_seen": tokens,
            "train_runtime": end.get("train_runtime"),
            "tokens_per_second": round(steady, 2) if steady else None,
            "wall_time_seconds": round(time.time() - self.started, 2),
            "data": self.data_stats,
            **peak_gpu_memory_gib(),
        }
        if self.start_step:
            summary.update(self._whole_run(summary, state.global_step))
        write_json(self.run.summary_file, summary)

    def _whole_run(self, this_part: dict, last_step: int) -> dict:
        """Totals over both parts of a resumed run (a part's figure is None when it was not recorded)."""
        after = {"steps": [self.start_step, last_step], **{k: this_part[k] for k in TOTALS}}
        parts = [self.before, after]
        whole = {"resumed_from_step": self.start_step, "parts": parts}
        losses = [(p["train_loss"], p["steps"][1] - p["steps"][0]) for p in parts]
        known = all(loss is not None for loss, _ in losses) and last_step
        whole["train_loss"] = sum(loss * n for loss, n in losses) / last_step if known else None
        for key in ("train_runtime", "wall_time_seconds"):
            values = [p[key] for p in parts]
            whole[key] = round(sum(values), 3) if None not in values else None
        return whole


class CheckpointExtrasCallback(TrainerCallback):
    """Give every checkpoint the tokenizer with its template and the generation stop ids, so inference from
    any checkpoint needs nothing else (written into the checkpoint before it is renamed into place)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def fill_checkpoint(self, folder: Path, trainer) -> None:
        from .modeling import generation_config_for

        self.tokenizer.save_pretrained(folder)
        generation_config_for(self.tokenizer).save_pretrained(folder)
