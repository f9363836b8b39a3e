"""Supervised fine-tuning of EEVE-Korean-Instruct (LoRA/QLoRA) from a recipe.

    accelerate launch scripts/sft.py recipes/eeve_banmal.yaml [--key value ...]

Flags override recipe keys (any key of TRL's ScriptArguments, SFTConfig, ModelConfig, or the project's).
"""

import logging
import shutil
import sys
from pathlib import Path

from accelerate import PartialState
from transformers import EarlyStoppingCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer, get_peft_config, get_quantization_config

from eeve_sft.callbacks import CheckpointExtrasCallback, RunRecordCallback
from eeve_sft.data import check_conversations, load_splits, select_splits, tokenize_dataset
from eeve_sft.distributed import stop_when_a_process_is_lost
from eeve_sft.errors import UserError, run_cli
from eeve_sft.modeling import (
    generation_config_for,
    model_init_kwargs,
    skip_redundant_lora_input_casts,
    tokenizer_for_recipe,
)
from eeve_sft.recipe import check_for_training, parse_recipe
from eeve_sft.run_files import check_output_dir, collect_run_info, log_to_file, write_run_files

logger = logging.getLogger("eeve_sft.sft")
USAGE = "usage: scripts/sft.py RECIPE.yaml [--key value ...]"


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    if argv[0].startswith("-"):
        raise UserError(f"the recipe file comes first; {USAGE}")
    recipe = parse_recipe(argv[0], argv[1:])
    script, training, project = recipe.script, recipe.training, recipe.project
    check_for_training(recipe)

    # Decide what happens to output_dir before anything heavy runs, and write nothing there yet.
    output_dir = Path(training.output_dir)
    resume = training.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume is True:
        resume = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if resume is None:
            raise UserError(f"--resume_from_checkpoint true, but {output_dir} holds no checkpoint-N directory")
    elif isinstance(resume, str) and not Path(resume).is_dir():
        raise UserError(f"checkpoint to resume from not found: {resume}")
    check_output_dir(output_dir, project.overwrite_output_dir, resuming=bool(resume))

    # Tokenizer, then data: every row is checked and tokenized before the model loads.
    set_seed(training.seed)
    tokenizer = tokenizer_for_recipe(recipe)
    splits = load_splits(script.dataset_name, script.dataset_config)
    eval_split = script.dataset_test_split if training.eval_strategy != "no" else None
    train_raw, eval_raw = select_splits(
        splits, script.dataset_train_split, eval_split, project.eval_fraction, training.seed
    )
    state = PartialState()
    tokenized, data_stats = {}, {}
    for name, raw in (("train", train_raw), ("eval", eval_raw)):
        if raw is None:
            continue
        check_conversations(raw, name)
        with state.main_process_first():
            tokenized[name], stats = tokenize_dataset(
                raw, tokenizer, training.max_length, training.assistant_only_loss,
                num_proc=training.dataset_num_proc, keep_messages=True,
            )
        data_stats[name] = stats.as_dict()
        logger.info("%s data: %s", name, stats.as_dict())

    if state.is_main_process:
        if project.overwrite_output_dir and not resume and output_dir.is_dir():
            shutil.rmtree(output_dir)
        log_to_file(output_dir)
        fingerprints = {name: ds._fingerprint for name, ds in tokenized.items()}
        write_run_files(output_dir, recipe.resolved, collect_run_info(sys.argv, training.seed, fingerprints, data_stats))
    state.wait_for_everyone()

    training.model_init_kwargs = model_init_kwargs(recipe)
    callbacks = [RunRecordCallback(output_dir, data_stats), CheckpointExtrasCallback(tokenizer)]
    if project.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(project.early_stopping_patience, project.early_stopping_threshold))
    trainer = SFTTrainer(
        model=recipe.model.model_name_or_path,
        args=training,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("eval"),
        processing_class=tokenizer,
        peft_config=get_peft_config(recipe.model),
        quantization_config=get_quantization_config(recipe.model),
        callbacks=callbacks,
    )
    if training.bf16:
        skip_redundant_lora_input_casts(trainer.model)
    with stop_when_a_process_is_lost(output_dir):
        trainer.train(resume_from_checkpoint=resume or None)

    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))  # the adapter (the best one when load_best_model_at_end), with the tokenizer
    if state.is_main_process:
        tokenizer.save_pretrained(final_dir)
        generation_config_for(tokenizer).save_pretrained(final_dir)
        logger.info("final adapter, tokenizer and template saved to %s", final_dir)
    state.wait_for_everyone()
    trainer.end()


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
