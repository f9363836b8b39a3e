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

import logging
import shutil
import sys

from eeve_sft.errors import UserError, run_cli

logger = logging.getLogger("eeve_sft.sft")
USAGE = "usage: scripts/sft.py RECIPE.yaml [--check] [--print-recipe] [--key value ...] | scripts/sft.py --keys"
OWN_FLAGS = ("--check", "--print-recipe")


def resume_target(run, resume) -> str | bool | None:
    """The checkpoint `--resume_from_checkpoint` names (true: the latest), checked before anything loads."""
    from pathlib import Path

    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume is True:
        latest = run.latest_checkpoint()
        if latest is None:
            raise UserError(f"--resume_from_checkpoint true, but {run.path} holds no checkpoint-N directory")
        return str(latest)
    if isinstance(resume, str) and not Path(resume).is_dir():
        raise UserError(f"checkpoint to resume from not found: {resume}")
    return resume or None


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

    from eeve_sft.training.recipe import check_for_training, dump_recipe, parse_recipe
    from eeve_sft.training.run_dir import RunDir

    # Checking or printing a recipe needs none of the hardware it trains on.
    recipe = parse_recipe(argv[0], overrides, check_device=not (check_only or print_only))
    training, project = recipe.training, recipe.project
    if print_only:
        print(dump_recipe(recipe.resolved), end="")
        if not check_only:
            return
    for note in check_for_training(recipe, check_only=check_only):
        print(f"note: {note} (not needed for --check)", file=sys.stderr)

    # Decide what happens to output_dir before anything heavy runs, and write nothing there yet.
    run = RunDir(training.output_dir)
    resume = resume_target(run, training.resume_from_checkpoint)
    if resume and run.is_complete(training, resume):
        print(
            f"{run.path} is already complete (step {run.summary().get('global_step')}): nothing to resume; "
            f"left as it was"
        )
        return
    run.check_can_train(project.overwrite_output_dir, resuming=bool(resume))

    import torch

    from eeve_sft.quiet import quiet_training

    quiet_training(torch.cuda.is_available())  # before accelerate and transformers load DeepSpeed
    from accelerate import PartialState
    from transformers import set_seed

    from eeve_sft.training.assembly import build_trainer, prepare_data
    from eeve_sft.training.callbacks import CheckpointExtrasCallback, RunRecordCallback
    from eeve_sft.training.distributed import stop_when_a_process_is_lost
    from eeve_sft.training.modeling import generation_config_for, tokenizer_for_recipe
    from eeve_sft.training.run_dir import collect_run_info, full_configuration

    # Tokenizer, then data: every row is checked and tokenized before the model loads.
    set_seed(training.seed)
    tokenizer = tokenizer_for_recipe(recipe)
    state = PartialState()
    if state.is_main_process:
        for note in recipe.notes:
            print(note, file=sys.stderr)
    data = prepare_data(recipe, tokenizer, main_process_first=state.main_process_first)
    if check_only:
        counts = ", ".join(f"{len(split)} {name} examples" for name, split in data.splits.items())
        print(f"{argv[0]}: recipe, output_dir, tokenizer and data checked ({counts}); nothing written")
        return

    if state.is_main_process:
        if project.overwrite_output_dir and not resume and run.path.is_dir():
            shutil.rmtree(run.path)
        run.log_to_file()
        for note in recipe.notes:
            logger.info(note)
        fingerprints = {name: ds._fingerprint for name, ds in data.splits.items()}
        info = collect_run_info(sys.argv, training.seed, fingerprints, data.stats, full_configuration(recipe))
        run.write_start(recipe.resolved, info)
    state.wait_for_everyone()

    callbacks = [RunRecordCallback(run, data.stats), CheckpointExtrasCallback(tokenizer)]
    trainer = build_trainer(recipe, tokenizer, data, callbacks)
    with stop_when_a_process_is_lost(run.path):
        trainer.train(resume_from_checkpoint=resume)

    trainer.save_model(str(run.final_dir))  # the adapter (the best one when load_best_model_at_end), with the tokenizer
    if state.is_main_process:
        tokenizer.save_pretrained(run.final_dir)
        generation_config_for(tokenizer).save_pretrained(run.final_dir)
        logger.info("final adapter, tokenizer and template saved to %s", run.final_dir)
        print(
            f"\nrun written to {run.path} (adapter in {run.final_dir}). Next:\n"
            f"  python scripts/chat.py --model-path {run.final_dir}\n"
            f"  python scripts/evaluate.py --model-path base {run.final_dir} --recipe {run.path}"
        )
    state.wait_for_everyone()
    trainer.end()


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
