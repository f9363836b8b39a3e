"""Trainer callbacks that keep a run's record: metrics.jsonl and train.log per log event, summary.json at the end,
and the template, tokenizer and stop ids in every checkpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from .run_files import write_json

logger = logging.getLogger(__name__)


def peak_gpu_memory_gib() -> dict:
    if not torch.cuda.is_available():
        return {"peak_gpu_memory_gib": None, "peak_gpu_reserved_gib": None}
    return {
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
    }


class RunRecordCallback(TrainerCallback):
    """Append each log event to metrics.jsonl and train.log; write summary.json when training ends."""

    def __init__(self, output_dir: Path, data_stats: dict):
        self.output_dir = Path(output_dir)
        self.data_stats = data_stats
        self.started = time.time()
        self.first_step: tuple[float, int] | None = None  # (time, tokens seen) when the first step ended

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = (time.time(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs, **peak_gpu_memory_gib()}
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        logger.info("step %d: %s", state.global_step, json.dumps(logs, ensure_ascii=False))

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
        write_json(self.output_dir / "summary.json", summary)


class CheckpointExtrasCallback(TrainerCallback):
    """Give every checkpoint the tokenizer with its template and the generation stop ids, so inference from
    any checkpoint needs nothing else."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from .modeling import generation_config_for

        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            self.tokenizer.save_pretrained(checkpoint)
            generation_config_for(self.tokenizer).save_pretrained(checkpoint)
