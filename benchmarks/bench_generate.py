"""Generation speed: plain ``model.generate`` against the project's fast path, bf16 and NF4, on one GPU.

The model is the EEVE-shaped random-weight Llama of ``benchmarks/synthetic.py`` (speed and memory depend only on
shapes). Random weights never stop on their own, so every variant is forced to a fixed length (``min_new_tokens``
= ``max_new_tokens``). Per variant, all in one run:

- decode ms per step: (time of a call of T new tokens - time of a call of 1) / (T - 1), after a warm-up call that
  pays any compile; generated tokens/s = batch / decode step;
- the time of the full evaluation (224 prompts x 512 new tokens, compile included): measured end to end where
  the variant says ``measured``, otherwise computed from the warm-up, prefill and step times of one batch;
- peak GPU memory; the ratio of the step to the memory-bound limit (the weights read per step over the HBM
  bandwidth measured in the same run).

    python -m benchmarks.bench_generate --out benchmarks/results/generation/DATE_DEVICE --tag all   # one GPU
    python -m benchmarks.bench_generate --cpu-smoke --out /tmp/bench_generate                     # tiny model, CPU
    python -m benchmarks.bench_generate --render benchmarks/results/generation                    # RESULTS.md

A run writes OUT/generation_TAG.json (after every variant, so a run cut short keeps what it measured); --only runs
some variants; --render writes the RESULTS.md section from every generation_*.json.

The GPU run also writes a torch profiler summary of fast-path decoding steps (what the step spends its time on)
and nvidia-smi clocks and power before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO, write_block

EVAL_PROMPTS, EVAL_NEW_TOKENS = 224, 512  # the shipped 반말 prompt set and evaluate.py's max_new_tokens
PROMPT_WORDS = (8, 96)  # user-turn length in words (one token each): ~40-130 prompt tokens with the template
TARGETS = {"bf16_step_ms_batch64": 15.0, "bf16_eval_s": 120.0, "nf4_eval_s": 300.0}
BEGIN, END = "<!-- bench_generate: begin -->", "<!-- bench_generate: end -->"


def synthetic_prompts(tokenizer, n: int, seed: int = 0) -> list[list[int]]:
    """`n` templated single-turn prompts of PROMPT_WORDS random words each."""
    from benchmarks.synthetic import EOS_ID, word
    from eeve_sft.template import encode_prompt

    rng = random.Random(seed)
    vocab = len(tokenizer)
    prompts = []
    for _ in range(n):
        words = rng.randint(*PROMPT_WORDS)
        text = " ".join(word(i if i != EOS_ID else 3) for i in (rng.randrange(3, vocab) for _ in range(words)))
        prompts.append(encode_prompt(tokenizer, [{"role": "user", "content": text}]))
    return prompts


def nvidia_smi() -> str | None:
    query = "name,clocks.sm,clocks.mem,clocks.max.sm,power.draw,power.limit,temperature.gpu,pstate,memory.used"
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def hbm_bandwidth_gbs(torch) -> float:
    """Device-to-device copy of 4 GiB: bytes read plus bytes written per second (the best of 10)."""
    src = torch.empty(2**30, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(10):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3)
    del src, dst
    return 2 * 4 * 2**30 / best / 1e9


def in_memory_model():
    """The bf16 random model built on the GPU and kept there (as load_for_inference leaves a model)."""
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.synthetic import build_tokenizer, llama_config
    from eeve_sft.inference.loading import align_generation_config

    config = llama_config()
    config.dtype = torch.bfloat16
    torch.manual_seed(0)
    with torch.device("cuda"):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlamaForCausalLM(config).eval()
        finally:
            torch.set_default_dtype(previous)
    tokenizer = build_tokenizer(config.vocab_size)
    tokenizer.padding_side = "left"
    align_generation_config(model, tokenizer)
    return model, tokenizer


def weight_bytes_per_step(model) -> int:
    """Bytes of weights one decoding step reads: every parameter and buffer except the input embedding, of which
    a step gathers only one row per sequence."""
    embed = model.get_input_embeddings().weight
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if t is not embed)
    return int(total)


class Bench:
    def __init__(self, args, torch):
        self.args, self.torch = args, torch
        self.cuda = not args.cpu_smoke
        self.results: list[dict] = []
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        # The smoke run checks the code on a few short prompts; the GPU run measures the real evaluation.
        self.n_prompts, self.new_tokens = (20, 48) if args.cpu_smoke else (EVAL_PROMPTS, EVAL_NEW_TOKENS)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def timed(self, fn) -> tuple[float, object]:
        self.sync()
        start = time.perf_counter()
        value = fn()
        self.sync()
        return time.perf_counter() - start, value

    def call(self, model, prompts, new_tokens, batch, fast, min_cache_len=0):
        from eeve_sft.inference.generation import generate_ids
        from eeve_sft.inference.sampling import SamplingConfig

        config = SamplingConfig(
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, repetition_penalty=1.0
        ).generation_config(self.tokenizer)
        return generate_ids(
            model,
            prompts,
            config,
            self.pad,
            self.stops,
            batch_size=batch,
            fast=fast,
            progress=False,
            min_cache_len=min_cache_len,
        )

    def variant(self, name: str, *args, **kwargs) -> dict | None:
        """One variant; a failure is recorded with its message and the run goes on to the next."""
        if not self.wanted(name):
            return None
        try:
            return self._variant(name, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the benchmark reports whatever broke a variant
            print(f"[{name}] failed: {type(err).__name__}: {err}", flush=True)
            self.results.append({"variant": name, "error": f"{type(err).__name__}: {str(err)[:300]}"})
            self.save()
            if self.cuda:
                self.torch.cuda.empty_cache()
            return None

    def wanted(self, name: str) -> bool:
        return not self.args.only or name in self.args.only

    def _variant(
        self,
        name: str,
        model,
        precision: str,
        fast: bool,
        batch,
        steps: int,
        weights: int,
        bandwidth: float | None,
        full: bool = False,
    ) -> dict:
        """Warm up (compile), time 1 and `steps` new tokens on one batch; for `full`, also the whole evaluation."""
        from eeve_sft.inference import generation

        torch = self.torch
        prompts = self.prompts
        longest = max(len(p) for p in prompts)
        cache_len = generation.cache_length(longest, self.new_tokens)  # the full evaluation's cache, always
        fits = generation.auto_batch_size(model, cache_len, longest) if batch == "auto" else None
        rows = generation.batch_rows(batch, len(prompts), fits or 1)
        one_batch = prompts[:rows]
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(f"[{name}] batch {rows}, cache {cache_len}", flush=True)
        record = {
            "variant": name,
            "precision": precision,
            "path": "fast" if fast else "plain",
            "batch": batch,
            "rows": rows,
            "cache_len": cache_len,
            "steps_timed": steps,
        }
        lengths = {}
        if full:
            # The evaluation as scripts/evaluate.py runs it: every prompt, 512 tokens, compile included.
            record["eval_s"], answers = self.timed(lambda: self.call(model, prompts, self.new_tokens, batch, fast))
            record["eval_measured"] = True
            lengths["eval"] = sorted({len(a) for a in answers})
        warm = 16 if fast else 2
        record["warmup_s"], _ = self.timed(lambda: self.call(model, one_batch, warm, rows, fast, cache_len))
        record["prefill_s"], _ = self.timed(lambda: self.call(model, one_batch, 1, rows, fast, cache_len))
        t_steps, answers = self.timed(lambda: self.call(model, one_batch, steps, rows, fast, cache_len))
        lengths["steps"] = sorted({len(a) for a in answers})
        assert lengths["steps"] == [steps], lengths  # forced length: every row generated exactly `steps`
        step_s = (t_steps - record["prefill_s"]) / (steps - 1)
        record["step_ms"] = 1e3 * step_s
        record["tokens_per_s"] = rows / step_s
        batches = math.ceil(self.n_prompts / rows)
        if not full:
            compile_s = max(record["warmup_s"] - record["prefill_s"] - (warm - 1) * step_s, 0.0)
            record["eval_s"] = compile_s + batches * (record["prefill_s"] + (self.new_tokens - 1) * step_s)
            record["eval_measured"] = False
        if self.cuda:
            record["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if bandwidth:
            record["limit_ms"] = 1e3 * weights / (bandwidth * 1e9)
            record["ratio_to_limit"] = record["step_ms"] / record["limit_ms"]
        record["answers"] = [a[:steps] for a in answers]
        print(json.dumps({k: v for k, v in record.items() if k != "answers"}), flush=True)
        self.results.append(record)
        self.save()
        return record

    def save(self, **extra):
        document = {
            **self.meta,
            **extra,
            "variants": [{k: v for k, v in r.items() if k != "answers"} for r in self.results],
        }
        document.setdefault("greedy_identity", self.meta.get("greedy_identity"))
        document.setdefault("lora_greedy_identity", self.meta.get("lora_greedy_identity"))
        document.setdefault("merged_greedy_identity", self.meta.get("merged_greedy_identity"))
        document.setdefault("loop_greedy_identity", self.meta.get("loop_greedy_identity"))
        (self.out / f"generation_{self.args.tag}.json").write_text(
            json.dumps(document, indent=2) + "\n", encoding="utf-8"
        )

    def identity(self, plain: dict, fast: dict) -> dict:
        """Share of prompts whose greedy tokens agree between two variants over their common length."""
        n = min(len(plain["answers"]), len(fast["answers"]))
        first_diffs = []
        for a, b in zip(plain["answers"][:n], fast["answers"][:n], strict=True):
            length = min(len(a), len(b))
            diff = next((i for i in range(length) if a[i] != b[i]), None)
            first_diffs.append(diff)
        same = sum(d is None for d in first_diffs)
        return {
            "between": [plain["variant"], fast["variant"]],
            "prompts": n,
            "tokens_compared": min(plain["steps_timed"], fast["steps_timed"]),
            "identical": same,
            "first_difference_at": sorted(d for d in first_diffs if d is not None),
        }

    def run(self):
        torch, args = self.torch, self.args
        import peft
        import transformers

        from benchmarks.synthetic import build_model
        from eeve_sft.inference.loading import load_for_inference
        from eeve_sft.template import pad_token_id, stop_token_ids

        versions = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        }
        try:
            import bitsandbytes

            versions["bitsandbytes"] = bitsandbytes.__version__
        except ImportError:
            pass
        device_name = torch.cuda.get_device_name() if self.cuda else f"CPU ({platform.processor() or 'x86_64'})"
        self.meta = {
            "label": args.label,
            "date": args.date,
            "device": device_name,
            "versions": versions,
            "model": "EEVE-shaped random Llama (benchmarks/synthetic.py)" + (" tiny" if args.cpu_smoke else ""),
            "eval": {"prompts": self.n_prompts, "new_tokens": self.new_tokens, "prompt_words": list(PROMPT_WORDS)},
            "nvidia_smi_before": nvidia_smi() if self.cuda else None,
            "targets": TARGETS,
        }
        bandwidth = hbm_bandwidth_gbs(torch) if self.cuda else None
        self.meta["hbm_gbs"] = bandwidth
        model_dir = Path(args.model_dir)
        device = "cuda" if self.cuda else "cpu"
        if self.cuda and args.only and not any(name.startswith("nf4") for name in args.only):
            model, self.tokenizer = in_memory_model()  # no NF4 load: the weights need not go to disk
        else:
            if not (model_dir / "config.json").is_file():
                build_model(model_dir, tiny=args.cpu_smoke)
            model, self.tokenizer = load_for_inference(model_dir, device=device)
        if args.cpu_smoke:
            model.to(torch.bfloat16)  # the dtype the GPU runs in
        self.pad, self.stops = pad_token_id(self.tokenizer), set(stop_token_ids(self.tokenizer))
        self.prompts = synthetic_prompts(self.tokenizer, self.n_prompts)
        self.meta["prompt_tokens"] = [min(map(len, self.prompts)), max(map(len, self.prompts))]
        weights = weight_bytes_per_step(model)
        self.meta["weights_gb"] = {"bf16": weights / 1e9}
        steps_plain, steps_fast = args.steps_plain, args.steps_fast

        plain64 = None
        for batch in (8, 64):
            rec = self.variant(f"bf16 plain b{batch}", model, "bf16", False, batch, steps_plain, weights, bandwidth)
            plain64 = rec if batch == 64 else plain64
        fast64 = self.variant("bf16 fast b64", model, "bf16", True, 64, steps_fast, weights, bandwidth)
        if plain64 and fast64:
            self.meta["greedy_identity"] = self.identity(plain64, fast64)
        if self.wanted("bf16 fast b64 generate loop"):
            # Before/after of the decoding loop: the same compiled step, driven by transformers' generate.
            from eeve_sft.inference import generation

            own = generation.loop_serves
            generation.loop_serves = lambda config: False
            try:
                loop = self.variant(
                    "bf16 fast b64 generate loop", model, "bf16", True, 64, steps_fast, weights, bandwidth
                )
            finally:
                generation.loop_serves = own
            if loop and fast64:
                self.meta["loop_greedy_identity"] = self.identity(loop, fast64)
        self.variant("bf16 fast auto", model, "bf16", True, "auto", steps_fast, weights, bandwidth, full=True)
        if self.cuda and any(name.startswith("nf4") for name in args.only or ["nf4"]):
            # NF4 before the last bf16 variants, the bf16 model staying loaded
            self.nf4(model_dir, bandwidth, steps_plain)
        elif not self.cuda:
            self.meta["nf4"] = "skipped: bitsandbytes NF4 needs a CUDA GPU"
        self.variant("bf16 fast b8", model, "bf16", True, 8, steps_fast, weights, bandwidth)
        try:
            if self.wanted("profile"):
                self.profile(model, 64)
        except Exception as err:  # noqa: BLE001
            print(f"profile failed: {type(err).__name__}: {err}", flush=True)
        if any(self.wanted(f"bf16 lora {path} b64") for path in ("plain", "fast", "merged fast")):
            self.lora(model, steps_plain, steps_fast, bandwidth)  # last: merging changes the base weights
        if self.cuda:
            self.meta["nvidia_smi_after"] = nvidia_smi()
        self.save()
        print(render(json.loads((self.out / f"generation_{args.tag}.json").read_text(encoding="utf-8"))), flush=True)

    def lora(self, model, steps_plain: int, steps_fast: int, bandwidth: float | None):
        """A LoRA adapter on the bf16 base, unmerged, as load_for_inference leaves a training run's adapter (r 64,
        alpha 128, the 7 projections; random non-zero B so the adapter changes every answer): plain against fast."""
        from peft import LoraConfig, get_peft_model

        from eeve_sft.training.recipe import read_recipe

        self.torch.manual_seed(1)
        keys = read_recipe(REPO / "recipes/eeve_banmal.yaml")  # the default recipe's rank, alpha and targets
        config = LoraConfig(
            r=keys["lora_r"],
            lora_alpha=keys["lora_alpha"],
            lora_dropout=0.0,
            target_modules=keys["lora_target_modules"],
            init_lora_weights=False,
        )
        lora = get_peft_model(model, config).eval()
        weights = weight_bytes_per_step(lora)
        self.meta["weights_gb"]["bf16+lora"] = weights / 1e9
        plain = self.variant("bf16 lora plain b64", lora, "bf16+lora", False, 64, steps_plain, weights, bandwidth)
        fast = self.variant("bf16 lora fast b64", lora, "bf16+lora", True, 64, steps_fast, weights, bandwidth)
        if plain and fast:
            self.meta["lora_greedy_identity"] = self.identity(plain, fast)
        if not any(self.wanted(name) for name in ("bf16 lora merged fast b64", "bf16 lora merged fast auto")):
            lora.unload()
            return
        # As load_for_inference leaves an adapter on bf16 weights: merged into them (the base weights change).
        merged = lora.merge_and_unload()
        weights = weight_bytes_per_step(merged)
        self.meta["weights_gb"]["bf16 merged"] = weights / 1e9
        both = self.variant(
            "bf16 lora merged fast b64", merged, "bf16 merged", True, 64, steps_fast, weights, bandwidth
        )
        if fast and both:
            self.meta["merged_greedy_identity"] = self.identity(fast, both)
        self.variant(
            "bf16 lora merged fast auto", merged, "bf16 merged", True, "auto", steps_fast, weights, bandwidth, True
        )

    def nf4(self, model_dir: Path, bandwidth: float, steps: int):
        from eeve_sft.inference.loading import load_for_inference

        model, _ = load_for_inference(model_dir, load_in_4bit=True, device="cuda")
        weights = weight_bytes_per_step(model)
        self.meta["weights_gb"]["nf4"] = weights / 1e9
        for batch in (8, 64):
            self.variant(f"nf4 plain b{batch}", model, "nf4", False, batch, steps, weights, bandwidth)
        for batch in (8, 64, "auto"):
            self.variant(
                f"nf4 fast {'b' + str(batch) if batch != 'auto' else 'auto'}",
                model,
                "nf4",
                True,
                batch,
                steps,
                weights,
                bandwidth,
            )
        del model
        self.torch.cuda.empty_cache()

    def profile(self, model, rows: int):
        """The kernels of a few fast-path decoding steps (after compile), by GPU time."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        longest = max(len(p) for p in self.prompts)
        from eeve_sft.inference.generation import cache_length

        cache_len = cache_length(longest, self.new_tokens)
        batch = self.prompts[:rows]
        self.call(model, batch, 4, rows, True, cache_len)
        with profile(activities=activities) as prof:
            self.call(model, batch, 9, rows, True, cache_len)
            self.sync()
        sort = "cuda_time_total" if self.cuda else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=70)
        (self.out / f"profile_fast_b64_{self.args.tag}.txt").write_text(
            f"torch profiler: fast path, batch {rows}, cache {cache_len}, prefill + 8 decoding steps\n\n{table}\n",
            encoding="utf-8",
        )


# ------------------------------------------------------------------------------------------------------ report


def _fmt(value, digits=1):
    return "—" if value is None else f"{value:,.{digits}f}"


def render(document: dict) -> str:
    """The RESULTS.md section of one run's generation.json."""
    v = document["versions"]
    keys = ("greedy_identity", "loop_greedy_identity", "lora_greedy_identity", "merged_greedy_identity")
    identities = [document[key] for key in keys if document.get(key)]
    lines = [
        f"### {document.get('label') or 'Generation speed'}",
        "",
        (
            f"- Date: {document['date']}; device: {document['device']}; measured HBM bandwidth "
            f"{_fmt(document.get('hbm_gbs'), 0)} GB/s (device copy)"
        ),
        "- Packages: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Model: {document['model']}; weights read per step: "
        + ", ".join(f"{k} {val:.2f} GB" for k, val in document["weights_gb"].items()),
        (
            f"- Workload: {document['eval']['prompts']} prompts of {document['prompt_tokens'][0]}-"
            f"{document['prompt_tokens'][1]} tokens, greedy, forced to {document['eval']['new_tokens']} new tokens "
            "(random weights never stop)."
        ),
        (
            "- decode ms/step from a timed call on one batch after warm-up; tokens/s = rows / step; "
            f"eval = {document['eval']['prompts']} x {document['eval']['new_tokens']} including compile and warm-up: "
            "*measured* end to end, or computed as warm-up + batches x (prefill + all further steps); "
            "limit = weights read per step / measured bandwidth."
        ),
        "",
        (
            f"| variant | rows | decode ms/step | tokens/s | eval {document['eval']['prompts']}x"
            f"{document['eval']['new_tokens']} (s) | | peak GiB | x memory-bound limit |"
        ),
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in document["variants"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][:120]} | | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['rows']} | {_fmt(r['step_ms'])} | {_fmt(r['tokens_per_s'], 0)} | "
            f"{_fmt(r['eval_s'], 0)} | {'measured' if r['eval_measured'] else 'computed'} | "
            f"{_fmt(r.get('peak_gib'))} | {_fmt(r.get('ratio_to_limit'), 2)} |"
        )
    lines.append("")
    for identity in identities:
        diffs = identity["first_difference_at"]
        lines.append(
            f"Greedy tokens, {identity['between'][0]} against {identity['between'][1]}, first "
            f"{identity['tokens_compared']} tokens: {identity['identical']} of {identity['prompts']} prompts "
            "identical" + (f"; the others first differ at token {', '.join(map(str, diffs))}." if diffs else ".")
        )
        lines.append("")
    lines += [f"- {line}" for line in target_lines(document)]
    for key in ("nvidia_smi_before", "nvidia_smi_after"):
        if document.get(key):
            lines += ["", f"nvidia-smi ({key.rsplit('_', 1)[1]} the run):", "", "```", document[key], "```"]
    if document.get("nf4"):
        lines += ["", f"NF4: {document['nf4']}"]
    return "\n".join(lines) + "\n"


def target_lines(document: dict) -> list[str]:
    by_name = {r["variant"]: r for r in document["variants"]}
    out = []
    checks = [
        ("bf16 fast b64", "step_ms", TARGETS["bf16_step_ms_batch64"], "bf16 decode at batch 64", "ms/step"),
        ("bf16 fast auto", "eval_s", TARGETS["bf16_eval_s"], "bf16 224x512 evaluation incl. compile", "s"),
        ("nf4 fast auto", "eval_s", TARGETS["nf4_eval_s"], "NF4 224x512 evaluation", "s"),
    ]
    for variant, key, limit, what, unit in checks:
        r = by_name.get(variant)
        if r is None or "error" in r:
            out.append(f"target {what} <= {limit:g} {unit}: not measured in this run")
            continue
        verdict = "met" if r[key] <= limit else "missed"
        out.append(f"target {what} <= {limit:g} {unit}: {_fmt(r[key])} {unit} ({variant}), {verdict}")
    return out


def generated_block(results_dir: Path) -> str:
    """The RESULTS.md section of every generation_*.json under `results_dir`, one table per file, by name."""
    runs = sorted(results_dir.glob("*/generation_*.json"))
    if not runs:
        raise SystemExit(f"no generation_*.json under {results_dir}")
    parts = ["## Generation speed (`benchmarks/bench_generate.py`)", ""]
    for path in runs:
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        parts += [render(json.loads(path.read_text(encoding="utf-8"))), f"Raw results: `{rel}`.", ""]
    return f"{BEGIN}\n" + "\n".join(parts).rstrip() + f"\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="directory for generation.json and the step profile")
    parser.add_argument("--model-dir", default="/tmp/eeve-random-generate", help="the random model (built if absent)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU: checks the script itself")
    parser.add_argument("--steps-plain", type=int, default=32, help="timed new tokens per plain call")
    parser.add_argument("--steps-fast", type=int, default=128, help="timed new tokens per fast call")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--tag", default="all", help="names this run's files: generation_TAG.json")
    parser.add_argument("--label", help="what this run measures, the title of its table")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants ('profile' too)")
    parser.add_argument("--render", metavar="RESULTS_DIR", help="only write the RESULTS.md section from results")
    args = parser.parse_args()
    if args.render:
        block = generated_block(Path(args.render).resolve())
        write_block(block, BEGIN, END)
        print(block)
        return
    if not args.out:
        parser.error("--out is required")
    import torch

    if args.cpu_smoke:
        args.steps_plain, args.steps_fast = min(args.steps_plain, 8), min(args.steps_fast, 16)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: run with --cpu-smoke to check the script on a CPU")
    torch.manual_seed(0)
    # One compiled step per model and batch shape: the variants of a run together need more than dynamo's default.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    Bench(args, torch).run()


if __name__ == "__main__":
    main()
