"""Time an external trainer (Unsloth) on the training benchmark's model and data; the result is a bench_train result.

    python -m benchmarks.bench_train run --variants x_unsloth_packed --external-site /tmp/unsloth_site

`bench_train.py run` starts this file instead of its own worker for variants with `runner: unsloth`, with
`--external-site` first on the Python path: Unsloth 2026.10.9 needs its own package set (transformers <= 5.17,
trl <= 1.15; a set that ran offline on the H200 image: unsloth and unsloth_zoo 2026.10.9, trl 1.15.0, datasets
4.8.5, dill 0.4.1, multiprocess 0.70.19, bitsandbytes 0.50.2, torchao 0.17.0, cut_cross_entropy 25.1.1, tyro
1.0.17, docstring_parser, typeguard, shtab, msgspec, hf_transfer). Unsloth's wheel is mostly its `studio/` web
interface, which training does not import and which can be left out when the wheel is repacked.

The variant's recipe chain plus overrides give the hyperparameters (LoRA r/α/dropout/targets, 4-bit, learning rate,
batch, packing, max length). The conversations are tokenized by the project's own `tokenize_conversation`, so
Unsloth trains exactly the tokens and answer masks the project's recipes train. Timing and memory are taken the way
bench_train's worker takes them: the batch tokens counted in `training_step`, the GPU synchronized at each step
end, the warm-up steps left out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks import bench_train
from benchmarks.variants import VARIANTS, recipe_keys

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "UNSLOTH_DISABLE_STATISTICS": "1",
}


def training_rows(data_dir: str, tokenizer, keys: dict):
    """The benchmark's conversations as the project tokenizes them: ids and answer masks for TRL, and the raw rows."""
    from datasets import Dataset, load_dataset

    from eeve_sft.training.data import tokenize_conversation

    raw = load_dataset("json", data_files=str(Path(data_dir) / "train.jsonl"), split="train")
    rows = [
        tokenize_conversation(m, tokenizer, keys["max_length"], keys.get("assistant_only_loss", True))
        for m in raw["messages"]
    ]
    rows = [r for r in rows if r["num_trained"] > 0]
    dataset = Dataset.from_dict(
        {
            "input_ids": [r["input_ids"] for r in rows],
            "assistant_masks": [[int(x != -100) for x in r["labels"]] for r in rows],
        }
    )
    return dataset, rows


def trainer_config(variant, keys: dict, work: Path) -> dict:
    """SFTConfig keyword arguments for an external trainer: the variant's hyperparameters on training_rows' data."""
    return dict(
        output_dir=str(work / "runs" / variant.name),
        max_steps=variant.steps,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        bf16=True,
        seed=keys.get("seed", 42),
        per_device_train_batch_size=keys["per_device_train_batch_size"],
        gradient_accumulation_steps=keys["gradient_accumulation_steps"],
        learning_rate=keys["learning_rate"],
        lr_scheduler_type=keys.get("lr_scheduler_type", "linear"),
        warmup_steps=keys.get("warmup_steps", 0),
        weight_decay=keys.get("weight_decay", 0.0),
        optim=keys.get("optim", "adamw_torch"),
        max_length=keys["max_length"],
        packing=bool(keys.get("packing")),
        padding_free=bool(keys.get("packing")),
        # The answer masks arrive as the `assistant_masks` column, which TRL folds into the labels by itself;
        # assistant_only_loss would make TRL re-derive them from conversations, and it refuses tokenized rows.
        assistant_only_loss=False,
        dataset_num_proc=None,
    )


def unsloth_result(variant, keys: dict, model_dir: str, data_dir: str, work: Path) -> dict:
    os.environ.update(OFFLINE)
    from unsloth import FastLanguageModel  # noqa: I001  (first: Unsloth patches transformers, trl and peft on import)

    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_dir, max_seq_length=keys["max_length"], dtype=torch.bfloat16, load_in_4bit=bool(keys.get("load_in_4bit"))
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=keys["lora_r"],
        lora_alpha=keys["lora_alpha"],
        lora_dropout=keys["lora_dropout"],
        target_modules=list(keys["lora_target_modules"]),
        bias="none",
        use_gradient_checkpointing="unsloth" if keys.get("activation_checkpointing", True) else False,
        random_state=keys.get("seed", 42),
    )
    dataset, rows = training_rows(data_dir, tokenizer, keys)
    lengths = [len(r["input_ids"]) for r in rows]
    pad_id = tokenizer.pad_token_id

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks, self.unix = [], []

        def on_train_begin(self, args_, state, control, **kwargs):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.marks.append((time.perf_counter(), 0, 0))
            self.unix.append(time.time())

        def on_step_end(self, args_, state, control, **kwargs):
            torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), trainer.input_tokens, trainer.label_tokens))
            self.unix.append(time.time())

    class CountingTrainer(SFTTrainer):
        input_tokens = 0
        label_tokens = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.input_tokens += (
                int((inputs["input_ids"] != pad_id).sum())
                if "attention_mask" in inputs
                else int(inputs["input_ids"].numel())
            )
            self.label_tokens += int((inputs["labels"][:, 1:] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    timer = Timer()
    config = SFTConfig(**trainer_config(variant, keys, work))
    trainer = CountingTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer]
    )
    trainer.train()

    return {
        **bench_train.timed_result(variant, timer.marks, timer.unix, sum(lengths) / len(lengths)),
        "hooks": [],
        "runner": "unsloth",
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        "data_mean_trained_tokens": sum(r["num_trained"] for r in rows) / len(rows),
        "data_rows": len(rows),
        "check": None,  # Unsloth's own kernels score the batch: the project's fixed-batch check does not apply
        "env": bench_train.environment("unsloth", "unsloth_zoo"),
    }


RUNNERS = {"unsloth": unsloth_result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant", required=True, choices=sorted(n for n, v in VARIANTS.items() if v.runner in RUNNERS)
    )
    parser.add_argument("--work", default="/tmp/bench")
    parser.add_argument("--model", default="/tmp/eeve-random")
    parser.add_argument("--data", default="/tmp/synth")
    parser.add_argument("--out", required=True, help="result file to write")
    args = parser.parse_args()
    variant = VARIANTS[args.variant]
    keys = {**recipe_keys(variant.recipe), **variant.overrides}
    result = RUNNERS[variant.runner](variant, keys, args.model, args.data, Path(args.work))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"RESULT {variant.name}: {result['tokens_per_s']:.0f} tok/s, peak {result['peak_allocated_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
