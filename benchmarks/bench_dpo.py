"""DPO training speed beside the SFT default: policy tokens/s and peak memory of scripts/dpo.py's trainer on the
EEVE-shaped random model, with synthetic preference pairs of the training benchmark's lengths.

    python -m benchmarks.bench_dpo run [--variants dpo_precomputed,...] [--repeat N] [--no-sft] [--profile]
    python -m benchmarks.bench_dpo report
    python -m benchmarks.bench_dpo run --cpu-smoke          # the benchmark itself on a tiny model, on CPU

`run` first runs the training benchmark's shipped SFT default (`python -m benchmarks.bench_train run --variants
q_default_fused`) into the same results folder, then each DPO variant (benchmarks/dpo_variants.yaml) in its own
process: recipes/eeve_banmal_dpo.yaml plus the variant's keys, built by the project's training assembly exactly as
scripts/dpo.py builds it, continuing a random LoRA adapter of the SFT recipe's shape. The pairs are the synthetic SFT
conversations: the prompt is the conversation up to its answer, chosen is the answer, rejected the same answer's words
in reverse order (the same length, so both sides cost the same). A run trains `steps` optimizer steps; the file holds
those steps' pairs, or the variant's `pool` of pairs where that is more (so the length-grouped sampler sorts within as
many pairs as on a real pairs file), and a precomputed reference pass, which covers the whole file, counts with the
share of its seconds that the trained pairs take. Per variant: policy tokens/s (chosen and rejected, non-padding) over
the steps after warm-up, the reference pass's seconds (precomputed variants), tokens/s over the whole epoch with that
pass, and peak allocated / reserved memory (training; the reference pass separately). Results,
the SFT default's run of the same call included: `benchmarks/results/dpo_speed/<date>_<device>/<variant>.json`;
`report` tables them against q_default_fused. With `--profile` every variant (and the SFT default) trains one more
step after the timed ones under the torch profiler and writes its time by kernel family, the share of the step's
wall time the GPU was busy and the host's costliest operators, to `<variant>.profile.txt` beside the result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS_ROOT, module_command, module_env

VARIANTS_FILE = REPO / "benchmarks/dpo_variants.yaml"
SFT_BASELINE = "q_default_fused"  # the training benchmark's variant of the SFT recipe as shipped
TARGET_SPEED_RATIO = 0.7  # DPO policy tokens/s against the SFT default's
TARGET_PEAK_GIB = 16.0


def load_variants() -> dict:
    import yaml

    data = yaml.safe_load(VARIANTS_FILE.read_text(encoding="utf-8"))
    return {v["name"]: v for v in data["variants"]}


def sft_adapter_for(model: Path, recipe, out: Path) -> Path:
    """A LoRA adapter of the SFT recipe's shape on the random model, with small random weights (a trained adapter
    is not zero), saved as training saves one: what DPO continues. Built on an empty (meta) model: only the
    adapter's own tensors are made."""
    if (out / "adapter_config.json").is_file():
        return out
    import torch
    from accelerate import init_empty_weights
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    m = recipe.model
    config = LoraConfig(
        r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        target_modules=m.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(0)
    weights = {
        key: torch.randn(tensor.shape, generator=generator) * (0.01 if "lora_B" in key else tensor.shape[-1] ** -0.5)
        for key, tensor in get_peft_model_state_dict(peft_model).items()
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "adapter_model.safetensors"))
    adapter_config = peft_model.peft_config["default"]
    adapter_config.base_model_name_or_path = str(model)
    adapter_config.save_pretrained(str(out))
    return out


def pairs_for(data: Path, out: Path, rows: int) -> Path:
    """`rows` preference pairs from the synthetic conversations in `data` (see the module docstring)."""
    if (out / "train.jsonl").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    conversations = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    if len(conversations) < rows:
        raise SystemExit(f"bench_dpo: {data} holds {len(conversations)} conversations, {rows} pairs asked for")
    with open(out / "train.jsonl", "w", encoding="utf-8") as f:
        for row in conversations[:rows]:
            messages = row["messages"]
            answer = messages[-1]["content"]
            pair = {
                "prompt": messages[:-1],
                "chosen": [{"role": "assistant", "content": answer}],
                "rejected": [{"role": "assistant", "content": " ".join(reversed(answer.split()))}],
            }
            f.write(json.dumps(pair, ensure_ascii=False) + "\n")
    return out


def bench_keys(variant: dict, args, work: Path, cpu_smoke: bool) -> dict:
    """The variant's keys plus what every run sets: no eval, no checkpoints (the worker adds `max_steps`)."""
    keys = {
        "model_name_or_path": str(args.model),
        "output_dir": str(work / "runs" / variant["name"]),
        "overwrite_output_dir": True,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "early_stopping_patience": None,
        "report_to": "none",
        "logging_steps": 1,
        "warmup_steps": 0,
        **variant.get("overrides", {}),
    }
    if cpu_smoke:
        keys.update(
            dtype="float32",
            bf16=False,
            use_cpu=True,
            load_in_4bit=False,
            use_bnb_nested_quant=False,
            optim="adamw_torch",
            dataset_num_proc=None,
            use_liger_kernel=False,
            fused_lora=False,
            activation_checkpointing=False,
            activation_offloading=False,
            max_length=256,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            pad_to_multiple_of=None,
        )
    return keys


# ----------------------------------------------------------------------------------------------------------------
# Worker: one variant, one process.


def worker(args) -> None:
    import torch
    import yaml
    from transformers import TrainerCallback, set_seed
    from trl import DPOTrainer

    from benchmarks.bench_train import StepProfiler, environment, timed_result
    from eeve_sft.training.assembly import build_dpo_trainer
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.preference import resolve_sft_adapter, select_pairs
    from eeve_sft.training.recipe import DPO_DATACLASSES, check_for_training, parse_recipe

    variant = load_variants()[args.variant]
    work = Path(args.work)
    out_dir = work / "runs" / variant["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = bench_keys(variant, args, work, args.cpu_smoke)
    steps, warmup = variant.get("steps", 10), variant.get("warmup", 3)
    if args.cpu_smoke:
        steps, warmup = 3, 1
    # --profile: one more step after the timed ones, under the torch profiler (its overhead stays out of the timing)
    extra = 1 if args.profile else 0
    # The pairs depend on the variant's batch: parse once without them to learn it. The adapter has the LoRA shape
    # of the SFT default, whose run a DPO run continues.
    recipe_file = out_dir / "bench_recipe.yaml"
    base = {"base_recipe": str(REPO / "recipes/eeve_banmal_dpo.yaml"), **keys}
    recipe_file.write_text(yaml.safe_dump(base, sort_keys=False))
    t = parse_recipe(recipe_file, [], check_device=False, classes=DPO_DATACLASSES).training
    trained = (steps + extra) * t.per_device_train_batch_size * t.gradient_accumulation_steps
    # `pool`: more pairs in the file than are trained on, so that transformers' length-grouped sampler sorts within
    # as many pairs as on a real pairs file (50 batches' worth) rather than within the few a short run reads.
    rows = max(trained, variant.get("pool", 0))
    keys["max_steps"] = steps + extra
    sft = parse_recipe(REPO / "recipes/eeve_banmal.yaml", check_device=False)
    keys["sft_adapter"] = str(sft_adapter_for(Path(args.model), sft, work / "sft_adapter"))
    keys["dataset_name"] = str(pairs_for(Path(args.data), work / f"pairs_{rows}", rows))
    recipe_file.write_text(yaml.safe_dump({**base, **keys}, sort_keys=False))

    t_start = time.time()
    recipe = parse_recipe(recipe_file, [], classes=DPO_DATACLASSES)
    check_for_training(recipe)
    training = recipe.training
    adapter = resolve_sft_adapter(recipe)
    set_seed(training.seed)
    tokenizer = tokenizer_for_recipe(recipe)
    data = select_pairs(recipe)
    cuda = torch.cuda.is_available() and not training.use_cpu

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class BenchDPOTrainer(DPOTrainer):
        micro_steps = 0
        input_tokens = 0
        label_tokens = 0
        padded_tokens = 0  # the batches' full width, padding included: what the GPU computes
        reference_seconds = 0.0  # the precomputed reference pass (TRL runs it while the trainer is built)

        def _precompute_ref_logps(self, *args_, **kwargs):
            started = time.perf_counter()
            dataset = super()._precompute_ref_logps(*args_, **kwargs)
            sync()
            self.reference_seconds += time.perf_counter() - started
            return dataset

        def training_step(self, model, inputs, num_items_in_batch=None):
            # The policy's tokens: chosen and rejected sequences, padding left out; trained = completion tokens.
            self.micro_steps += 1
            self.input_tokens += int(inputs["attention_mask"].sum())
            self.padded_tokens += inputs["attention_mask"].numel()
            self.label_tokens += int(inputs["completion_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks, self.unix = [], []
            self.profiler = StepProfiler(cuda)

        def on_step_begin(self, args_, state, control, **kwargs):
            if extra and state.global_step == state.max_steps - 1:  # the epoch's last step: the extra one
                self.profiler.start()

        def on_train_begin(self, args_, state, control, **kwargs):
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.marks.append((time.perf_counter(), 0, 0, 0))
            self.unix.append(time.time())

        def on_step_end(self, args_, state, control, **kwargs):
            sync()
            self.marks.append((time.perf_counter(), trainer.input_tokens, trainer.label_tokens, trainer.micro_steps))
            self.unix.append(time.time())
            if self.profiler.running:
                micro = trainer.micro_steps - self.marks[-2][3]
                title = f"{variant['name']}, optimizer step {state.global_step} ({micro} micro-step{'s' * (micro > 1)})"
                self.profiler.stop(title, Path(args.out).with_suffix(".profile.txt"))

    timer = Timer()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_build = time.perf_counter()
    trainer = build_dpo_trainer(recipe, tokenizer, data, adapter, [timer], trainer_class=BenchDPOTrainer)
    build_seconds = time.perf_counter() - t_build  # loading the model and adapter, and the reference pass
    peak_build = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    t_loaded = time.time()
    trainer.train()
    t_done = time.time()

    columns = trainer.train_dataset
    lengths = [len(p) + len(c) for p, c in zip(columns["prompt_ids"], columns["chosen_ids"], strict=True)]
    identity = argparse.Namespace(
        name=variant["name"],
        family="dpo",
        label=variant["label"],
        recipe="recipes/eeve_banmal_dpo.yaml",
        overrides=variant.get("overrides", {}),
        data="speed",
        warmup=warmup,
    )
    marks, unix = (timer.marks[:-1], timer.unix[:-1]) if extra else (timer.marks, timer.unix)
    result = timed_result(identity, marks, unix, sum(lengths) / len(lengths))
    result.pop("workload_hours")  # the SFT workload's hours: no meaning for a preference run
    epoch_seconds = marks[-1][0] - marks[0][0]
    # The pass covers every pair in the file; an epoch of the trained pairs alone would pay its share of it.
    reference_pass = trainer.reference_seconds * trained / len(trainer.train_dataset)
    # A profiled run's reference pass also covers the profiled step's pairs: no epoch figure with it.
    with_pass = None if extra else marks[-1][1] / (epoch_seconds + reference_pass)
    result.update(
        {
            "precompute_ref_log_probs": training.precompute_ref_log_probs,
            "reference_pass_seconds": reference_pass,
            "reference_pass_seconds_all_pairs": trainer.reference_seconds,
            "trained_pairs": trained,
            "build_seconds": build_seconds,
            "epoch_seconds": epoch_seconds,
            "tokens_per_s_with_reference_pass": with_pass,
            "padding_share": 1 - trainer.input_tokens / trainer.padded_tokens,
            "micro_steps_per_step": (marks[-1][3] - marks[0][3]) / steps,
            "profiled": bool(extra),
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
            "peak_build_allocated_gib": peak_build,
            "pairs": len(trainer.train_dataset),
            "load_seconds": t_loaded - t_start,
            "train_seconds": t_done - t_loaded,
            "train_log": [[e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e and "step" in e],
            "env": environment(),
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"RESULT {variant['name']}: {result['tokens_per_s']:.0f} policy tok/s", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Orchestration and report.


def results_folder(args) -> Path:
    from benchmarks.bench_train import device_slug

    return Path(args.results) / f"{args.date}_{'cpu' if args.cpu_smoke else device_slug()}"


def common_flags(args) -> list[str]:
    switches = [f"--{name.replace('_', '-')}" for name in ("cpu_smoke", "profile") if getattr(args, name)]
    return ["--work", args.work, "--model", args.model, "--data", args.data, *switches]


def run(args) -> None:
    from benchmarks.bench_train import ensure_model_and_data
    from benchmarks.variants import next_repeat, result_path

    variants = load_variants()
    names = [n for n in args.variants.split(",") if n] or list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"bench_dpo: unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}")
    folder = results_folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    ensure_model_and_data(args)
    if not args.no_sft:  # the SFT default in the same run, on the same machine, into the same folder
        cmd = module_command("bench_train", "run", "--variants", SFT_BASELINE)
        flags = ["--results", args.results, "--date", args.date, *common_flags(args)]
        subprocess.run([*cmd, *flags], check=False, env=module_env())
    (Path(args.work) / "logs").mkdir(parents=True, exist_ok=True)
    for _ in range(args.repeat):
        for name in names:
            out = result_path(folder, name, next_repeat(folder, name))
            log = Path(args.work) / "logs" / f"{out.stem}.log"
            cmd = module_command("bench_dpo", "worker", "--variant", name, "--out", str(out))
            # A datasets cache of its own: TRL caches the reference pass by pairs and model, so a second variant
            # would otherwise reuse the first one's pass and time none.
            cache = Path(args.work) / "datasets_cache" / out.stem
            shutil.rmtree(cache, ignore_errors=True)
            print(f"== {name}", flush=True)
            with open(log, "w") as f:
                try:
                    proc = subprocess.run(
                        [*cmd, *common_flags(args)],
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        check=False,
                        timeout=args.timeout,
                        env=module_env(env={**os.environ, "HF_DATASETS_CACHE": str(cache)}),
                    )
                    code = proc.returncode
                except subprocess.TimeoutExpired:
                    code = f"timeout after {args.timeout} s"
            if code != 0 or not out.is_file():
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                print(f"   failed ({code}); {log}:\n   " + "\n   ".join(tail), flush=True)
    print(report_table(folder), flush=True)


def report_table(folder: Path) -> str:
    """Markdown: the SFT default, then each DPO variant with its speed against it and the targets."""
    results = {}
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("status") == "ok" and (r.get("family") == "dpo" or r.get("name") == SFT_BASELINE):
            results.setdefault(r["name"], []).append(r)
    sft = results.get(SFT_BASELINE, [])
    sft_speed = sum(r["tokens_per_s"] for r in sft) / len(sft) if sft else None
    lines = [
        f"{folder.name}: DPO against the SFT default `{SFT_BASELINE}` (targets: ≥ {TARGET_SPEED_RATIO}× its "
        f"tokens/s with the reference pass counted in, ≤ {TARGET_PEAK_GIB:g} GiB peak allocated, the pass's included)",
        "",
        "| variant | setup | policy tokens/s | × SFT | padding share | reference pass s | with the pass tokens/s "
        "| × SFT | peak alloc GiB training | peak alloc GiB pass | targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    for name, runs in results.items():
        for r in runs:
            speed, sft_row = r["tokens_per_s"], name == SFT_BASELINE
            # The pass's time spread over the tokens of the pairs it covered (those of every step of the run).
            pass_s = r.get("reference_pass_seconds") or 0.0
            steps = r.get("measured_steps", 0) + r.get("warmup_steps", 0)
            with_pass = None if sft_row else 1 / (1 / speed + pass_s / (r["tokens_per_step"] * steps))
            ratio = speed / sft_speed if sft_speed and not sft_row else None
            ratio_with_pass = with_pass / sft_speed if sft_speed and with_pass else None
            peak, pass_peak = r.get("peak_allocated_gib"), r.get("peak_build_allocated_gib") if pass_s else None
            met = "–"
            if ratio_with_pass is not None and peak is not None:
                fits = max(peak, pass_peak or 0.0) <= TARGET_PEAK_GIB
                met = "met" if ratio_with_pass >= TARGET_SPEED_RATIO and fits else "missed"
            lines.append(
                f"| `{name}` | {r['label']} | {speed:,.0f} | {fmt(ratio, '.2f')} "
                f"| {fmt(r.get('padding_share'), '.0%')} | {fmt(pass_s if pass_s else None, '.1f')} "
                f"| {fmt(with_pass, ',.0f')} | {fmt(ratio_with_pass, '.2f')} "
                f"| {fmt(peak, '.1f')} | {fmt(pass_peak, '.1f')} | {met} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default="/tmp/bench", help="scratch: training runs, logs, adapter and pairs")
    common.add_argument("--model", default="/tmp/eeve-random", help="built there when missing")
    common.add_argument("--data", default="/tmp/synth", help="written there when missing")
    common.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU: tests the benchmark itself")
    common.add_argument(
        "--profile",
        action="store_true",
        help="one more step after the timed ones under the torch profiler: <variant>.profile.txt (GPU kernels and "
        "host operators, or CPU operators on a CPU) beside the result",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--results", default=str(RESULTS_ROOT / "dpo_speed"), help="results root: one folder per date and device"
    )
    where.add_argument("--date", default=datetime.datetime.now(datetime.UTC).date().isoformat())
    r = sub.add_parser("run", parents=[common, where], help="the SFT default, then the DPO variants")
    r.add_argument("--variants", default="", help="comma-separated names (default: all)")
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--no-sft", action="store_true", help="leave out the SFT default")
    r.add_argument("--timeout", type=int, default=480, help="seconds per variant")
    w = sub.add_parser("worker", parents=[common], help="(internal) one variant")
    w.add_argument("--variant", required=True)
    w.add_argument("--out", required=True)
    sub.add_parser("report", parents=[common, where], help="the table of one results folder")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command == "run":
        run(args)
    elif args.command == "worker":
        worker(args)
    else:
        print(report_table(results_folder(args)))


if __name__ == "__main__":
    main()
