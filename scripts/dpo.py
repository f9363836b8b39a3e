"""Preference tuning (DPO) after SFT: 존댓말 answers preferred over the same answers in 반말.

    accelerate launch scripts/dpo.py RECIPE.yaml [--key value ...]
    python scripts/dpo.py RECIPE.yaml --check [--key value ...]   # every check, then stop before the model loads
    python scripts/dpo.py --keys                                  # every recipe key, grouped by dataclass

The recipe's keys are those of sft.py with TRL's DPOConfig in place of SFTConfig, plus `sft_adapter`: the SFT
adapter the policy continues (the reference is that SFT model). Pairs come from data_prep/build_pairs.py. The run
folder is that of sft.py; its summary.json adds the preference measure (the share of held-out pairs whose chosen
answer the model finds likelier than the rejected one) at the SFT start and at the end.
"""

import logging

from eeve_sft.errors import UserError

logger = logging.getLogger("eeve_sft.dpo")
PREFERENCE_START = "preference_sft_start"  # metrics.jsonl key of the measure before training
USAGE = "usage: scripts/dpo.py RECIPE.yaml [--check] [--key value ...] | scripts/dpo.py --keys"


def check_for_dpo(recipe) -> None:
    """DPO settings that TRL's DPOTrainer would ignore or refuse only after the model has loaded."""
    training = recipe.training
    if training.padding_free:
        raise UserError(
            "padding_free: true is not available in TRL's DPOTrainer (it falls back to padded batches); "
            "set padding_free: false"
        )
    if training.sync_ref_model:
        raise UserError("sync_ref_model: true does not work with an adapter policy (TRL); set it false")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    from eeve_sft.training.recipe import DPO_DATACLASSES, describe_keys

    if argv[0] == "--keys":
        print(describe_keys(DPO_DATACLASSES))
        return
    if argv[0].startswith("-"):
        raise UserError(f"the recipe file comes first; {USAGE}")
    check_only = "--check" in argv[1:]
    overrides = [a for a in argv[1:] if a != "--check"]

    from eeve_sft.training.launch import Launch
    from eeve_sft.training.preference import adapter_lora_settings, resolve_sft_adapter, select_pairs
    from eeve_sft.training.recipe import check_for_training, parse_recipe
    from eeve_sft.training.run_dir import RunDir

    recipe = parse_recipe(argv[0], overrides, classes=DPO_DATACLASSES)
    training = recipe.training
    check_for_training(recipe)
    check_for_dpo(recipe)
    adapter = resolve_sft_adapter(recipe)
    for key, value in adapter_lora_settings(adapter).items():  # recorded as trained: the SFT adapter's shape
        setattr(recipe.model, key, value)
        recipe.resolved[key] = value

    launch = Launch.prepare(recipe)  # after the SFT adapter's LoRA shape is the recipe's: a checkpoint must match
    if launch is None:
        return

    import torch

    from eeve_sft.quiet import quiet_training

    quiet_training(torch.cuda.is_available())
    from transformers import set_seed

    from eeve_sft.jsonfiles import write_json
    from eeve_sft.training.assembly import build_dpo_trainer
    from eeve_sft.training.callbacks import CheckpointExtrasCallback, RunRecordCallback
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.preference import PAIR_FIELDS, preference_share

    set_seed(training.seed)
    tokenizer = tokenizer_for_recipe(recipe)
    state = launch.process_state()
    with state.main_process_first():
        data = select_pairs(recipe)
    splits = {name: split for name, split in (("train", data.train), ("eval", data.eval)) if split}
    stats = {name: {"pairs": len(split)} for name, split in splits.items()}
    launch.check_data(splits, data.dataset_name, PAIR_FIELDS, record=not check_only)
    if check_only:
        counts = ", ".join(f"{s['pairs']} {name} pairs" for name, s in stats.items())
        print(f"{argv[0]}: recipe, sft_adapter, output_dir, tokenizer and pairs checked ({counts}); nothing written")
        return

    fingerprints = {name: split._fingerprint for name, split in splits.items()}
    launch.write_start(state, fingerprints, stats, sft_adapter=str(adapter))
    run = launch.run
    callbacks = [RunRecordCallback(run, stats), CheckpointExtrasCallback(tokenizer)]
    trainer = build_dpo_trainer(recipe, tokenizer, data, adapter, callbacks)
    if not launch.resume:  # the SFT start, before any step; a resumed run finds it in metrics.jsonl
        start = preference_share(trainer, trainer.eval_dataset)["share"]
        if state.is_main_process:
            run.append_metrics({"step": 0, PREFERENCE_START: start})
    launch.train(trainer, state)
    end = preference_share(trainer, trainer.eval_dataset)

    # The frozen reference copy is not part of the result: final/ holds one adapter with both stages in it.
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    launch.save_final(trainer, tokenizer, state)
    before = None
    if state.is_main_process:
        summary = run.summary()
        before = next((e[PREFERENCE_START] for e in run.metrics() if PREFERENCE_START in e), None)
        summary["sft_adapter"] = str(adapter)
        summary["preference"] = {"eval_pairs": end["pairs"], "sft_start": before, "end": end["share"]}
        write_json(run.summary_file, summary)
        logger.info("held-out pairs with the chosen answer likelier: SFT start %s, end %s", before, end["share"])
    sft_run = RunDir.containing(adapter)
    launch.finish(
        trainer,
        state,
        f"\nrun written to {run.path} (adapter in {run.final_dir}; SFT and DPO in one adapter).\n"
        f"held-out pairs where the chosen answer is likelier: {before} at the SFT start, {end['share']} now. Next:\n"
        f"  python scripts/chat.py --model-path {run.final_dir}\n"
        f"  python scripts/evaluate.py --model-path {adapter} {run.final_dir}\n"
        f"  python scripts/compare.py {sft_run.path if sft_run else adapter} {run.path}",
    )


if __name__ == "__main__":
    from eeve_sft.training.launch import run_training_cli

    run_training_cli(main)
