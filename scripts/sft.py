"""Supervised fine-tuning of EEVE-Korean-Instruct (LoRA/QLoRA) from a recipe.

    accelerate launch scripts/sft.py RECIPE.yaml [--key value ...]
    python scripts/sft.py RECIPE.yaml --check [--key value ...]   # every check, then stop before the model loads
    python scripts/sft.py RECIPE.yaml --print-recipe [--key value ...]  # the recipe as resolved, as YAML
    python scripts/sft.py --keys                                  # every recipe key, grouped by dataclass

--check runs on any machine: what this one lacks to train the recipe (a GPU for bf16 or flex attention, the
Liger kernels) is a "note:" line on stderr, not an error. --print-recipe prints the recipe after base recipes and
flags (the recipe.yaml a run records) and stops; with --check it prints it, then checks.

Flags override recipe keys: any key of TRL's ScriptArguments (data), SFTConfig (training, with every
transformers TrainingArguments field) and ModelConfig (model, quantisation, LoRA), or the project's own
(README.md, "Keys"). `--eval_strategy no` alone turns evaluation off: the keys that need it follow.
"""

import sys

from eeve_sft.errors import UserError

USAGE = "usage: scripts/sft.py RECIPE.yaml [--check] [--print-recipe] [--key value ...] | scripts/sft.py --keys"
OWN_FLAGS = ("--check", "--print-recipe")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    if argv[0] == "--keys":
        from eeve_sft.training.recipe import describe_keys

        print(describe_keys())
        return
    if argv[0].startswith("-"):
        raise UserError(f"the recipe file comes first; {USAGE}")
    check_only, print_only = "--check" in argv[1:], "--print-recipe" in argv[1:]
    overrides = [a for a in argv[1:] if a not in OWN_FLAGS]

    from eeve_sft.training.launch import Launch
    from eeve_sft.training.recipe import check_for_training, dump_recipe, parse_recipe

    # Checking or printing a recipe needs none of the hardware it trains on.
    recipe = parse_recipe(argv[0], overrides, check_device=not (check_only or print_only))
    training = recipe.training
    if print_only:
        print(dump_recipe(recipe.resolved), end="")
        if not check_only:
            return
    for note in check_for_training(recipe, check_only=check_only):
        print(f"note: {note} (not needed for --check)", file=sys.stderr)

    # Decide what happens to output_dir before anything heavy runs, and write nothing there yet.
    launch = Launch.prepare(recipe)
    if launch is None:
        return

    import torch

    from eeve_sft.quiet import quiet_training

    quiet_training(torch.cuda.is_available())  # before accelerate and transformers load DeepSpeed
    from transformers import set_seed

    from eeve_sft.training.assembly import build_trainer, prepare_data, select_data
    from eeve_sft.training.callbacks import CheckpointExtrasCallback, RunRecordCallback
    from eeve_sft.training.modeling import tokenizer_for_recipe

    # Tokenizer, then data: every row is checked and tokenized before the model loads.
    set_seed(training.seed)
    tokenizer = tokenizer_for_recipe(recipe)
    state = launch.process_state()
    selected = select_data(recipe)
    splits = {name: selected.split(name) for name in ("train", "eval")}
    launch.check_data(splits, selected.dataset_name, ("messages",), record=not check_only)
    data = prepare_data(recipe, tokenizer, selected, main_process_first=state.main_process_first)
    if check_only:
        counts = ", ".join(f"{len(split)} {name} examples" for name, split in data.splits.items())
        print(f"{argv[0]}: recipe, output_dir, tokenizer and data checked ({counts}); nothing written")
        return

    fingerprints = {name: ds._fingerprint for name, ds in data.splits.items()}
    launch.write_start(state, fingerprints, data.stats)
    callbacks = [RunRecordCallback(launch.run, data.stats), CheckpointExtrasCallback(tokenizer)]
    trainer = build_trainer(recipe, tokenizer, data, callbacks)
    launch.train(trainer, state)
    # The adapter (the best one when load_best_model_at_end) with the tokenizer, written whole like a checkpoint.
    launch.save_final(trainer, tokenizer, state)
    run = launch.run
    launch.finish(
        trainer,
        state,
        f"\nrun written to {run.path} (adapter in {run.final_dir}). Next:\n"
        f"  python scripts/chat.py --model-path {run.final_dir}\n"
        f"  python scripts/evaluate.py --model-path base {run.final_dir} --recipe {run.path}",
    )


if __name__ == "__main__":
    from eeve_sft.training.launch import run_training_cli

    run_training_cli(main)
