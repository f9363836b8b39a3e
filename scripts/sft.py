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
from pathlib import Path

from eeve_sft.errors import UserError, run_cli

logger = logging.getLogger("eeve_sft.sft")
USAGE = "usage: scripts/sft.py RECIPE.yaml [--check] [--print-recipe] [--key value ...] | scripts/sft.py --keys"
OWN_FLAGS = ("--check", "--print-recipe")


def resume_target(run, resume) -> tuple[str | None, list[str]]:
    """The checkpoint `--resume_from_checkpoint` names (true: the latest whole one), checked before anything
    loads, and a note for each incomplete checkpoint passed over."""
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume is True:
        latest, passed_over = run.resumable_checkpoint()
        if latest is None:
            found = f" ({'; '.join(passed_over)})" if passed_over else ""
            raise UserError(f"--resume_from_checkpoint true, but {run.path} holds no complete checkpoint-N{found}")
        return str(latest), [f"{note}; resuming from {latest.name} instead" for note in passed_over]
    if isinstance(resume, str):
        if not Path(resume).is_dir():
            raise UserError(f"checkpoint to resume from not found: {resume}")
        problem = run.checkpoint_problem(resume)
        if problem:
            raise UserError(f"checkpoint {resume} is incomplete ({problem}: its save was stopped part-way)")
    return resume or None, []


def resume_command(resume_arg: str = "true") -> str:
    """The command line that resumes this run: how it was started (the `accelerate launch` around it too), with
    --resume_from_checkpoint set."""
    import os
    import shlex

    import psutil

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--resume_from_checkpoint":
            skip = not skip
            continue
        if not arg.startswith("--resume_from_checkpoint="):
            args.append(arg)
    command = ["python", sys.argv[0], *args, "--resume_from_checkpoint", resume_arg]
    if "LOCAL_RANK" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ:
        for parent in psutil.Process().parents():  # accelerate's launcher, above torchrun where it starts one
            line = parent.cmdline()
            script = next((i for i, part in enumerate(line) if part.endswith(Path(sys.argv[0]).name)), len(line))
            # `accelerate launch FLAGS scripts/sft.py ...` or `python -m accelerate.commands.launch FLAGS ...`
            at = next((i for i, p in enumerate(line[:script]) if p in ("launch", "accelerate.commands.launch")), None)
            if at is not None and any("accelerate" in part for part in line[: at + 1]):
                command = ["accelerate", "launch", *line[at + 1 : script], *command[1:]]
                break
    return shlex.join(command)


def close_progress_bar(trainer) -> None:
    for callback in trainer.callback_handler.callbacks:
        if getattr(callback, "training_bar", None) is not None:
            callback.training_bar.close()
            callback.training_bar = None


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
    resume, passed_over = resume_target(run, training.resume_from_checkpoint)
    if resume:
        run.check_checkpoint_matches(resume, recipe.model)
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

    from eeve_sft.training.assembly import build_trainer, prepare_data, select_data
    from eeve_sft.training.callbacks import CheckpointExtrasCallback, RunRecordCallback
    from eeve_sft.training.checkpoints import saving_whole
    from eeve_sft.training.data import conversations_digest
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
    selected = select_data(recipe)
    digests = {}
    if resume or not check_only:  # what the run trains on, recorded to check a resume against
        digests = {n: conversations_digest(selected.split(n)) for n in ("train", "eval") if selected.split(n)}
    if resume:
        run.check_same_data(digests, selected.dataset_name)
    data = prepare_data(recipe, tokenizer, selected, main_process_first=state.main_process_first)
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
        run.clear_staging()  # what a stopped save left
        for note in passed_over:
            print(note, file=sys.stderr)
            logger.warning(note)
        if resume:
            message = f"resuming from {resume} (step {Path(resume).name.rsplit('-', 1)[-1]})"
            print(message, file=sys.stderr)
            logger.info(message)
        fingerprints = {name: ds._fingerprint for name, ds in data.splits.items()}
        info = collect_run_info(sys.argv, training.seed, fingerprints, data.stats, full_configuration(recipe))
        run.write_start(recipe.resolved, {**info, "data_digests": digests})
    state.wait_for_everyone()

    callbacks = [RunRecordCallback(run, data.stats), CheckpointExtrasCallback(tokenizer)]
    trainer = build_trainer(recipe, tokenizer, data, callbacks)
    try:
        with stop_when_a_process_is_lost(run.path):
            trainer.train(resume_from_checkpoint=resume)
    except UserError:
        close_progress_bar(trainer)  # else it redraws itself under the error line when the process exits
        raise
    except KeyboardInterrupt:
        close_progress_bar(trainer)
        if state.is_main_process:
            last, _ = run.resumable_checkpoint()
            where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
            again = resume_command() if last else "the same command"
            print(f"\nstopped at step {trainer.state.global_step} (Ctrl-C); {where}. Resume: {again}", file=sys.stderr)
        sys.exit(130)

    # The adapter (the best one when load_best_model_at_end) with the tokenizer, written whole like a checkpoint.
    staged = run.staged(run.final_dir.name) if state.is_main_process else None
    state.wait_for_everyone()
    with saving_whole(run, run.final_dir.name, state.is_main_process):
        trainer.save_model(str(run.staging_dir / run.final_dir.name))
        if state.is_main_process:
            tokenizer.save_pretrained(staged)
            generation_config_for(tokenizer).save_pretrained(staged)
            run.publish(staged, run.final_dir.name)
    if state.is_main_process:
        logger.info("final adapter, tokenizer and template saved to %s", run.final_dir)
        print(
            f"\nrun written to {run.path} (adapter in {run.final_dir}). Next:\n"
            f"  python scripts/chat.py --model-path {run.final_dir}\n"
            f"  python scripts/evaluate.py --model-path base {run.final_dir} --recipe {run.path}"
        )
    state.wait_for_everyone()
    trainer.end()


if __name__ == "__main__":
    try:
        run_cli(lambda: main(sys.argv[1:]))
    except KeyboardInterrupt:  # before training started or after it ended: nothing to resume from here
        print("\nstopped (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
