"""Politeness evaluation: how often each model answers 반말 prompts in 존댓말, side by side.

    python scripts/evaluate.py --model-path PATH [PATH ...] [--prompts FILE] [--output DIR]
                               [--batch-size N|auto] [--max-new-tokens N] [--recipe RECIPE_OR_RUN_DIR]
                               [--lm-eval TASK [TASK ...]]

PATH is an adapter (OUTPUT_DIR/final, OUTPUT_DIR/checkpoint-N), a merged model, a Hub id, or the word
`base` for the base model of the adapters given. Decoding is greedy unless --sample. --recipe adds the
mean token loss on that recipe's eval split. Writes NAME.json and NAME.md to --output (default: the run
directory's eval/ when every model comes from one run, else outputs/eval), NAME being
eval_<prompts file>_<N>p_<digest of prompts, models and settings>: every evaluation keeps its own files, and
scripts/compare.py picks the one whose prompt set every run was evaluated on.
"""

import argparse
import sys
from pathlib import Path

from eeve_sft.errors import UserError, run_cli
from eeve_sft.hub import check_model
from eeve_sft.inference.sampling import EVAL_SAMPLING, SamplingConfig

CHAT = SamplingConfig()


def batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--batch-size must be a whole number or 'auto', got '{text}'") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", nargs="+", required=True, metavar="PATH", help="models to evaluate")
    parser.add_argument(
        "--prompts",
        help='prompts: JSONL rows {"messages": [...]} (id, category optional) or a '
        ".txt file, one prompt per line (default eval/prompts_banmal.jsonl)",
    )
    parser.add_argument("--output", help="directory for the evaluation's .json and .md files")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an evaluation of the same prompts, models and settings"
    )
    parser.add_argument(
        "--batch-size",
        default="auto",
        help="prompts generated together, or 'auto' (default): as many as GPU memory holds",
    )
    parser.add_argument("--max-new-tokens", type=int, default=EVAL_SAMPLING.max_new_tokens)
    parser.add_argument("--limit", type=int, help="evaluate only the first N prompts")
    parser.add_argument("--recipe", help="recipe file or run directory: also report eval loss on its eval split")
    parser.add_argument("--loss-limit", type=int, help="eval loss on the first N eval conversations only")
    parser.add_argument("--loss-batch-size", type=int, default=4)
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 weights (needs a CUDA GPU)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    sampling = parser.add_argument_group("decoding (greedy by default)")
    sampling.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sampling.add_argument("--temperature", type=float, default=CHAT.temperature)
    sampling.add_argument("--top-p", type=float, default=CHAT.top_p)
    sampling.add_argument("--top-k", type=int, default=CHAT.top_k)
    sampling.add_argument("--repetition-penalty", type=float, default=EVAL_SAMPLING.repetition_penalty)
    sampling.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    lm_eval = parser.add_argument_group("lm-evaluation-harness (optional dependency: eeve-sft[lmeval])")
    lm_eval.add_argument(
        "--lm-eval",
        nargs="+",
        metavar="TASK",
        default=[],
        help="benchmarks to run per model (kobest, kmmlu, haerae, or a task of --lm-eval-include)",
    )
    lm_eval.add_argument("--lm-eval-include", metavar="DIR", help="directory of extra lm-eval task YAMLs")
    lm_eval.add_argument("--lm-eval-limit", type=int, help="examples per lm-eval task (for a quick check)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    args.batch_size = batch_size(args.batch_size)
    for flag in ("limit", "loss_limit", "lm_eval_limit", "batch_size", "loss_batch_size"):
        value = getattr(args, flag)
        if isinstance(value, int) and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    for path in args.model_path:  # before the heavy imports: a mistyped path fails at once
        if path != "base" or Path(path).exists():
            check_model(path)
    from eeve_sft.evaluation.politeness import EvalSettings, run_evaluation

    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed if args.sample else None,
    )
    settings = EvalSettings(
        sampling=sampling,
        batch_size=args.batch_size,
        load_in_4bit=args.load_in_4bit,
        device=args.device,
        loss_batch_size=args.loss_batch_size,
        lm_eval_tasks=args.lm_eval,
        lm_eval_include=args.lm_eval_include,
        lm_eval_limit=args.lm_eval_limit,
    )
    written = run_evaluation(
        args.model_path,
        args.prompts,
        args.output,
        settings,
        args.recipe,
        loss_limit=args.loss_limit,
        prompt_limit=args.limit,
        overwrite=args.overwrite,
    )
    markdown = written.with_suffix(".md")
    print(markdown.read_text(encoding="utf-8").split("## 존댓말 rate per category")[0].rstrip())
    print(f"\nwritten: {written}, {markdown}")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
