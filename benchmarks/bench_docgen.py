"""Document-grounded row generation on one GPU: the two generation stages of docgen, tokens/s and rows per hour.

`data_prep/generate_from_docs.py` generates in two stages: questions from every chunk of an index, then an answer
to each question from its top-k retrieved chunks. This benchmark runs both stages with their real prompts through
the call docgen makes (:func:`eeve_sft.data_prep.docgen.model_generator`: ``generate_batch`` on the fast path,
here with batch size ``auto``, docgen's own sampling settings per stage) on the EEVE-shaped random bf16 model of
``benchmarks/synthetic.py``.

The prompts are built on a CPU, once, by docgen's own functions (``--prepare``): the index of ``data/wms_docs``
is built with the project's indexer (Kiwi, BM25), question prompts come from its chunks
(:func:`~eeve_sft.data_prep.docgen.question_prompt`), answer prompts from the questions of
``eval/wms_questions.jsonl`` with their top-k retrieved chunks (:func:`~eeve_sft.data_prep.docgen.answer_prompt`).
The GPU run needs neither Kiwi nor bm25s: it reads the stored prompts, builds the model in memory and generates.

Random weights never stop, so every row is forced to the stage's length (``min_new_tokens = max_new_tokens`` =
the config's ``question_max_new_tokens`` / ``answer_max_new_tokens``). Each stage runs twice on the same prompts:
the first call pays the compile of its shapes, the second is timed warm. Prompts are tokenized by the project's
demo tokenizer (``assets/demo-model``: a byte-fallback BPE with EEVE's special ids; EEVE's own tokenizer is not
available offline), so prompt token counts are that tokenizer's.

    python -m benchmarks.bench_docgen --prepare benchmarks/results/docgen/DATE_DEVICE/prompts.json      # CPU
    python -m benchmarks.bench_docgen --prompts .../prompts.json --out benchmarks/results/docgen/DATE_DEVICE
    python -m benchmarks.bench_docgen --cpu-smoke --prompts .../prompts.json --out /tmp/bench_docgen     # CPU
    python -m benchmarks.bench_docgen --render benchmarks/results/docgen/DATE_DEVICE/docgen.json      # RESULTS.md

A run writes OUT/docgen.json after every call, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import REPO, write_block

DOCS = REPO / "data" / "wms_docs"
QUESTIONS = REPO / "eval" / "wms_questions.jsonl"
TOKENIZER = REPO / "assets" / "demo-model"
BEGIN, END = "<!-- bench_docgen: begin -->", "<!-- bench_docgen: end -->"
AFTER = "<!-- bench_generate: begin -->"  # the section goes after Retrieval and its notes, before Generation speed
SMOKE_PROMPTS, SMOKE_TOKENS = 4, {"questions": 8, "answers": 12}


# ------------------------------------------------------------------------------------------------------ prompts


def prepare(out_file: Path) -> dict:
    """Index data/wms_docs and write both stages' prompts, built by docgen's functions, to `out_file`."""
    from eeve_sft.data_prep.docgen import DocGenConfig, answer_prompt, question_prompt
    from eeve_sft.retrieval import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP, RetrievalIndex, build_index, sources_of
    from eeve_sft.retrieval.evaluate import load_questions

    config = DocGenConfig()
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "index"
        build_index(DOCS, index_dir, chunk_chars=DEFAULT_CHUNK_CHARS, overlap=DEFAULT_OVERLAP)
        index = RetrievalIndex(index_dir)
        questions = [q.query for q in load_questions(QUESTIONS)]
        mode = config.retrieval_mode or index.default_mode()
        hit_lists = index.search_batch(questions, config.top_k, mode)
        document = {
            "docs": str(DOCS.relative_to(REPO)),
            "questions_file": str(QUESTIONS.relative_to(REPO)),
            "index": {
                "chunk_chars": DEFAULT_CHUNK_CHARS,
                "overlap": DEFAULT_OVERLAP,
                "mode": mode,
                "counts": index.manifest["counts"],
                "versions": index.manifest["versions"],
            },
            "config": asdict(config),
            # what docgen hands the generator per stage (DocGenConfig.sampling), so the GPU run imports no docgen
            "sampling": {
                "questions": config.sampling(config.question_max_new_tokens),
                "answers": config.sampling(config.answer_max_new_tokens),
            },
            "questions": [
                {"chunk": c.id, "messages": question_prompt(c, config.questions_per_chunk)} for c in index.chunks
            ],
            "answers": [
                {"question": q, "sources": sources_of(hits), "messages": answer_prompt(q, hits)}
                for q, hits in zip(questions, hit_lists, strict=True)
            ],
        }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(document['questions'])} question prompts, {len(document['answers'])} answer prompts -> {out_file}")
    return document


# ------------------------------------------------------------------------------------------------------ run


def load_model(cpu_smoke: bool):
    """The EEVE-shaped bf16 random model in GPU memory (tiny on a CPU), with the demo tokenizer's Korean BPE."""
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.synthetic import llama_config
    from eeve_sft.inference.loading import align_generation_config, load_tokenizer, resolve_model_source

    if cpu_smoke:
        torch.manual_seed(0)
        model = LlamaForCausalLM(llama_config(tiny=True)).to(torch.bfloat16).eval()
    else:
        from benchmarks.bench_generate import in_memory_model

        model, _ = in_memory_model()
    tokenizer = load_tokenizer(resolve_model_source(str(TOKENIZER)))
    align_generation_config(model, tokenizer)
    return model, tokenizer


def stage_lengths(tokenizer, conversations: list[list[dict]]) -> dict:
    from eeve_sft.template import encode_prompt

    tokens = [len(encode_prompt(tokenizer, m)) for m in conversations]
    chars = [sum(len(turn["content"]) for turn in m) for m in conversations]
    return {
        "prompt_tokens_mean": statistics.fmean(tokens),
        "prompt_tokens_min": min(tokens),
        "prompt_tokens_max": max(tokens),
        "prompt_chars_mean": statistics.fmean(chars),
    }


class Bench:
    def __init__(self, args, torch):
        self.args, self.torch = args, torch
        self.cuda = not args.cpu_smoke
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.document: dict = {}

    def save(self) -> None:
        (self.out / "docgen.json").write_text(
            json.dumps(self.document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    def timed(self, fn):
        if self.cuda:
            self.torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        if self.cuda:
            self.torch.cuda.synchronize()
        stop = time.perf_counter()
        return stop - start, (time.time() - (stop - start), time.time()), value

    def stage(self, name: str, model, generate, conversations, new_tokens: int, sampling: dict, tokenizer, sampler):
        """The stage's prompts twice through docgen's generator: cold (compile included), then warm."""
        from benchmarks.gpu_clocks import summarize
        from eeve_sft import generation
        from eeve_sft.template import encode_prompt

        torch = self.torch
        longest = max(len(encode_prompt(tokenizer, m)) for m in conversations)
        cache_len = generation.cache_length(longest, new_tokens)
        record = {
            "stage": name,
            "prompts": len(conversations),
            "new_tokens": new_tokens,
            **stage_lengths(tokenizer, conversations),
            "cache_len": cache_len,
        }
        if self.cuda:
            fits = generation.auto_batch_size(model, cache_len, longest)
            record["rows"] = generation.batch_rows("auto", len(conversations), fits)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.document["stages"].append(record)
        forced = {**sampling, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
        for key in ("cold", "warm"):
            print(f"[{name}] {key}: {len(conversations)} prompts x {new_tokens} new tokens", flush=True)
            seconds, window, results = self.timed(lambda: generate(conversations, forced))
            lengths = sorted({r.new_tokens for r in results})
            assert lengths == [new_tokens], f"{name}: lengths {lengths}, forced {new_tokens}"  # nothing stopped early
            generated = sum(r.new_tokens for r in results)
            record[f"{key}_s"] = seconds
            record[f"{key}_tokens_per_s"] = generated / seconds
            if self.cuda:
                record[f"{key}_gpu"] = summarize(sampler.samples, window)  # nvidia-smi readings in the call
            if self.cuda:
                record["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            record["generated_tokens"] = generated
            print(json.dumps(record), flush=True)
            self.save()
        return record

    def run(self):
        torch, args = self.torch, self.args
        import transformers

        from benchmarks.bench_generate import hbm_bandwidth_gbs, nvidia_smi
        from benchmarks.gpu_clocks import Sampler
        from eeve_sft.inference.answer import generate_batch

        prompts = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
        config, sampling = prompts["config"], prompts["sampling"]
        stages = [
            ("questions", [p["messages"] for p in prompts["questions"]], config["question_max_new_tokens"]),
            ("answers", [p["messages"] for p in prompts["answers"]], config["answer_max_new_tokens"]),
        ]
        if args.cpu_smoke:
            stages = [(n, c[:SMOKE_PROMPTS], SMOKE_TOKENS[n]) for n, c, _ in stages]
        stages = [(n, c, args.new_tokens.get(n, t)) for n, c, t in stages]
        device = torch.cuda.get_device_name() if self.cuda else f"CPU ({platform.processor() or 'x86_64'})"
        self.document = {
            "label": args.label,
            "date": args.date,
            "device": device,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "model": "EEVE-shaped random Llama, bf16 (benchmarks/synthetic.py)" + (" tiny" if args.cpu_smoke else ""),
            "tokenizer": str(TOKENIZER.relative_to(REPO)),
            "prompts_file": str(Path(args.prompts).resolve().relative_to(REPO))
            if Path(args.prompts).resolve().is_relative_to(REPO)
            else args.prompts,
            "index": prompts["index"],
            "docs": prompts["docs"],
            "questions_file": prompts["questions_file"],
            "questions_per_chunk": config["questions_per_chunk"],
            "top_k": config["top_k"],
            "sampling": sampling["answers"] | {"max_new_tokens": "forced per stage"},
            "batch_size": "auto",
            "nvidia_smi_before": nvidia_smi() if self.cuda else None,
            "hbm_gbs": hbm_bandwidth_gbs(torch) if self.cuda else None,
            "stages": [],
        }
        self.save()
        model, tokenizer = load_model(args.cpu_smoke)

        def generate(conversations, stage_sampling):  # the call docgen.model_generator makes, batch size auto
            return generate_batch(model, tokenizer, conversations, batch_size="auto", **stage_sampling)

        with Sampler() as sampler:
            for name, conversations, new_tokens in stages:
                self.stage(name, model, generate, conversations, new_tokens, sampling[name], tokenizer, sampler)
        self.document["nvidia_smi_after"] = nvidia_smi() if self.cuda else None
        self.document["throughput"] = throughput(self.document)
        self.save()
        print(render(self.document))


def throughput(document: dict) -> dict | None:
    """Rows per hour: every answered row costs its answer plus 1/questions_per_chunk of a question-stage prompt.

    seconds per row = answer_s / answer_prompts + question_s / (question_prompts x questions_per_chunk). It assumes
    every chunk yields questions_per_chunk questions and every row passes the filters: pass rates cannot be measured
    on a random model, so real rows per hour are this times the share of rows kept.
    """
    by_name = {s["stage"]: s for s in document["stages"]}
    q, a = by_name.get("questions"), by_name.get("answers")
    if not q or not a or "warm_s" not in q or "warm_s" not in a:
        return None
    per_q = document["questions_per_chunk"]
    out = {}
    for key in ("warm", "cold"):
        seconds = a[f"{key}_s"] / a["prompts"] + q[f"{key}_s"] / (q["prompts"] * per_q)
        tokens = a["new_tokens"] + q["new_tokens"] / per_q
        out[key] = {
            "seconds_per_row": seconds,
            "rows_per_hour": 3600 / seconds,
            "tokens_per_row": tokens,
            "tokens_per_s": tokens / seconds,
        }
    return out


# ------------------------------------------------------------------------------------------------------ report


def _fmt(value, digits=1):
    return "—" if value is None else f"{value:,.{digits}f}"


def _gpu(summary: dict | None) -> str:
    if not summary:
        return "—"
    return (
        f"SM {_fmt(summary['sm_mhz_median'], 0)} MHz, mem {_fmt(summary['mem_mhz_median'], 0)} MHz, "
        f"{_fmt(summary['power_w_mean'], 0)} W mean / {_fmt(summary['power_w_max'], 0)} W max"
    )


def render(document: dict) -> str:
    """The RESULTS.md section of one run's docgen.json."""
    index = document["index"]
    per_q = document["questions_per_chunk"]
    sampling = document["sampling"]
    lines = [
        "## Generation of rows from documents (`benchmarks/bench_docgen.py`)",
        "",
        f"- Date: {document['date']}; device: {document['device']}; measured HBM bandwidth "
        f"{_fmt(document.get('hbm_gbs'), 0)} GB/s (device copy)",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in document["versions"].items()),
        f"- Model: {document['model']}; prompts tokenized by `{document['tokenizer']}` (EEVE's special ids, "
        "byte-fallback Korean BPE: EEVE's own tokenizer is not available offline)",
        f"- Prompts (`{document['prompts_file']}`, built by docgen's `question_prompt` / `answer_prompt`): questions "
        f"from each of the {index['counts']['chunks']} chunks of `{document['docs']}` ({index['counts']['documents']} "
        f"documents, {index['chunk_chars']}-character chunks), {per_q} questions per chunk; answers to the questions "
        f"of `{document['questions_file']}`, each with its top {document['top_k']} chunks ({index['mode']}) in the "
        "shared context layout",
        f"- Generation: `generate_batch` as docgen's `model_generator` calls it (fast path), batch size "
        f"{document['batch_size']}, docgen's sampling (temperature {sampling['temperature']}, top_p "
        f"{sampling['top_p']}, repetition penalty {sampling['repetition_penalty']}); every row forced to the stage's "
        "max_new_tokens (random weights never stop); each stage run twice on the same prompts: *cold* includes "
        "compiling its shapes, *warm* does not",
        "",
        "| stage | prompts | prompt tokens mean (min-max) | prompt chars mean | new tokens | rows/batch | "
        "cold s | warm s | tokens/s cold | tokens/s warm | peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in document["stages"]:
        lines.append(
            f"| {s['stage']} | {s['prompts']} | {_fmt(s['prompt_tokens_mean'], 0)} ({s['prompt_tokens_min']}-"
            f"{s['prompt_tokens_max']}) | {_fmt(s['prompt_chars_mean'], 0)} | {s['new_tokens']} | "
            f"{s.get('rows', '—')} | {_fmt(s.get('cold_s'))} | {_fmt(s.get('warm_s'))} | "
            f"{_fmt(s.get('cold_tokens_per_s'), 0)} | {_fmt(s.get('warm_tokens_per_s'), 0)} | "
            f"{_fmt(s.get('peak_gib'))} |"
        )
    lines.append("")
    t = document.get("throughput")
    if t:
        w, c = t["warm"], t["cold"]
        lines += [
            (
                f"- **Rows per hour: {_fmt(w['rows_per_hour'], 0)} warm** ({_fmt(c['rows_per_hour'], 0)} with this "
                f"run's compile included): seconds per row = answers_s / answer prompts + questions_s / (question "
                f"prompts x {per_q}) = {w['seconds_per_row']:.3f} s; {_fmt(w['tokens_per_row'], 0)} generated tokens "
                f"per row (an answer and 1/{per_q} of a question prompt's output), "
                f"{_fmt(w['tokens_per_s'], 0)} question+answer tokens/s."
            ),
            (
                "- An upper bound per generated row: it counts every chunk as yielding its questions and every row as "
                "kept. The filters' pass rates (question parsing, length, speech level, groundedness) cannot be measured "
                "on a random model; real rows per hour are this times the share kept (`stats.json` of a real run). "
                "Forced lengths are the worst case: real answers stop at eos, and a batch ends with its longest row."
            ),
        ]
    else:
        lines.append("- Rows per hour: not measured (a stage did not finish).")
    for s in document["stages"]:
        if s.get("warm_gpu"):
            lines.append(f"- GPU while generating {s['stage']} (warm): {_gpu(s['warm_gpu'])}")
    for key in ("nvidia_smi_before", "nvidia_smi_after"):
        if document.get(key):
            lines += ["", f"nvidia-smi ({key.rsplit('_', 1)[1]} the run):", "", "```", document[key], "```"]
    return "\n".join(lines) + "\n"


def generated_block(result_file: Path) -> str:
    document = json.loads(result_file.read_text(encoding="utf-8"))
    rel = result_file.relative_to(REPO) if result_file.is_relative_to(REPO) else result_file
    return f"{BEGIN}\n{render(document)}\nRaw results: `{rel}`.\n{END}"


def parse_new_tokens(values: list[str]) -> dict:
    out = {}
    for value in values:
        stage, _, number = value.partition("=")
        if stage not in ("questions", "answers") or not number.isdigit() or int(number) < 1:
            raise SystemExit(f"--new-tokens takes questions=N or answers=N (N >= 1), got {value!r}")
        out[stage] = int(number)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", metavar="PROMPTS_JSON", help="build the index and write the prompts (CPU)")
    parser.add_argument("--prompts", help="the prompts file written by --prepare")
    parser.add_argument("--out", help="directory for docgen.json")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model, few prompts, CPU: checks the script")
    parser.add_argument(
        "--new-tokens",
        nargs="+",
        default=[],
        metavar="STAGE=N",
        help="other forced lengths than the config's, e.g. answers=256",
    )
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--label", help="what this run measures")
    parser.add_argument("--render", metavar="DOCGEN_JSON", help="only write the RESULTS.md section from a result")
    args = parser.parse_args()
    if args.render:
        block = generated_block(Path(args.render).resolve())
        write_block(block, BEGIN, END, before=AFTER)
        print(block)
        return
    if args.prepare:
        prepare(Path(args.prepare))
        return
    if not args.prompts or not args.out:
        parser.error("--prompts and --out are required (or --prepare / --render)")
    if not Path(args.prompts).is_file():
        raise SystemExit(f"prompts file not found: {args.prompts} (write it with --prepare)")
    args.new_tokens = parse_new_tokens(args.new_tokens)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: run with --cpu-smoke to check the script on a CPU")
    Bench(args, torch).run()


if __name__ == "__main__":
    main()
