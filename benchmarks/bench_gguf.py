"""GGUF export figures: llama.cpp's conversion and quantization of the EEVE-shaped 10.8B model (time, file size),
and on the demo model llama.cpp's CPU decode speed beside transformers' CPU generation, with greedy agreement.

    python -m benchmarks.bench_gguf demo                       # any machine with the gguf extra installed
    python -m benchmarks.bench_gguf eeve --llama-cpp .llama.cpp --work /tmp/gguf-bench

`eeve` builds the random-weight EEVE-shaped model (benchmarks/synthetic.py; about 22 GB of bf16 safetensors),
converts it to f16 and quantizes that to q8_0 and q4_k_m, deleting each file once measured (the model after its
conversion, the f16 file last). Its tools come from `--llama-cpp`, a llama.cpp source folder: the converter is read
from there and, where no llama-cpp-python is installed, `llama-quantize` is built there with cmake first. Prepare
that folder on a machine with the package index (`prepare-llama-cpp DIR` below) and carry it.

    python -m benchmarks.bench_gguf prepare-llama-cpp .llama.cpp   # the converter and llama-quantize's sources
    python -m benchmarks.bench_gguf report                         # RESULTS.md's section from the result files

Results go to benchmarks/results/gguf/ (one JSON per run) and the gguf section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, machine, write_block

RESULTS_DIR = REPO / "benchmarks" / "results" / "gguf"
BEGIN, END = "<!-- bench_gguf: begin -->", "<!-- bench_gguf: end -->"
EEVE_QUANTS = ("q8_0", "q4_k_m")
# What llama-quantize's cmake build needs of llama.cpp, besides the converter (paths under vendor/llama.cpp/).
QUANTIZE_SOURCES = ("CMakeLists.txt", "cmake", "ggml", "src", "include", "common", "vendor", "tools", "licenses")
GPU_BACKENDS = ("cuda", "vulkan", "sycl", "opencl", "hexagon", "metal", "et", "musa", "hip", "cann", "webgpu", "zdnn")
DECODE_TOKENS, AGREEMENT_TOKENS = 128, 32


def versions() -> dict:
    from eeve_sft.inference.gguf import LLAMA_CPP_PYTHON_VERSION
    from eeve_sft.versions import package_versions

    found = package_versions(("torch", "transformers", "llama-cpp-python", "sentencepiece"))
    return {"llama.cpp (of llama-cpp-python)": LLAMA_CPP_PYTHON_VERSION, **{k: v for k, v in found.items() if v}}


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


# ------------------------------------------------------------------------------------------- the tools there


def prepare_llama_cpp(dest: Path) -> None:
    """Unpack the pinned llama.cpp's converter and llama-quantize's build sources into `dest` (to carry)."""
    from eeve_sft.inference.gguf import fetch_converter

    fetch_converter(dest, extra_parts=QUANTIZE_SOURCES)
    # Not built for llama-quantize on a CPU: the web UI's assets (server only) and the GPU backends.
    for folder in ["tools/ui", *(f"ggml/src/ggml-{name}" for name in GPU_BACKENDS)]:
        shutil.rmtree(dest / folder, ignore_errors=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"llama.cpp converter and quantizer sources in {dest} ({size / 2**20:.0f} MiB)")


def build_quantize(source: Path, jobs: int) -> float:
    """Build llama-quantize in `source`/build with cmake; return the seconds it took."""
    build = source / "build"
    flags = [
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_BUILD_APP=OFF",
    ]
    flags += ["-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    started = time.perf_counter()
    for command in (
        ["cmake", "-S", str(source), "-B", str(build), *flags],
        ["cmake", "--build", str(build), "--target", "llama-quantize", "-j", str(jobs)],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"error: {' '.join(command[:3])} failed: {result.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------ EEVE part


def llama_tokenizer(vocab_size: int):
    """The synthetic model's words as a Llama byte-fallback BPE vocabulary (the converter's route for EEVE's
    tokenizer.json-only tokenizer); the word-level benchmark tokenizer is not one the converter reads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from benchmarks.synthetic import BOS, EOS, PAD, UNK, build_tokenizer
    from eeve_sft.template import apply_eeve_template

    vocab = build_tokenizer(vocab_size).get_vocab()
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, byte_fallback=True, fuse_unk=True))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    raw.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token=UNK, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    apply_eeve_template(tokenizer)
    return tokenizer


def run_eeve(work: Path, llama_cpp_dir: str | None, tiny: bool = False) -> dict:
    import importlib.util

    from benchmarks.synthetic import build_model, llama_config
    from eeve_sft.inference.gguf import convert, find_tools, quantize, stage_for_converter

    jobs = len(os.sched_getaffinity(0))
    shapes = "a few-MB model of its layout (smoke run)" if tiny else "EEVE-Korean-Instruct-10.8B's shapes"
    result: dict = {"part": "eeve-tiny" if tiny else "eeve", "model": f"random bf16, {shapes}", "threads": jobs}
    tools = find_tools(llama_cpp_dir, need_quantizer=False)
    if tools.quantize_bin is None and importlib.util.find_spec("llama_cpp") is None:
        result["quantize_build_s"] = round(build_quantize(tools.source, jobs), 1)
        tools = find_tools(llama_cpp_dir)
    result["quantizer"] = "llama-quantize" if tools.quantize_bin else "llama_cpp.llama_model_quantize"

    model_dir = work / "eeve-random"
    _, result["build_model_s"] = timed(build_model, model_dir, tiny)
    tokenizer = llama_tokenizer(llama_config(tiny).vocab_size)
    tokenizer.save_pretrained(model_dir)
    result["safetensors_bytes"] = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    staged = stage_for_converter(model_dir, work / "staged" / "eeve-random", tokenizer)
    f16 = work / "eeve-random-f16.gguf"
    _, seconds = timed(convert, tools, staged, f16, "f16")
    result["files"] = {"f16": {"seconds": round(seconds, 1), "bytes": f16.stat().st_size, "from": "bf16 safetensors"}}
    print(f"f16: {seconds:.1f} s, {f16.stat().st_size / 1e9:.2f} GB", flush=True)
    shutil.rmtree(model_dir)
    shutil.rmtree(work / "staged")
    for quant in EEVE_QUANTS:
        out = work / f"eeve-random-{quant}.gguf"
        _, seconds = timed(quantize, tools, f16, out, quant, jobs)
        result["files"][quant] = {"seconds": round(seconds, 1), "bytes": out.stat().st_size, "from": "f16"}
        print(f"{quant}: {seconds:.1f} s, {out.stat().st_size / 1e9:.2f} GB", flush=True)
        out.unlink()
    f16.unlink()
    return result


# ------------------------------------------------------------------------------------------------ demo part


def greedy_agreement(llm, model, tokenizer, conversations) -> tuple[int, float]:
    """(prompts whose first AGREEMENT_TOKENS greedy tokens equal transformers', mean equal prefix length)."""
    import torch

    from eeve_sft.template import encode_prompt

    equal, prefix = 0, 0
    for messages in conversations:
        ids = encode_prompt(tokenizer, messages)
        ours: list[int] = []
        with torch.no_grad():
            for _ in range(AGREEMENT_TOKENS):
                ours.append(int(model(input_ids=torch.tensor([ids + ours])).logits[0, -1].argmax()))
        llm.reset()
        llm.eval(ids)
        theirs: list[int] = []
        for _ in range(AGREEMENT_TOKENS):
            theirs.append(int(llm.scores[llm.n_tokens - 1].argmax()))
            llm.eval([theirs[-1]])
        equal += ours == theirs
        prefix += next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), AGREEMENT_TOKENS)
    return equal, prefix / len(conversations)


def llama_decode_rate(llm, ids: list[int], tokens: int) -> float:
    """Greedy decode tokens/s after the prompt, through llama-cpp-python's sampler loop."""
    llm.reset()
    llm.eval(ids)
    started = time.perf_counter()
    for _ in range(tokens):
        token = llm.sample(top_k=1, temp=0.0)
        llm.eval([token])
    return tokens / (time.perf_counter() - started)


def transformers_decode_rate(model, tokenizer, ids: list[int], tokens: int) -> float:
    """transformers' `generate` greedy tokens/s after the prompt (prefill timed separately and subtracted)."""
    import torch

    from eeve_sft.template import special_token_ids

    inputs = torch.tensor([ids])
    kwargs = dict(do_sample=False, **special_token_ids(tokenizer))
    with torch.no_grad():
        _, prefill = timed(model.generate, inputs, max_new_tokens=1, min_new_tokens=1, **kwargs)
        _, total = timed(model.generate, inputs, max_new_tokens=tokens + 1, min_new_tokens=tokens + 1, **kwargs)
    return tokens / (total - prefill)


def run_demo(work: Path, quants: list[str]) -> dict:
    import llama_cpp
    import torch

    from eeve_sft.evaluation.prompts import load_prompts
    from eeve_sft.inference.gguf import export_gguf
    from eeve_sft.inference.loading import load_for_inference

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    demo = REPO / "assets" / "demo-model"
    export, seconds = timed(export_gguf, demo, work / "demo", "f16,q8_0")
    result: dict = {"part": "demo", "threads": threads, "export_s": round(seconds, 1)}
    result["bytes"] = export.sizes
    model, tokenizer = load_for_inference(demo, device="cpu")
    model.float()
    conversations = [p.messages for p in load_prompts(REPO / "eval" / "prompts_banmal.jsonl")][:20]
    result["agreement"] = {"prompts": len(conversations), "tokens": AGREEMENT_TOKENS}
    for quant in quants:
        path = export.output / export.files[quant]
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, logits_all=True, n_threads=threads, verbose=False)
        equal, prefix = greedy_agreement(llm, model, tokenizer, conversations)
        result["agreement"][quant] = {"equal": equal, "mean_prefix": round(prefix, 2)}
        print(f"{quant}: {equal}/{len(conversations)} prompts agree on {AGREEMENT_TOKENS} tokens", flush=True)
    from eeve_sft.template import encode_prompt

    ids = encode_prompt(tokenizer, conversations[0])
    rates: dict = {}
    for quant in quants:
        path = export.output / export.files[quant]
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=threads, verbose=False)
        llama_decode_rate(llm, ids, 16)  # warm-up
        rates[f"llama.cpp {quant}"] = max(llama_decode_rate(llm, ids, DECODE_TOKENS) for _ in range(3))
    transformers_decode_rate(model, tokenizer, ids, 16)
    rates["transformers float32"] = max(
        transformers_decode_rate(model, tokenizer, ids, DECODE_TOKENS) for _ in range(3)
    )
    result["decode_tokens_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    result["prompt_tokens"] = len(ids)
    print(json.dumps(result["decode_tokens_per_s"]), flush=True)
    return result


# ------------------------------------------------------------------------------------------------ reporting


def render() -> str:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json"))]
    lines = [BEGIN, "## GGUF export (`benchmarks/bench_gguf.py`)", ""]
    for run in runs:
        lines += [f"### {run['date']}, {run['part']}: {run['machine']}", "", f"- Versions: {run['versions']}"]
        lines += [f"- Note: {run['note']}"] if run.get("note") else []
        if run["part"].startswith("eeve"):
            lines += [
                f"- Model: {run['model']}, {run['safetensors_bytes'] / 1e9:.1f} GB of safetensors; "
                f"{run['threads']} threads; quantizer: {run['quantizer']}"
                + (f" (built in {run['quantize_build_s']} s)" if "quantize_build_s" in run else ""),
                "",
                "| file | from | seconds | size GB |",
                "|---|---|---:|---:|",
            ]
            lines += [
                f"| {q} | {f['from']} | {f['seconds']} | {f['bytes'] / 1e9:.2f} |" for q, f in run["files"].items()
            ]
        else:
            agreement = run["agreement"]
            lines += [
                f"- Demo model export (f16 + q8_0, including loading): {run['export_s']} s; "
                + ", ".join(f"{q} {b / 2**20:.2f} MiB" for q, b in run["bytes"].items()),
                f"- Greedy agreement with transformers float32, first {agreement['tokens']} tokens of "
                f"{agreement['prompts']} prompts of eval/prompts_banmal.jsonl: "
                + "; ".join(
                    f"{q} {agreement[q]['equal']}/{agreement['prompts']} equal (mean equal prefix "
                    f"{agreement[q]['mean_prefix']} tokens)"
                    for q in ("f16", "q8_0")
                    if q in agreement
                ),
                f"- CPU decode, greedy, {DECODE_TOKENS} tokens after a {run['prompt_tokens']}-token prompt, "
                f"{run['threads']} threads (best of 3):",
                "",
                "| engine | tokens/s |",
                "|---|---:|",
                *(f"| {k} | {v:,.1f} |" for k, v in run["decode_tokens_per_s"].items()),
            ]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["demo", "eeve", "prepare-llama-cpp", "report"])
    parser.add_argument("--tiny", action="store_true", help="eeve: a few-MB model of the same layout (smoke run)")
    parser.add_argument("dest", nargs="?", help="prepare-llama-cpp: the folder to unpack into")
    parser.add_argument("--llama-cpp", help="eeve: the llama.cpp source folder prepare-llama-cpp wrote")
    parser.add_argument("--work", help="folder for the model and GGUF files (default: a temporary folder)")
    parser.add_argument(
        "--run-quants", default="f16,q8_0", help="demo: the files decoded for agreement and speed (default %(default)s)"
    )
    parser.add_argument("--note", help="a remark recorded with the results (how the machine was, what was left out)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.part == "report":  # RESULTS.md's section again from the result files (after copying one in)
        write_block(render(), BEGIN, END)
        return
    if args.part == "prepare-llama-cpp":
        if not args.dest:
            sys.exit("error: prepare-llama-cpp needs the folder to unpack into")
        prepare_llama_cpp(Path(args.dest))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-gguf-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = (
            run_eeve(work, args.llama_cpp, args.tiny)
            if args.part == "eeve"
            else run_demo(work, args.run_quants.split(","))
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(date=dt.date.today().isoformat(), machine=machine(), versions=versions())
    if args.note:
        result["note"] = args.note
    text = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    result["versions"] = text
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{result['date']}_{result['part']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    if not args.no_record:
        write_block(render(), BEGIN, END)


if __name__ == "__main__":
    main()
