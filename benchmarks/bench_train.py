"""Training-speed benchmark: named variants of the project's recipes, each trained for a fixed number of steps on one
GPU, in its own process, on the same synthetic data and EEVE-shaped random-weight model.

    python -m benchmarks.bench_train run [--variants q_default,b_fast,...] [--repeat N] [--profile]
    python -m benchmarks.bench_train report [--write benchmarks/RESULTS.md]
    python -m benchmarks.bench_train check --cpu-smoke      # the fixed-batch check alone, one per scoring path
    python -m benchmarks.bench_train list

The variants are data (`benchmarks/train_variants.yaml`): a recipe plus overrides, parsed by the project's
`parse_recipe` and trained by TRL's `SFTTrainer` exactly as `scripts/sft.py` builds it (same tokenizer, tokenization,
model-loading kwargs, PEFT and quantization config). Per variant the worker reports, over the steps after warm-up:
non-padding tokens/s, trained (label) tokens/s, s/step, and peak allocated / reserved GPU memory over the whole
training loop, and for a compiled variant what torch.compile did (graphs, graph breaks and their reasons); the
runner adds the GPU's clocks, power and temperature before, during and after (gpu_clocks.py).
Results go to `benchmarks/results/train_speed/<date>_<device>/<variant>.json` (repeats: `<variant>.runN.json`).
Before its first step every variant scores a fixed batch of conversations with its own collator and attention path;
`report` compares that loss and the trained tokens with its family's reference in the same folder, the check that
packing, padding-free attention and kernel swaps leave the objective unchanged. With `--profile` each variant
trains one more step after the timed ones under the torch profiler and writes its GPU time by kernel family to
`<variant>.profile.txt` beside the result (a profiler in the process slows the steps after it, so never before them).
Loss-curve variants (`data: learnable`, family bf16_curve) train a few hundred steps on synthetic data the model can
learn (`<data>-learnable`, built beside the speed data); `report` checks each step's loss against the family's
reference (CURVE_RTOL) and `report --write` plots both curves beside the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, module_command, module_env, run_module
from benchmarks.variants import (
    CHECK_EXAMPLES,
    LEARNABLE_TRAIN_ROWS,
    PROBE_STD,
    REFERENCES,
    TRAIN_RESULTS,
    VARIANTS,
    WORKLOAD_SAMPLES,
    Variant,
    next_repeat,
    recipe_keys,
    result_path,
)


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
        "logging_steps": 1,  # every step's loss and gradient norm go into the result (loss curves)
        **variant.overrides,
    }
    if cpu_smoke:  # the benchmark's own logic on a tiny model, no GPU
        keys.update(
            dtype="float32",
            bf16=False,
            use_cpu=True,
            load_in_4bit=False,
            use_bnb_nested_quant=False,
            optim="adamw_torch",
            dataset_num_proc=None,
            use_liger_kernel=False,
            max_length=256,
            max_steps=3,
            attn_implementation="sdpa",
            pad_to_multiple_of=None,
            activation_offloading=False,
        )  # flex attention has no CPU backward; TRL's offloading copies on CUDA streams
    return keys


# ----------------------------------------------------------------------------------------------------------------
# Worker: one variant, one process.


def apply_hooks(model, hooks: tuple) -> dict:
    """Apply a variant's benchmark-only changes to the trainer's (PEFT-wrapped) model; returns what they report."""
    report = {}
    if "fp32_lora_input_cast" in hooks:
        # Under bf16 build_trainer skips PEFT's fp32 copy of every LoRA input (modeling.py): the variant keeps it.
        from peft.tuners.lora import LoraLayer

        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.cast_input_dtype_enabled = True
    from eeve_sft.training.fused_lora import is_float8_base

    fp8 = [m for m in model.modules() if is_float8_base(m)]  # recipe key float8_base
    if fp8:
        import torch

        from eeve_sft.training.float8 import self_check

        report["float8_base_layers"] = len(fp8)
        # FP8 rounding on one projection of the first FP8 layer's shape, against the same product in bf16.
        ref = torch.nn.Linear(fp8[0].in_features, fp8[0].out_features, bias=False, device=fp8[0].weight.device)
        report["float8_self_check"] = self_check(ref.to(fp8[0].compute_dtype))
    return report


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
        # PEFT starts every LoRA B at zero, so the scores above never run the adapters' arithmetic. The probe scores
        # the batch again with the same seeded B values in every variant of a family, so a change to how the
        # adapters are computed (fused projections, FP8 base matmuls) shows in its loss and log-probs.
        lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
        originals = [p.detach().clone() for p in lora_b]
        generator = torch.Generator().manual_seed(0)
        try:
            with torch.no_grad():
                for p in lora_b:
                    p.copy_(torch.randn(p.shape, generator=generator) * PROBE_STD)
            if lora_b:
                probe_loss, _, probe_lp = score(batch)
                result["adapter_probe"] = {
                    "loss": probe_loss,
                    "std": PROBE_STD,
                    "log_probs": [round(float(x), 5) for x in probe_lp],
                }
        finally:
            with torch.no_grad():
                for p, original in zip(lora_b, originals, strict=True):
                    p.copy_(original)
    finally:
        for m, p in zip(dropouts, saved, strict=True):
            m.p = p
    return result


def worker(args) -> None:
    import torch
    import yaml
    from transformers import TrainerCallback, set_seed
    from trl import SFTTrainer

    from eeve_sft.training.assembly import build_trainer, prepare_data
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.recipe import check_for_training, parse_recipe

    variant = VARIANTS[args.variant]
    os.environ.update(variant.env)
    work = Path(args.work)
    out_dir = work / "runs" / variant.name
    out_dir.mkdir(parents=True, exist_ok=True)
    # The variant as a recipe file on top of its base recipe: dict-valued keys need no command-line syntax.
    recipe_file = out_dir / "bench_recipe.yaml"
    keys = bench_keys(variant, args.model, args.data, out_dir, args.cpu_smoke)
    profiling = args.profile and torch.cuda.is_available() and not args.cpu_smoke
    if profiling:  # one more step, profiled after the timed ones: the profiler's overhead stays out of the timing
        keys["max_steps"] += 1
    recipe_file.write_text(yaml.safe_dump({"base_recipe": str(REPO / variant.recipe), **keys}, sort_keys=False))
    t_start = time.time()

    recipe = parse_recipe(recipe_file, [])
    check_for_training(recipe)
    training = recipe.training
    set_seed(training.seed)
    tokenizer = tokenizer_for_recipe(recipe)
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
            self.unix = []  # wall-clock time of each mark, to match GPU clock samples to the timed steps
            self.check = None
            self.profiler = StepProfiler(cuda)
            self.profile_step = training.max_steps - 1 if profiling else None  # the extra last step

        def on_step_begin(self, args_, state, control, **kwargs):
            if state.global_step == self.profile_step and not self.profiler.running:
                self.profiler.start()

        def on_train_begin(self, args_, state, control, **kwargs):
            if not args.no_check:
                self.check = fixed_batch_check(trainer, check_examples)
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.marks.append((time.perf_counter(), 0, 0, 0))
            self.unix.append(time.time())

        def on_step_end(self, args_, state, control, **kwargs):
            sync()
            self.marks.append((time.perf_counter(), trainer.input_tokens, trainer.label_tokens, trainer.micro_steps))
            self.unix.append(time.time())
            if self.profiler.running and self.profile_step is not None:
                self.profile_step = None
                title = f"{variant.name}, optimizer step {state.global_step}"
                self.profiler.stop(title, Path(args.out).with_suffix(".profile.txt"))

    timer = Timer()
    trainer = build_trainer(recipe, tokenizer, data, [timer], trainer_class=BenchTrainer)
    hook_report = apply_hooks(trainer.model, variant.hooks)
    if args.check_only:  # the fixed-batch check alone, no training (bench_train.py check)
        result = {
            "name": variant.name,
            "status": "check_only",
            "family": variant.family,
            "label": variant.label,
            "check": fixed_batch_check(trainer, check_examples),
            "hooks_report": hook_report,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        return
    t_loaded = time.time()
    trainer.train()
    t_done = time.time()

    marks = timer.marks[:-1] if profiling else timer.marks
    result = timed_result(variant, marks, timer.unix, sum(lengths) / len(lengths))
    w = result["warmup_steps"]
    result.update(
        {
            "hooks": list(variant.hooks),
            "micro_steps_per_step": (marks[-1][3] - marks[w][3]) / result["measured_steps"],
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
            "data_mean_trained_tokens": sum(trained_per_row) / len(trained_per_row),
            "data_rows": len(lengths),
            "load_seconds": t_loaded - t_start,
            "train_seconds": t_done - t_loaded,
            "check": timer.check,
            "hooks_report": hook_report,
            # Every optimizer step's training loss and gradient norm, for loss-curve comparisons between variants.
            "train_log": [
                [e["step"], e["loss"], e.get("grad_norm")]
                for e in trainer.state.log_history
                if "loss" in e and "step" in e
            ],
            "env": environment(),
        }
    )
    if training.torch_compile:
        result["compile"] = compile_report()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(
        f"RESULT {variant.name}: {result['tokens_per_s']:.0f} tok/s, {result['s_per_step']:.2f} s/step, "
        f"peak {result['peak_allocated_gib'] or 0:.2f} GiB",
        flush=True,
    )


def compile_report() -> dict:
    """What torch.compile did in this process: graphs, graph breaks (with their most frequent reasons) and the
    reasons CUDA graphs were skipped, so that a compiled variant that ran mostly eager shows as such."""
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]
    return {
        "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(breaks.values())),
        "break_reasons": {reason[:200]: n for reason, n in breaks.most_common(5)},
        "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0)),
    }


# Kernel families of a training step, matched on the kernel's name in this order (first match wins).
KERNEL_FAMILIES = (
    ("matmul (cuBLAS / CUTLASS)", r"gemm|nvjet|cutlass|xmma|cublas|splitk"),
    ("4-bit dequantize (bitsandbytes)", r"dequant"),
    ("flex attention", r"flex|triton_tem"),
    ("Liger (RMSNorm, SwiGLU, RoPE, CE)", r"rms_norm|swiglu|rope|liger|cross_entropy|fused_linear"),
    ("dropout / random", r"dropout|bernoulli|philox|distribution"),
    ("optimizer", r"adam|optimizer|multi_tensor|kOptimizer|8bit"),
    ("copies / fills", r"copy|memcpy|memset|fill|CatArray"),
    ("other elementwise / reductions", r"elementwise|vectorized|unrolled|reduce|index|triton_"),
)


class StepProfiler:
    """One optimizer step under the torch profiler (GPU kernels and host operators, or CPU operators without a GPU),
    summarised by :func:`kernel_summary` into a text file: :meth:`start` at the step's beginning, :meth:`stop` at its
    end."""

    def __init__(self, cuda: bool):
        self.cuda, self.profiler, self.started = cuda, None, 0.0

    @property
    def running(self) -> bool:
        return self.profiler is not None

    def start(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        # On a GPU the host's operators are recorded too: their own time tells launch-bound steps from GPU-bound ones.
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.__enter__()
        self.started = time.perf_counter()

    def stop(self, title: str, path: Path) -> None:
        """End the profiled step (after the caller's synchronisation) and write its summary to `path`."""
        wall = time.perf_counter() - self.started
        self.profiler.__exit__(None, None, None)
        path.write_text(kernel_summary(self.profiler, wall, title, on_cpu=not self.cuda), encoding="utf-8")
        self.profiler = None


def kernel_summary(prof, wall_s: float, title: str, on_cpu: bool = False) -> str:
    """GPU time of one profiled step by kernel family and the 30 costliest kernels, then the host's 20 costliest CPU
    operators, as text (`on_cpu`: the CPU operators' own time alone, for a run on a CPU)."""
    from torch.autograd import DeviceType

    events = prof.key_averages()
    if on_cpu:
        rows, host = [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in events], []
    else:
        # An operator row carries its kernels' device time too: only the kernels' own rows count as GPU time.
        kernels = [e for e in events if e.device_type != DeviceType.CPU]
        rows = [(e.key, e.count, e.self_device_time_total / 1e6) for e in kernels]
        host = [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in events if e.device_type == DeviceType.CPU]
        host = [row for row in host if row[2] > 0]
    rows = [row for row in rows if row[2] > 0]
    total = sum(r[2] for r in rows)
    families: dict[str, float] = {}
    for key, _, seconds in rows:
        family = next((f for f, pattern in KERNEL_FAMILIES if re.search(pattern, key, re.I)), "other")
        families[family] = families.get(family, 0.0) + seconds
    lines = [
        f"torch profiler, {title}: wall {wall_s * 1e3:.0f} ms, {'CPU operators' if on_cpu else 'GPU kernels'} "
        f"{total * 1e3:.0f} ms ({total / wall_s:.0%} of the wall time), {sum(r[1] for r in rows)} launches",
        "",
        f"{'kernel family':40s} {'ms':>9s} {'share':>7s}",
    ]
    for family, seconds in sorted(families.items(), key=lambda kv: -kv[1]):
        lines.append(f"{family:40s} {seconds * 1e3:9.1f} {seconds / total:7.1%}")
    lines += ["", f"{'calls':>7s} {'ms':>9s} {'share':>7s}  kernel"]
    for key, count, seconds in sorted(rows, key=lambda r: -r[2])[:30]:
        lines.append(f"{count:7d} {seconds * 1e3:9.1f} {seconds / total:7.1%}  {key[:110]}")
    if host:
        # Host time the GPU did not hide: launches, Python-side operators and the waits on the GPU (synchronize).
        lines += ["", f"host: {sum(r[2] for r in host) * 1e3:.0f} ms of CPU operators' own time", ""]
        lines += [f"{'calls':>7s} {'ms':>9s}  CPU operator"]
        for key, count, seconds in sorted(host, key=lambda r: -r[2])[:20]:
            lines.append(f"{count:7d} {seconds * 1e3:9.1f}  {key[:110]}")
    return "\n".join(lines) + "\n"


def timed_result(variant: Variant, marks: list, unix: list, mean_tokens: float) -> dict:
    """A result's identity and timing, as every runner reports them. `marks[i]` is (time, tokens, trained tokens, ...)
    at the end of step i (0: the start of training) and `unix[i]` its wall-clock time; the first `variant.warmup`
    steps (at least one step stays timed) are left out."""
    w = min(variant.warmup, len(marks) - 2)
    (t0, in0, lab0, *_), (t1, in1, lab1, *_) = marks[w], marks[-1]
    steps, seconds = len(marks) - 1 - w, t1 - t0
    tok_s = (in1 - in0) / seconds
    return {
        "name": variant.name,
        "status": "ok",
        "family": variant.family,
        "label": variant.label,
        "recipe": variant.recipe,
        "overrides": variant.overrides,
        "data": variant.data,
        "measured_steps": steps,
        "warmup_steps": w,
        "seconds": seconds,
        "s_per_step": seconds / steps,
        "tokens_per_s": tok_s,
        "label_tokens_per_s": (lab1 - lab0) / seconds,
        "tokens_per_step": (in1 - in0) / steps,
        "data_mean_tokens": mean_tokens,
        "workload_hours": WORKLOAD_SAMPLES * mean_tokens / tok_s / 3600,
        "timed_window_unix": [unix[w], unix[len(marks) - 1]],
    }


def environment(*extra_packages: str) -> dict:
    """Python, torch, the training packages (and `extra_packages`) and the GPU a result was measured with."""
    import torch

    from eeve_sft.versions import package_versions

    env = {"torch": torch.__version__, "python": sys.version.split()[0]}
    env.update(
        package_versions(
            ("transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel", "datasets", "torchao")
            + extra_packages
        )
    )
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    return env


# ----------------------------------------------------------------------------------------------------------------
# Orchestration: build what is missing, then each variant in a fresh process, N rounds, GPU clocks sampled.


def device_slug(name: str | None = None) -> str:
    """Short device name for a results folder: 'h200' for 'NVIDIA H200', 'h100' for 'NVIDIA H100 80GB HBM3'."""
    if name is None and shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "-i", "0", "--query-gpu=name", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
        )
        name = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    if not name:
        return "cpu"
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in ("nvidia", "geforce", "tesla")]
    return words[0] if words else "gpu"


def data_dir(data: str | Path, kind: str) -> Path:
    """The synthetic data of one kind (DATA_KINDS): `data` itself for speed, else its sibling `<data>-<kind>`."""
    return Path(data) if kind == "speed" else Path(f"{data}-{kind}")


def ensure_model_and_data(args, kinds: tuple = ("speed",)) -> tuple[Path, Path]:
    """The random model and the synthetic data of `args` (each kind of `kinds` in its folder, see data_dir), built
    by synthetic.py where missing; returns the model's folder and the speed data's."""
    model = Path(args.model)
    if not (model / "config.json").is_file():
        run_module("synthetic", "model", model, *(["--tiny"] if args.cpu_smoke else []))
    for kind in dict.fromkeys(("speed", *kinds)):
        folder = data_dir(args.data, kind)
        if (folder / "train.jsonl").is_file():
            continue
        rows = (
            [] if kind == "speed" else ["--learnable", "--train", "64" if args.cpu_smoke else str(LEARNABLE_TRAIN_ROWS)]
        )
        run_module("synthetic", "data", folder, "--tokenizer", model, *rows)
    return model, Path(args.data)


def run(args) -> None:
    names = [n for n in args.variants.split(",") if n] if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(
            f"bench_train: unknown variant(s) {', '.join(unknown)} (see `python -m benchmarks.bench_train list`)"
        )
    if args.repeat < 1:
        raise SystemExit("bench_train: --repeat must be at least 1")
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    folder = Path(args.results) / f"{args.date}_{'cpu' if args.cpu_smoke else device_slug()}"
    folder.mkdir(parents=True, exist_ok=True)
    model, data = ensure_model_and_data(args, tuple(VARIANTS[n].data for n in names))
    invocation = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print(f"results: {folder}", flush=True)
    for _ in range(args.repeat):  # rounds: each variant once per round, so repeats interleave
        for name in names:
            run_one(VARIANTS[name], args, work, folder, invocation)
    from benchmarks.train_speed_tables import load_folder, report_table

    print(report_table(load_folder(folder)), flush=True)


SWITCHES = ("cpu_smoke", "check_only", "no_check", "profile")  # the worker's on/off flags


def worker_args(variant: str, work, model, data, out, **flags) -> argparse.Namespace:
    """One worker run's arguments, as `bench_train.py worker` parses them: for a subprocess or for this process."""
    switches = dict.fromkeys(SWITCHES, False) | flags
    return argparse.Namespace(
        variant=variant, work=str(work), model=str(model), data=str(data), out=str(out), **switches
    )


def worker_flags(run_args: argparse.Namespace) -> list[str]:
    """The command line of :func:`worker_args` (the external runner takes the same flags)."""
    flags = ["--variant", run_args.variant, "--work", run_args.work, "--model", run_args.model]
    flags += ["--data", run_args.data, "--out", run_args.out]
    return flags + [f"--{name.replace('_', '-')}" for name in SWITCHES if getattr(run_args, name)]


def run_one(variant: Variant, args, work: Path, folder: Path, invocation: str) -> None:
    import importlib.machinery

    from benchmarks.gpu_clocks import Sampler

    repeat = next_repeat(folder, variant.name)
    out = result_path(folder, variant.name, repeat)
    external = variant.runner != "bench"
    search = ([args.external_site] if external and args.external_site else []) + sys.path
    missing = [n for n in variant.needs if importlib.machinery.PathFinder.find_spec(n, search) is None]
    if missing:
        write_failure(out, variant, repeat, invocation, f"needs {', '.join(missing)} (not installed)")
        print(f"== {variant.name}: skipped, needs {', '.join(missing)}", flush=True)
        return
    run_args = worker_args(
        variant.name,
        work,
        args.model,
        data_dir(args.data, variant.data),
        out,
        cpu_smoke=args.cpu_smoke and not external,
        profile=args.profile and not external,
    )
    if external:
        cmd = module_command("bench_external", *worker_flags(run_args))
    else:
        cmd = module_command("bench_train", "worker", *worker_flags(run_args))
    # An external trainer's own package set goes first on the path.
    env = module_env((args.external_site,) if external and args.external_site else ())
    log = work / "logs" / f"{out.stem}.log"
    started = time.time()
    print(f"== {variant.name} (run {repeat})", flush=True)
    with open(log, "w") as f, Sampler() as clocks:
        try:
            proc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, timeout=args.timeout, env=env)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if out.is_file():
        result = json.loads(out.read_text())
        result.update(
            repeat=repeat,
            invocation=invocation,
            gpu_clocks=clocks.record(tuple(result.get("timed_window_unix") or ()) or None),
        )
        out.write_text(json.dumps(result, indent=1))
    else:
        lines = log.read_text(errors="replace").strip().splitlines()
        write_failure(out, variant, repeat, invocation, failure_summary(lines, code), clocks.record())
        print("\n".join(lines[-12:]), flush=True)
    print(f"   {variant.name} done in {time.time() - started:.0f}s (exit {code})", flush=True)


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b:?")


def failure_summary(log_lines: list[str], code) -> str:
    """One line for a variant that left no result: out of GPU memory, or its exit code and the last exception line
    of its log (a traceback's last frames and the hints printed after it say less than the exception itself)."""
    tail = log_lines[-80:]
    if any("OutOfMemoryError" in line or "CUDA out of memory" in line for line in tail):
        return "out of GPU memory"
    exceptions = [line.strip() for line in tail if _EXCEPTION_LINE.match(line.strip())]
    last = exceptions[-1] if exceptions else next((line.strip() for line in reversed(tail) if line.strip()), "")
    return f"exit {code}: {last}"


def write_failure(out: Path, variant: Variant, repeat: int, invocation: str, error: str, clocks=None) -> None:
    result = {
        "name": variant.name,
        "status": "failed",
        "error": error[:500],
        "family": variant.family,
        "label": variant.label,
        "repeat": repeat,
        "invocation": invocation,
        "gpu_clocks": clocks,
    }
    out.write_text(json.dumps(result, indent=1))


SCORING_KEYS = (
    "packing",
    "packing_strategy",
    "padding_free",
    "pad_to_multiple_of",
    "attn_implementation",
    "use_liger_kernel",
    "dtype",
    "load_in_4bit",
    "fused_lora",
)
BOOL_SCORING_KEYS = ("packing", "padding_free", "use_liger_kernel", "load_in_4bit", "fused_lora")


def scoring_paths(cpu_smoke: bool) -> dict:
    """One variant per distinct way of scoring the fixed batch (collator, attention, kernels, hooks) and family
    (on the CPU smoke model, whatever the family).

    Steps, batch size, checkpointing, offloading and compilation leave the scored batch and its forward pass as they
    are; every other difference between two variants gets its own entry, so a new variant with a new path is checked.
    """
    paths = {}
    for v in VARIANTS.values():
        if v.runner != "bench":  # an external trainer scores nothing through the project's collator
            continue
        if v.data != "speed":  # loss-curve variants repeat speed variants' scoring paths on other data
            continue
        keys = bench_keys(v, "m", "d", Path("o"), cpu_smoke)
        base = recipe_keys(v.recipe)
        # Without bf16 autocast (the CPU smoke test) the fp32 LoRA input cast changes nothing.
        hooks = tuple(sorted(h for h in v.hooks if not (cpu_smoke and h == "fp32_lora_input_cast")))
        # A flag no recipe in the chain sets is off: a recipe that says `false` scores the same way.
        values = tuple(
            (k, keys.get(k, base.get(k)) or (False if k in BOOL_SCORING_KEYS else None)) for k in SCORING_KEYS
        )
        # The CPU smoke model is one float32 model for both families (no 4-bit, no bf16): a path is checked once.
        signature = (None if cpu_smoke else v.family, values, hooks)
        paths.setdefault(signature, v.name)
    return {name: signature for signature, name in paths.items()}


def _check_in_subprocess(run_args) -> str | None:
    """The fixed-batch check of one variant in its own process (a GPU's memory and kernels start clean); the error."""
    cmd = module_command("bench_train", "worker", *worker_flags(run_args))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=module_env())
    return None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stdout[-300:]}{proc.stderr[-600:]}"


def _check_in_process(run_args) -> str | None:
    """The same on the CPU smoke model, in this process: the libraries are imported once for all scoring paths
    (about 15 s a process), and each variant's environment is undone after it."""
    saved = dict(os.environ)
    try:
        worker(run_args)
        return None
    except Exception as exc:  # one variant's failure is reported with the others, as a subprocess's would be
        return f"{type(exc).__name__}: {exc}"[:900]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check(args) -> int:
    """Run the fixed-batch check of the given variants (and their references) without training; 1 if any fails."""
    from benchmarks.train_speed_tables import compare

    names = [n for n in args.variants.split(",") if n] if args.variants else list(scoring_paths(args.cpu_smoke))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(
            f"bench_train: unknown variant(s) {', '.join(unknown)} (see `python -m benchmarks.bench_train list`)"
        )
    import importlib.util

    missing = {n: [m for m in VARIANTS[n].needs if importlib.util.find_spec(m) is None] for n in names}
    for name in [n for n in names if missing[n]]:
        print(f"{name}: not checked, needs {', '.join(missing[name])} (not installed)", flush=True)
    names = [n for n in names if not missing[n]]
    refs = [REFERENCES[VARIANTS[n].family][0] for n in names]
    work = Path(args.work)
    model, data = ensure_model_and_data(args)
    results = {}
    for name in dict.fromkeys(refs + names):
        out = work / "checks" / f"{name}.json"
        run_args = worker_args(name, work, model, data, out, cpu_smoke=args.cpu_smoke, check_only=True)
        error = _check_in_process(run_args) if args.cpu_smoke else _check_in_subprocess(run_args)
        if error is not None or not out.is_file():
            print(f"{name}: FAIL ({error or 'no result'})", flush=True)
            results[name] = None
            continue
        results[name] = json.loads(out.read_text())
    failed = 0
    for name, ref_name in zip(names, refs, strict=True):
        mine, ref = results.get(name), results.get(ref_name)
        c = compare(mine, ref) if mine and ref and name != ref_name else None
        if name == ref_name:
            print(f"{name}: reference" + ("" if mine else " (failed)"), flush=True)
            failed += mine is None
            continue
        ok = c is not None and c["pass"]
        failed += not ok
        detail = (
            f"Δloss {c['rel_loss_diff']:.1e} rel, mean |Δ log-prob| {c['mean_abs_logprob_diff']:.4f}, "
            f"{c['trained_tokens']}/{c['ref_trained_tokens']} tokens"
            if c
            else "no result"
        )
        print(f"{name}: {'PASS' if ok else 'FAIL'} vs {ref_name} ({detail})", flush=True)
    return 1 if failed else 0


def report(args) -> None:
    from benchmarks.train_speed_tables import (
        check_table,
        generated_block,
        load_all,
        report_table,
        write_curve_plots,
        write_results_md,
    )

    all_results = load_all(Path(args.results))
    for folder, results in all_results.items():
        print(f"{folder}\n{report_table(results)}\n\n{check_table(results)}\n")
    if args.write:
        for folder, results in all_results.items():  # the loss-curve plots RESULTS.md shows
            write_curve_plots(Path(args.results) / folder, results)
        write_results_md(Path(args.write), generated_block(all_results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default="/tmp/bench", help="scratch: training runs and logs")
    common.add_argument("--model", default="/tmp/eeve-random", help="built there when missing")
    common.add_argument("--data", default="/tmp/synth", help="written there when missing")
    common.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU: tests the benchmark itself")
    results = argparse.ArgumentParser(add_help=False)
    results.add_argument("--results", default=str(TRAIN_RESULTS), help="results root: one folder per date and device")
    r = sub.add_parser("run", parents=[common, results], help="build what is missing, then run variants")
    r.add_argument("--variants", default="", help="comma-separated names (default: all, in table order)")
    r.add_argument("--repeat", type=int, default=1, help="rounds over the variants (each variant N times, interleaved)")
    r.add_argument("--timeout", type=int, default=480, help="seconds per variant")
    r.add_argument("--external-site", default="", help="package folder for external-trainer variants (Unsloth)")
    r.add_argument(
        "--profile",
        action="store_true",
        help="also write each variant's GPU kernels and host operators of one step (<variant>.profile.txt)",
    )
    r.add_argument(
        "--date",
        default=datetime.datetime.now(datetime.UTC).date().isoformat(),
        help="date of the results folder (default: today, UTC)",
    )
    w = sub.add_parser("worker", parents=[common], help="(internal) one variant")
    w.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    w.add_argument("--out", required=True, help="result file to write")
    w.add_argument("--no-check", action="store_true")
    w.add_argument("--check-only", action="store_true", help="score the fixed batch and stop")
    w.add_argument(
        "--profile",
        action="store_true",
        help="profile one more step's GPU kernels and host operators, after the timed ones",
    )
    c = sub.add_parser(
        "check", parents=[common], help="the fixed-batch check alone for each distinct scoring path among the variants"
    )
    c.add_argument("--variants", default="", help="comma-separated names (default: one per distinct scoring path)")
    p = sub.add_parser("report", parents=[results], help="tables from every results folder")
    p.add_argument("--write", help="update this RESULTS.md (only this benchmark's section)")
    sub.add_parser("list", help="variant names")
    args = parser.parse_args()
    if args.command == "list":
        for v in VARIANTS.values():
            print(f"{v.name:28s} {v.label}")
    elif args.command == "run":
        run(args)
    elif args.command == "worker":
        worker(args)
    elif args.command == "check":
        sys.exit(check(args))
    else:
        report(args)


if __name__ == "__main__":
    main()
