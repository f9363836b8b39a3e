"""Training-speed benchmark: named variants of the project's recipes, each trained for a fixed number of steps on one
GPU, in its own process, on the same synthetic data and EEVE-shaped random-weight model.

    python benchmarks/bench_train.py run --work /tmp/bench [--variants q_padded,q_packed,...]
    python benchmarks/bench_train.py report --work /tmp/bench [--write benchmarks/RESULTS.md]
    python benchmarks/bench_train.py list

A variant is a recipe plus overrides, parsed by the project's `parse_recipe` and trained by TRL's `SFTTrainer`
exactly as `scripts/sft.py` builds it (same tokenizer, tokenization, model-loading kwargs, PEFT and quantization
config). Per variant the worker reports, over the steps after warm-up: non-padding tokens/s, trained (label) tokens/s,
s/step, and peak allocated / reserved GPU memory over the whole training loop. Before its first step it scores a fixed
batch of conversations with its own collator and attention path; `report` compares that loss and the number of trained
tokens with the plain padded variant of the same family (QLoRA or bf16), the check that packing, padding-free
attention and kernel swaps leave the objective unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

ORIGINAL = "recipes/eeve_banmal_original.yaml"
BF16 = "recipes/eeve_banmal_bf16.yaml"
DEFAULT = "recipes/eeve_banmal.yaml"
BF16_FAST = "recipes/eeve_banmal_bf16_fast.yaml"

# The original workload whose wall time each variant's throughput is turned into: 100K conversations, 2 epochs.
WORKLOAD_SAMPLES = 100_000 * 2
CHECK_EXAMPLES = 8  # conversations in the fixed correctness batch
LOSS_RTOL = 1e-3  # relative loss difference allowed between attention/kernel paths in bf16 (a mask error: ~3e-3)
LEAK_FRACTION = 0.2  # per-token log-prob differences must stay under this share of the mask-error control's

PACKED = {"packing": True, "packing_strategy": "bfd", "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}


@dataclasses.dataclass
class Variant:
    name: str
    family: str  # "qlora" or "bf16": variants of one family are checked against its padded variant
    label: str
    recipe: str
    overrides: dict = dataclasses.field(default_factory=dict)
    steps: int = 10  # optimizer steps in all
    warmup: int = 3  # steps left out of the timing (kernel compilation, allocator growth, paged optimizer setup)
    hooks: tuple = ()  # benchmark-only changes that no recipe key expresses (see apply_hooks)
    env: dict = dataclasses.field(default_factory=dict)  # set in the worker before anything loads


# The variants measured before scripts/sft.py skipped PEFT's fp32 copy of LoRA inputs keep that copy, so that a
# rerun measures what their rows in RESULTS.md describe; the shipped-recipe variants run exactly as sft.py does.
KEEP_CAST = ("fp32_lora_input_cast",)


def _v(name, family, label, recipe, overrides=None, steps=10, warmup=3, hooks=KEEP_CAST, env=None):
    return Variant(name, family, label, recipe, dict(overrides or {}), steps, warmup, tuple(hooks), dict(env or {}))


LIGER = {"use_liger_kernel": True}
FLEX = {"attn_implementation": "flex_attention", "pad_to_multiple_of": 2048}  # fixed shapes: one flex compile
NO_CKPT = {"activation_checkpointing": False}
SDPA = {"attn_implementation": "sdpa", "pad_to_multiple_of": None}
# TRL's selective checkpointing keeps the SDPA kernels' outputs and recomputes the rest (flex is not on its list).
SAC = {"activation_checkpointing_kwargs": {"use_reentrant": False, "selective": True}}
# torch.compile through the Trainer, one decoder layer compiled and reused for all 48 (accelerate's regional
# compilation: the whole 10.8B graph would take far longer to compile); warm-up covers the compilation.
COMPILE = {"torch_compile": True}
REGIONAL = {"ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "true"}

VARIANTS = {
    v.name: v
    for v in [
        # QLoRA (NF4, double quant, bf16 compute), activation checkpointing on throughout.
        _v("q_padded", "qlora", "QLoRA, batch 4 padded to longest (original)", ORIGINAL, steps=6, warmup=2),
        _v("q_packed", "qlora", "QLoRA, packed 4x2048 bfd padding-free, sdpa", ORIGINAL, PACKED),
        _v("q_packed_liger", "qlora", "QLoRA, packed 4x2048, sdpa, Liger", ORIGINAL, {**PACKED, **LIGER}),
        _v("q_packed_flex", "qlora", "QLoRA, packed 4x2048, flex attention", ORIGINAL, {**PACKED, **FLEX}),
        _v("q_packed_liger_flex", "qlora", "QLoRA, packed 4x2048, flex attention, Liger", ORIGINAL,
           {**PACKED, **LIGER, **FLEX}),
        _v("q_packed_liger_flex_repeat", "qlora", "QLoRA, packed 4x2048, flex attention, Liger (second run)", ORIGINAL,
           {**PACKED, **LIGER, **FLEX}),
        _v("q_packed_liger_flex_offload", "qlora", "QLoRA, packed 4x2048, flex attention, Liger, activation offloading",
           ORIGINAL, {**PACKED, **LIGER, **FLEX, "activation_offloading": True}),
        # bf16 LoRA (no quantization).
        _v("b_padded", "bf16", "bf16 LoRA, batch 4 padded to longest", BF16, steps=6, warmup=2),
        _v("b_packed", "bf16", "bf16 LoRA, packed 4x2048, sdpa", BF16, PACKED),
        _v("b_packed_liger_flex", "bf16", "bf16 LoRA, packed 4x2048, flex, Liger", BF16, {**PACKED, **LIGER, **FLEX}),
        _v("b_nockpt_b1", "bf16", "bf16 LoRA, packed 1x2048 x accum 4, flex, Liger, no checkpointing", BF16,
           {**PACKED, **LIGER, **FLEX, **NO_CKPT, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4},
           steps=10),
        _v("b_nockpt_b1_nocast", "bf16",
           "bf16 LoRA, packed 1x2048 x accum 4, flex, Liger, no checkpointing, LoRA input cast off", BF16,
           {**PACKED, **LIGER, **FLEX, **NO_CKPT, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4},
           steps=10, hooks=()),
        _v("b_nockpt_b1_sdpa", "bf16", "bf16 LoRA, packed 1x2048 x accum 4, sdpa, Liger, no checkpointing", BF16,
           {**PACKED, **LIGER, **NO_CKPT, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4},
           steps=10),
        _v("b_nockpt_b2", "bf16", "bf16 LoRA, packed 2x2048 x accum 2, flex, Liger, no checkpointing", BF16,
           {**PACKED, **LIGER, **FLEX, **NO_CKPT, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2},
           steps=10),
        _v("b_nockpt_b2_nocast", "bf16",
           "bf16 LoRA, packed 2x2048 x accum 2, flex, Liger, no checkpointing, LoRA input cast off", BF16,
           {**PACKED, **LIGER, **FLEX, **NO_CKPT, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2},
           hooks=()),
        # LoRA dropout 0 is a change of hyperparameter (the recipes use 0.05), measured to show what dropout costs.
        _v("b_nockpt_b2_nodrop", "bf16", "bf16 LoRA, packed 2x2048 x accum 2, flex, Liger, no checkpointing, "
           "lora_dropout 0", BF16, {**PACKED, **LIGER, **FLEX, **NO_CKPT, "per_device_train_batch_size": 2,
                                   "gradient_accumulation_steps": 2, "lora_dropout": 0.0}),
        _v("b_nockpt_b4_nodrop", "bf16", "bf16 LoRA, packed 4x2048, flex, Liger, no checkpointing, lora_dropout 0",
           BF16, {**PACKED, **LIGER, **FLEX, **NO_CKPT, "lora_dropout": 0.0}),
        _v("b_nockpt_b3_nodrop", "bf16", "bf16 LoRA, packed 3x2048, flex, Liger, no checkpointing, lora_dropout 0",
           BF16, {**PACKED, **LIGER, **FLEX, **NO_CKPT, "per_device_train_batch_size": 3, "lora_dropout": 0.0}),
        # The shipped recipes, as scripts/sft.py runs them (fp32 LoRA input copy skipped under bf16 autocast).
        _v("q_default", "qlora", "recipes/eeve_banmal.yaml as shipped (QLoRA, packed 4x2048, flex, Liger)", DEFAULT,
           hooks=()),
        _v("b_fast", "bf16", "recipes/eeve_banmal_bf16_fast.yaml as shipped (packed 2x2048 x accum 2, flex, Liger, "
           "no checkpointing, lora_dropout 0)", BF16_FAST, hooks=()),
        _v("b_fast_repeat", "bf16", "recipes/eeve_banmal_bf16_fast.yaml as shipped (second run)", BF16_FAST, hooks=()),
        _v("b_fast_dropout", "bf16", "recipes/eeve_banmal_bf16_fast.yaml with the original lora_dropout 0.05",
           BF16_FAST, {"lora_dropout": 0.05}, hooks=()),
        # Third session: the remaining levers, each against a rerun of the shipped recipe in the same session.
        _v("q_default_rerun", "qlora", "recipes/eeve_banmal.yaml as shipped (third session)", DEFAULT, hooks=()),
        _v("q_default_workers", "qlora", "recipes/eeve_banmal.yaml, 4 dataloader workers", DEFAULT,
           {"dataloader_num_workers": 4, "dataloader_persistent_workers": True}, hooks=()),
        _v("q_default_b3", "qlora", "recipes/eeve_banmal.yaml, packed 3x2048", DEFAULT,
           {"per_device_train_batch_size": 3}, hooks=()),
        _v("q_default_b6", "qlora", "recipes/eeve_banmal.yaml, packed 6x2048", DEFAULT,
           {"per_device_train_batch_size": 6}, steps=8, hooks=()),
        _v("q_default_b8", "qlora", "recipes/eeve_banmal.yaml, packed 8x2048", DEFAULT,
           {"per_device_train_batch_size": 8}, steps=7, hooks=()),
        _v("q_default_sdpa", "qlora", "recipes/eeve_banmal.yaml with sdpa instead of flex", DEFAULT, SDPA, hooks=()),
        _v("q_default_sdpa_sac", "qlora", "recipes/eeve_banmal.yaml with sdpa, selective checkpointing", DEFAULT,
           {**SDPA, **SAC}, hooks=()),
        _v("q_default_compile", "qlora", "recipes/eeve_banmal.yaml, torch.compile (regional)", DEFAULT, COMPILE,
           warmup=4, hooks=(), env=REGIONAL),
        _v("b_fast_rerun", "bf16", "recipes/eeve_banmal_bf16_fast.yaml as shipped (third session)", BF16_FAST,
           hooks=()),
        _v("b_fast_compile", "bf16", "recipes/eeve_banmal_bf16_fast.yaml, torch.compile (regional)", BF16_FAST,
           COMPILE, warmup=4, hooks=(), env=REGIONAL),
        # Fourth session: the same comparisons again, interleaved, to tell the levers' gains from run-to-run spread.
        _v("q_default_rerun2", "qlora", "recipes/eeve_banmal.yaml as shipped (fourth session)", DEFAULT, hooks=()),
        _v("q_default_workers2", "qlora", "recipes/eeve_banmal.yaml, 4 dataloader workers (fourth session)", DEFAULT,
           {"dataloader_num_workers": 4, "dataloader_persistent_workers": True}, hooks=()),
        _v("q_default_compile2", "qlora", "recipes/eeve_banmal.yaml, torch.compile (regional; fourth session)",
           DEFAULT, COMPILE, warmup=4, hooks=(), env=REGIONAL),
        _v("b_fast_rerun2", "bf16", "recipes/eeve_banmal_bf16_fast.yaml as shipped (fourth session)", BF16_FAST,
           hooks=()),
        _v("b_fast_compile2", "bf16", "recipes/eeve_banmal_bf16_fast.yaml, torch.compile (regional; fourth session)",
           BF16_FAST, COMPILE, warmup=4, hooks=(), env=REGIONAL),
    ]
}


def bench_keys(variant: Variant, model: str, data: str, out_dir: Path, cpu_smoke: bool) -> dict:
    """The variant's recipe keys plus what every benchmark run sets: no eval, no checkpoints, a fixed step count."""
    keys = {
        "model_name_or_path": model,
        "dataset_name": data,
        "output_dir": str(out_dir),
        "overwrite_output_dir": True,
        "max_steps": variant.steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "early_stopping_patience": None,
        "report_to": "none",
        "include_num_input_tokens_seen": "non_padding",
        **variant.overrides,
    }
    if cpu_smoke:  # the benchmark's own logic on a tiny model, no GPU
        keys.update(dtype="float32", bf16=False, use_cpu=True, load_in_4bit=False, use_bnb_nested_quant=False,
                    optim="adamw_torch", dataset_num_proc=None, use_liger_kernel=False, max_length=256, max_steps=3,
                    attn_implementation="sdpa", pad_to_multiple_of=None)  # flex attention has no CPU backward
    return keys


# ----------------------------------------------------------------------------------------------------------------
# Worker: one variant, one process.


def apply_hooks(model, hooks: tuple, bf16: bool) -> None:
    # As scripts/sft.py does: under bf16 autocast, no fp32 copy of every LoRA input (see modeling.py).
    if bf16 and "fp32_lora_input_cast" not in hooks:
        from eeve_sft.modeling import skip_redundant_lora_input_casts

        skip_redundant_lora_input_casts(model)


def fixed_batch_check(trainer, examples: list[dict]) -> dict:
    """Score `examples` through the trainer's own collator and model (dropout off), the way TRL's compute_loss does."""
    import torch

    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    device = trainer.args.device
    batch = trainer.data_collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    labels = batch["labels"][:, 1:]
    trained = labels[labels != -100]
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved = [m.p for m in dropouts]
    for m in dropouts:
        m.p = 0.0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.args.bf16)

    def score(inputs):
        with autocast:
            out = model(**inputs, use_cache=False, fused_lm_head=True)
        log_probs = out.log_probs[out.label_mask].detach().float().cpu()
        return float(out.loss.detach()), int(out.label_mask.sum()), log_probs

    try:
        model.train()
        loss, n_trained, log_probs = score(batch)
        result = {
            "loss": loss,
            "trained_tokens": n_trained,
            "label_count": int(trained.numel()),
            "label_checksum": int(trained.long().sum()),
            "tokens_in_batch": int(batch["input_ids"].numel()),
            "log_probs": [round(float(x), 5) for x in log_probs],
        }
        if "position_ids" in batch and "attention_mask" not in batch:
            # Negative control: the same flattened batch with one running position sequence, so documents attend
            # to each other. The gap to `loss` shows how large an attention-mask error would be.
            leaky = {k: v for k, v in batch.items() if k in ("input_ids", "labels")}
            leaky["position_ids"] = torch.arange(batch["input_ids"].size(1), device=device)[None]
            leak_loss, _, leak_lp = score(leaky)
            result["leak_control_loss"] = leak_loss
            result["leak_control_mean_abs_logprob_diff"] = float((leak_lp - log_probs).abs().mean())
    finally:
        for m, p in zip(dropouts, saved):
            m.p = p
    return result


def worker(args) -> None:
    import torch
    import yaml
    from transformers import TrainerCallback, set_seed
    from trl import SFTTrainer

    from eeve_sft.modeling import load_tokenizer
    from eeve_sft.recipe import check_for_training, parse_recipe
    from eeve_sft.training import build_trainer, prepare_data

    variant = VARIANTS[args.variant]
    os.environ.update(variant.env)
    work = Path(args.work)
    out_dir = work / "runs" / variant.name
    out_dir.mkdir(parents=True, exist_ok=True)
    # The variant as a recipe file on top of its base recipe: dict-valued keys need no command-line syntax.
    recipe_file = out_dir / "bench_recipe.yaml"
    keys = bench_keys(variant, args.model, args.data, out_dir, args.cpu_smoke)
    recipe_file.write_text(yaml.safe_dump({"base_recipe": str(REPO / variant.recipe), **keys}, sort_keys=False))
    t_start = time.time()

    recipe = parse_recipe(recipe_file, [])
    check_for_training(recipe)
    training = recipe.training
    set_seed(training.seed)
    tokenizer = load_tokenizer(recipe)
    data = prepare_data(recipe, tokenizer, names=["train"])
    tokenized = data.train
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    trained_per_row = [sum(1 for x in lab if x != -100) for lab in tokenized["labels"]]
    check_examples = [tokenized[i] for i in range(min(CHECK_EXAMPLES, len(tokenized)))]
    pad_id = tokenizer.pad_token_id
    cuda = torch.cuda.is_available() and not training.use_cpu

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class BenchTrainer(SFTTrainer):
        micro_steps = 0
        input_tokens = 0
        label_tokens = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            # Counted from the batch the model sees: real tokens (not padding) and next-token targets.
            self.micro_steps += 1
            self.input_tokens += int((inputs["input_ids"] != pad_id).sum())
            self.label_tokens += int((inputs["labels"][:, 1:] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks = []
            self.check = None

        def on_train_begin(self, args_, state, control, **kwargs):
            if not args.no_check:
                self.check = fixed_batch_check(trainer, check_examples)
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.marks.append((time.perf_counter(), 0, 0, 0))

        def on_step_end(self, args_, state, control, **kwargs):
            sync()
            self.marks.append((time.perf_counter(), trainer.input_tokens, trainer.label_tokens, trainer.micro_steps))

    timer = Timer()
    # The LoRA input casts are the variant's choice (apply_hooks), not build_trainer's.
    trainer = build_trainer(recipe, tokenizer, data, [timer], trainer_class=BenchTrainer, skip_lora_input_casts=False)
    apply_hooks(trainer.model, variant.hooks, training.bf16)
    t_loaded = time.time()
    trainer.train()
    t_done = time.time()

    marks = timer.marks
    w = min(variant.warmup, len(marks) - 2, training.max_steps - 1)
    (t0, in0, lab0, _), (t1, in1, lab1, _) = marks[w], marks[-1]
    steps = len(marks) - 1 - w
    seconds = t1 - t0
    mean_len = sum(lengths) / len(lengths)
    tok_s = (in1 - in0) / seconds
    result = {
        "name": variant.name,
        "status": "ok",
        "family": variant.family,
        "label": variant.label,
        "recipe": variant.recipe,
        "overrides": variant.overrides,
        "hooks": list(variant.hooks),
        "measured_steps": steps,
        "warmup_steps": w,
        "micro_steps_per_step": (marks[-1][3] - marks[w][3]) / steps,
        "seconds": seconds,
        "s_per_step": seconds / steps,
        "tokens_per_s": tok_s,
        "label_tokens_per_s": (lab1 - lab0) / seconds,
        "tokens_per_step": (in1 - in0) / steps,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "data_mean_tokens": mean_len,
        "data_mean_trained_tokens": sum(trained_per_row) / len(trained_per_row),
        "data_rows": len(lengths),
        "workload_hours": WORKLOAD_SAMPLES * mean_len / tok_s / 3600,
        "load_seconds": t_loaded - t_start,
        "train_seconds": t_done - t_loaded,
        "check": timer.check,
        "env": environment(),
    }
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "results" / f"{variant.name}.json").write_text(json.dumps(result, indent=1))
    print(f"RESULT {variant.name}: {tok_s:.0f} tok/s, {result['s_per_step']:.2f} s/step, "
          f"peak {result['peak_allocated_gib'] or 0:.2f} GiB", flush=True)


def environment() -> dict:
    import importlib.metadata as md

    import torch

    env = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for name in ("transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel", "datasets"):
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            env[name] = None
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    return env


# ----------------------------------------------------------------------------------------------------------------
# Orchestration: build what is missing, then each variant in a fresh process.


def run(args) -> None:
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(parents=True, exist_ok=True)
    model, data = Path(args.model), Path(args.data)
    py = sys.executable
    if not (model / "config.json").is_file():
        cmd = [py, str(REPO / "benchmarks/synthetic.py"), "model", str(model)] + (["--tiny"] if args.cpu_smoke else [])
        subprocess.run(cmd, check=True)
    if not (data / "train.jsonl").is_file():
        subprocess.run([py, str(REPO / "benchmarks/synthetic.py"), "data", str(data), "--tokenizer", str(model)],
                       check=True)
    queue = work / "queue.txt"
    names = [n for n in args.variants.split(",") if n] if args.variants else list(VARIANTS)
    with open(queue, "a") as f:
        f.writelines(n + "\n" for n in names)
    idle_since = time.time()
    while True:
        pending = [n for n in dict.fromkeys(queue.read_text().split()) if n != "stop"
                   and not (work / "results" / f"{n}.json").is_file()]
        if not pending:
            if "stop" in queue.read_text().split() or time.time() - idle_since > args.wait_for_more:
                break
            time.sleep(2)
            continue
        # Names are not checked against this process's table: an updated copy of this file may define new ones.
        run_one(pending[0], args, work)
        print(report_table(load_results(work), short=True), flush=True)
        idle_since = time.time()


def run_one(name: str, args, work: Path) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", "--variant", name, "--work", str(work),
           "--model", args.model, "--data", args.data] + (["--cpu-smoke"] if args.cpu_smoke else [])
    log = work / "logs" / f"{name}.log"
    started = time.time()
    print(f"== {name}", flush=True)
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=args.timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if not (work / "results" / f"{name}.json").is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        oom = any("OutOfMemoryError" in line or "CUDA out of memory" in line for line in tail)
        write_failure(work, name, "out of GPU memory" if oom else f"exit {code}: " + " | ".join(tail[-3:]))
        print("\n".join(tail), flush=True)
    print(f"   {name} done in {time.time() - started:.0f}s (exit {code})", flush=True)


def write_failure(work: Path, name: str, error: str) -> None:
    variant = VARIANTS.get(name)
    result = {"name": name, "status": "failed", "error": error[:500],
              "family": variant.family if variant else None, "label": variant.label if variant else name}
    (work / "results" / f"{name}.json").write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------------------------------------------
# Report.


def load_results(work: Path) -> dict:
    results = {}
    for path in sorted((Path(work) / "results").glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("name") in VARIANTS:
            results[r["name"]] = r
    return {name: results[name] for name in VARIANTS if name in results}


def compare(result: dict, reference: dict | None) -> dict | None:
    """The fixed-batch check of `result` against the padded variant of its family."""
    mine, ref = result.get("check"), (reference or {}).get("check")
    if not mine or not ref:
        return None
    same_labels = (mine["label_count"] == ref["label_count"] and mine["label_checksum"] == ref["label_checksum"]
                   and mine["trained_tokens"] == ref["trained_tokens"])
    rel = abs(mine["loss"] - ref["loss"]) / abs(ref["loss"])
    diffs = [abs(a - b) for a, b in zip(mine["log_probs"], ref["log_probs"])] if same_labels else []
    out = {
        "pass": same_labels and rel <= LOSS_RTOL,
        "loss": mine["loss"],
        "ref_loss": ref["loss"],
        "rel_loss_diff": rel,
        "trained_tokens": mine["trained_tokens"],
        "ref_trained_tokens": ref["trained_tokens"],
        "mean_abs_logprob_diff": sum(diffs) / len(diffs) if diffs else None,
        "max_abs_logprob_diff": max(diffs) if diffs else None,
    }
    if "leak_control_loss" in mine:
        out["leak_rel_loss_diff"] = abs(mine["leak_control_loss"] - mine["loss"]) / abs(mine["loss"])
        out["leak_mean_abs_logprob_diff"] = mine["leak_control_mean_abs_logprob_diff"]
        # Per-token agreement must also stay well inside what a mask error would do.
        if diffs and out["leak_mean_abs_logprob_diff"] > 0:
            out["pass"] = out["pass"] and out["mean_abs_logprob_diff"] <= LEAK_FRACTION * out["leak_mean_abs_logprob_diff"]
    return out


PADDED = {"qlora": "q_padded", "bf16": "b_padded"}  # the reference variant of each family


def check_against_padded(results: dict, r: dict) -> dict | None:
    """:func:`compare` of `r` with the padded variant of its family; None where either has no result to compare."""
    ref = results.get(PADDED.get(r.get("family"), ""))
    if r.get("status") != "ok" or ref is None or ref is r or ref.get("status") != "ok":
        return None
    return compare(r, ref)


def _f(x, fmt):
    return "–" if x is None else format(x, fmt)


def report_table(results: dict, short: bool = False) -> str:
    lines = [
        "| variant | setup | tokens/s (non-pad) | trained tokens/s | s/step | tokens/step | peak alloc GiB "
        "| peak reserved GiB | 100K×2 epochs (h) | check vs padded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        if r["status"] != "ok":
            lines.append(f"| `{name}` | {r['label']} | {r['error']} | | | | | | | |")
            continue
        if PADDED.get(r["family"]) == name:
            check = "reference"
        elif (c := check_against_padded(results, r)) is None:
            check = "–"
        else:
            check = (f"{'PASS' if c['pass'] else 'FAIL'} (Δloss {c['rel_loss_diff']:.1e} rel, "
                     f"{c['trained_tokens']}/{c['ref_trained_tokens']} tokens)")
        lines.append(
            f"| `{name}` | {r['label']} | {r['tokens_per_s']:,.0f} | {r['label_tokens_per_s']:,.0f} "
            f"| {r['s_per_step']:.2f} | {r['tokens_per_step']:,.0f} | {_f(r['peak_allocated_gib'], '.1f')} "
            f"| {_f(r['peak_reserved_gib'], '.1f')} | {r['workload_hours']:.1f} | {check} |"
        )
    return "\n".join(lines)


def check_table(results: dict) -> str:
    lines = [
        "| variant | loss | padded loss | rel. diff | trained tokens (variant / padded) | mean abs Δ log-prob "
        "| max abs Δ log-prob | leak control: rel. loss diff / mean abs Δ log-prob | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        c = check_against_padded(results, r)
        if c is None:
            continue
        leak = (f"{c['leak_rel_loss_diff']:.1e} / {c['leak_mean_abs_logprob_diff']:.3f}"
                if "leak_rel_loss_diff" in c else "–")
        lines.append(
            f"| `{name}` | {c['loss']:.4f} | {c['ref_loss']:.4f} | {c['rel_loss_diff']:.1e} "
            f"| {c['trained_tokens']} / {c['ref_trained_tokens']} | {_f(c['mean_abs_logprob_diff'], '.4f')} "
            f"| {_f(c['max_abs_logprob_diff'], '.3f')} | {leak} | {'PASS' if c['pass'] else 'FAIL'} |"
        )
    return "\n".join(lines)


SECTION_HEADING = "## Training speed (`benchmarks/bench_train.py`)"
BEGIN, END = "<!-- bench_train tables: begin -->", "<!-- bench_train tables: end -->"


def generated_block(results: dict, date: str) -> str:
    """Date, device, versions, method and both tables: the part of RESULTS.md that `report --write` rewrites."""
    first_ok = next((r for r in results.values() if r.get("status") == "ok"), {})
    env = first_ok.get("env", {})
    mean, trained = first_ok.get("data_mean_tokens"), first_ok.get("data_mean_trained_tokens")
    checked = next((r["check"]["trained_tokens"] for r in results.values() if r.get("check")), "?")
    versions = ", ".join(f"{k} {env.get(k)}" for k in
                         ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel"))
    return "\n".join([
        BEGIN,
        f"- Date: {date}",
        f"- Device: 1× {env.get('device', '?')} ({env.get('device_memory_gib', '?')} GiB), CUDA {env.get('cuda', '?')}",
        f"- Versions: Python {env.get('python', '?')}, {versions}",
        "- Model: random bf16 weights with EEVE-Korean-Instruct-10.8B's shapes (48 layers, hidden 4096, MLP 14336, "
        "32/8 heads, vocab 40960, untied embeddings), loaded through `from_pretrained` as `scripts/sft.py` does "
        "(QLoRA: NF4, double quantization, bf16 compute); LoRA r 64, α 128, dropout 0.05 on the 7 projections "
        "unless a row says otherwise.",
        f"- Data: 3,000 synthetic single-turn conversations; templated length log-normal (median 350 tokens, σ 0.7, "
        f"clipped to [32, 2048]), mean {mean:.0f} tokens of which {trained:.0f} trained (assistant answer + eos), "
        "max_length 2048." if mean else "- Data: synthetic conversations",
        "- Method: each variant is a recipe plus overrides, trained by TRL's `SFTTrainer` in its own process for a "
        "fixed number of optimizer steps; the first 2 (padded) or 3 (packed) steps are warm-up and not timed; the "
        "GPU is synchronized at every step end. Tokens are counted from the batches: non-padding tokens and "
        "next-token targets (labels ≠ -100). Peak memory is `torch.cuda.max_memory_allocated/reserved` over the "
        "training loop. The 100K×2-epoch column is 200,000 conversations × the mean length above ÷ tokens/s.",
        f"- Check: before its first step every variant scores the same {CHECK_EXAMPLES} conversations ({checked} trained "
        "tokens) through "
        "its own collator, attention and kernels, dropout off; a variant passes when its trained tokens and labels "
        f"equal those of the padded variant of its family, its loss is within {LOSS_RTOL:g} (relative) and its mean "
        f"per-token log-prob difference is under {LEAK_FRACTION:g}× that of a leak control (the same packed batch "
        "with documents allowed to attend to each other).",
        "",
        report_table(results),
        "",
        check_table(results),
        END,
    ])


def write_results_md(path: Path, block: str) -> None:
    """Replace this benchmark's generated block in RESULTS.md (or add the section); other sections are kept as is."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION_HEADING}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def report(args) -> None:
    results = load_results(Path(args.work))
    text = report_table(results) + "\n\n" + check_table(results)
    print(text)
    if args.write:
        write_results_md(Path(args.write), generated_block(results, args.date))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default="/tmp/bench", help="runs, logs and results go here")
    common.add_argument("--model", default="/tmp/eeve-random", help="built there when missing")
    common.add_argument("--data", default="/tmp/synth", help="written there when missing")
    common.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU: tests the benchmark itself")
    r = sub.add_parser("run", parents=[common], help="build what is missing, then run variants")
    r.add_argument("--variants", default="", help="comma-separated names (default: all, in table order)")
    r.add_argument("--timeout", type=int, default=480, help="seconds per variant")
    r.add_argument("--wait-for-more", type=int, default=0,
                   help="seconds to wait for names appended to WORK/queue.txt once the queue is done")
    w = sub.add_parser("worker", parents=[common], help="(internal) one variant")
    w.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    w.add_argument("--no-check", action="store_true")
    p = sub.add_parser("report", parents=[common], help="tables from WORK/results")
    p.add_argument("--write", help="update this RESULTS.md (only this benchmark's section)")
    p.add_argument("--date", default=datetime.date.today().isoformat(), help="measurement date for --write")
    sub.add_parser("list", help="variant names")
    args = parser.parse_args()
    if args.command == "list":
        for v in VARIANTS.values():
            print(f"{v.name:28s} {v.label}")
    elif args.command == "run":
        run(args)
    elif args.command == "worker":
        worker(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
