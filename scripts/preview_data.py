"""Show training examples exactly as the trainer sees them: the rendered template, with trained tokens marked.

    python scripts/preview_data.py RECIPE.yaml [--num N] [--split train|eval] [--json] [--key value ...]

Trained tokens (the loss is computed on them) are highlighted in a terminal and wrapped in ⟦ ⟧ otherwise.
With --json, prints one object per line: messages (the source row), input_ids and labels (-100 = masked).
--split eval shows the eval examples training uses (the eval_fraction hold-out when the data has no eval split).
Any recipe key can be overridden as in sft.py, e.g. --dataset_name other.jsonl --max_length 512.
"""

import argparse
import json
import sys

from eeve_sft.errors import UserError, run_cli

HIGHLIGHT = ("\033[30;42m", "\033[0m")  # black on green
BRACKETS = ("⟦", "⟧")


def render(tokenizer, input_ids: list[int], labels: list[int], marks: tuple[str, str]) -> str:
    """Decode `input_ids` span by span, wrapping each run of trained tokens in `marks`."""
    from eeve_sft.training.data import IGNORE_INDEX

    pieces, span, trained = [], [], False
    for token, label in zip(input_ids, labels, strict=True):
        is_trained = label != IGNORE_INDEX
        if span and is_trained != trained:
            text = tokenizer.decode(span)
            pieces.append(f"{marks[0]}{text}{marks[1]}" if trained else text)
            span = []
        span.append(token)
        trained = is_trained
    if span:
        text = tokenizer.decode(span)
        pieces.append(f"{marks[0]}{text}{marks[1]}" if trained else text)
    return "".join(pieces)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("--num", type=int, default=3, help="examples to show (default 3)")
    parser.add_argument("--split", choices=("train", "eval"), default="train")
    parser.add_argument("--json", action="store_true", help="one JSON object per example")
    args, overrides = parser.parse_known_args(argv)
    if args.num < 1:
        raise UserError("--num must be at least 1")

    from eeve_sft.training.assembly import prepare_data, select_data
    from eeve_sft.training.data import IGNORE_INDEX
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.recipe import parse_recipe

    recipe = parse_recipe(args.recipe, overrides, check_device=False)
    script, training = recipe.script, recipe.training
    tokenizer = tokenizer_for_recipe(recipe)
    # The same selection as training: the eval split, or the eval_fraction hold-out (which also changes train).
    data = select_data(recipe, with_eval=args.split == "eval" or recipe.project.eval_fraction > 0)
    shown = data.split(args.split)
    prepared = prepare_data(recipe, tokenizer, data, names=[args.split], limit=args.num)
    examples, stats = prepared.splits[args.split], prepared.stats[args.split]
    name = script.dataset_train_split if args.split == "train" else data.eval_from

    if args.json:
        for ex in examples:
            print(
                json.dumps(
                    {"messages": ex["messages"], "input_ids": ex["input_ids"], "labels": ex["labels"]},
                    ensure_ascii=False,
                )
            )
        return
    marks = HIGHLIGHT if sys.stdout.isatty() else BRACKETS
    print(
        f"recipe {args.recipe} | split {name} | max_length {training.max_length} | "
        f"{stats['dropped_no_trained_tokens']} of {min(args.num, len(shown))} shown rows dropped (no trained token left)"
    )
    for index, ex in enumerate(examples):
        trained = sum(label != IGNORE_INDEX for label in ex["labels"])
        print(f"\n─── example {index}: {len(ex['input_ids'])} tokens, {trained} trained ───")
        print(render(tokenizer, ex["input_ids"], ex["labels"], marks))


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
