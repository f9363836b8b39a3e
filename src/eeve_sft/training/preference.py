"""Preference (DPO) training after SFT: the pairs, the SFT adapter it starts from, and the offline preference measure.

The policy is the SFT run's LoRA adapter, loaded trainable on one copy of the base weights; TRL's DPOTrainer adds a
frozen copy of it (adapter ``ref``) as the reference, which costs the adapter's size, not the model's. The reference
log-probabilities come either from that adapter at every step (``precompute_ref_log_probs: false``) or from one
pass over the pairs before training (``true``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import UserError, one_line
from .assembly import RecipeData
from .recipe import Recipe

logger = logging.getLogger(__name__)

PAIR_FIELDS = ("prompt", "chosen", "rejected")


# --------------------------------------------------------------------------------------------------------- pairs


def pair_problem(row: dict) -> str | None:
    """Why `row` is not a conversational preference pair, or None when it is."""
    from .data import conversation_problem

    missing = [name for name in PAIR_FIELDS if row.get(name) is None]
    if missing:
        return f"missing field {', '.join(repr(m) for m in missing)}; a pair has 'prompt', 'chosen' and 'rejected'"
    prompt, chosen, rejected = (row[name] for name in PAIR_FIELDS)
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(side, list) or len(side) != 1 or not isinstance(side[0], dict):
            return f"'{name}' must be a list of one assistant message"
        if side[0].get("role") != "assistant":
            return f"'{name}' must be an assistant message, got role {side[0].get('role')!r}"
    if not isinstance(prompt, list) or not prompt:
        return "'prompt' must be a non-empty list of messages ending with a user turn"
    problem = conversation_problem([*prompt, chosen[0]]) or conversation_problem([*prompt, rejected[0]])
    if problem:
        return problem
    if " ".join(chosen[0]["content"].split()) == " ".join(rejected[0]["content"].split()):
        return "'chosen' and 'rejected' are the same answer"
    return None


def check_pairs(dataset, split: str, dataset_name: str) -> None:
    """Fail on the first row that is not a usable pair, naming its file and line and the problem."""
    from .data import row_location

    missing = [name for name in PAIR_FIELDS if name not in dataset.column_names]
    if missing:
        where = row_location(dataset_name, split, 0)
        raise UserError(
            f"{where}: missing field {', '.join(repr(m) for m in missing)}; preference rows have 'prompt', "
            "'chosen' and 'rejected' (data_prep/build_pairs.py writes them)"
        )
    for index, row in enumerate(dataset.select_columns(list(PAIR_FIELDS))):
        problem = pair_problem(row)
        if problem:
            raise UserError(f"{row_location(dataset_name, split, index)}: {problem}")


def _plain_pair(row: dict) -> dict:
    """Messages with role and content only (datasets fills keys other rows have with None)."""
    return {name: [{"role": m["role"], "content": m["content"]} for m in row[name]] for name in PAIR_FIELDS}


def select_pairs(recipe: Recipe, with_eval: bool | None = None) -> RecipeData:
    """Load the recipe's pairs, check every row where it sits in its file, then pick train and eval as SFT does."""
    from .data import load_splits, select_splits

    script, training, project = recipe.script, recipe.training, recipe.project
    name = script.dataset_name
    if with_eval is None:
        with_eval = training.eval_strategy != "no"
    splits = load_splits(name, script.dataset_config)
    # The held-out pairs are read even with evaluation off: the preference measure is taken on them.
    eval_split = script.dataset_test_split if with_eval or script.dataset_test_split in splits else None
    for split in (script.dataset_train_split, eval_split):
        if split in splits:
            check_pairs(splits[split], split, name)
            splits[split] = splits[split].map(
                _plain_pair, remove_columns=splits[split].column_names, desc=f"Reading {split} pairs"
            )
    train, held_out = select_splits(
        splits, script.dataset_train_split, eval_split, project.eval_fraction, training.seed
    )
    eval_from = None
    if held_out is not None:
        eval_from = eval_split if eval_split in splits else f"{project.eval_fraction:g} of train held out"
    return RecipeData(train, held_out, name, eval_from)


def shortest_first(dataset):
    """`dataset`'s pairs ordered by length, shortest first (characters of the prompt plus the longer answer).

    Whatever reads pairs in stored order then batches pairs of like length: TRL's reference pass
    (``precompute_ref_log_probs``) and evaluation, which would otherwise pad every batch to its longest pair. Training
    order is the sampler's and does not depend on it."""
    if dataset is None or len(dataset) < 2:
        return dataset

    def width(row: dict) -> int:
        prompt = sum(len(m["content"]) for m in row["prompt"])
        return prompt + max(len(row["chosen"][0]["content"]), len(row["rejected"][0]["content"]))

    widths = [width(row) for row in dataset.select_columns(list(PAIR_FIELDS))]
    return dataset.select(sorted(range(len(widths)), key=widths.__getitem__))


# ---------------------------------------------------------------------------------------------- the SFT adapter


def _same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same weights: the same local folder, or the same Hub id."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() or pb.exists():
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def resolve_sft_adapter(recipe: Recipe) -> Path:
    """The SFT adapter a DPO recipe starts from, checked before anything loads: it exists, is a LoRA adapter, and
    was trained on the recipe's model_name_or_path. An SFT run folder stands for its final/ adapter."""
    from .run_dir import resolve_base_model

    given = recipe.dpo.sft_adapter if recipe.dpo else None
    if not given:
        raise UserError("no sft_adapter: DPO starts from an SFT run; set sft_adapter: OUTPUT_DIR/final")
    path = Path(given).expanduser()
    if not path.exists():
        raise UserError(f"sft_adapter not found: {given} (looked for {path.resolve()})")
    if (
        path.is_dir()
        and not (path / "adapter_config.json").is_file()
        and (path / "final" / "adapter_config.json").is_file()
    ):
        path = path / "final"
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"sft_adapter {given} is not a LoRA adapter: it has no adapter_config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"sft_adapter {given}: {config_file} is not valid JSON") from None
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind != "LORA":
        raise UserError(f"sft_adapter {given} is not a LoRA adapter (peft_type {kind!r})")
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"sft_adapter {given}: adapter_config.json names no base_model_name_or_path")
    found = resolve_base_model(path, base)
    wanted = recipe.model.model_name_or_path
    if not _same_model(found, wanted):
        raise UserError(
            f"sft_adapter {given} was trained on '{base}', not on this recipe's model_name_or_path '{wanted}'"
        )
    return path


# ModelConfig's LoRA keys and their names in adapter_config.json.
LORA_KEYS = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_modules_to_save": "modules_to_save",
    "use_rslora": "use_rslora",
    "use_dora": "use_dora",
}


def adapter_lora_settings(adapter: Path) -> dict:
    """The LoRA keys the policy trains with, which are the SFT adapter's (a DPO recipe's own lora_* keys do
    nothing): as the adapter's SFT run recorded them, else from its adapter_config.json."""
    from .run_dir import RunDir

    run = RunDir.containing(adapter)
    try:
        recorded = run.configuration() if run else {}
    except UserError:
        recorded = {}
    if all(key in recorded for key in LORA_KEYS):
        return {key: recorded[key] for key in LORA_KEYS}
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    return {key: config.get(name) for key, name in LORA_KEYS.items()}


def load_policy(recipe: Recipe, adapter: Path):
    """The base model (quantized as the recipe says) with the SFT adapter loaded trainable: the DPO policy."""
    from peft import PeftModel
    from trl import get_quantization_config
    from trl.trainer.utils import create_model_from_path

    from .modeling import model_init_kwargs

    kwargs = model_init_kwargs(recipe)
    quantization = get_quantization_config(recipe.model)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if recipe.training.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None  # as TRL does: each process places its own copy
    model = create_model_from_path(recipe.model.model_name_or_path, **kwargs)
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(
            f"cannot load sft_adapter {adapter} onto '{recipe.model.model_name_or_path}': {one_line(err)}"
        ) from None


LENGTH_SAMPLERS = ("group_by_length", "batch_rebalance")


def keep_pair_lengths(trainer) -> None:
    """Give the tokenized pairs the length column transformers' length-aware samplers read, and keep it past the
    trainer's column filter. Without it those samplers look for ``input_ids``, which pairs do not have. A pair's
    length is the prompt plus its longer answer: the width its chosen and rejected rows take in a padded batch."""
    from datasets import Dataset

    name = trainer.args.length_column_name
    for attribute in ("train_dataset", "eval_dataset"):
        dataset = getattr(trainer, attribute)
        if not isinstance(dataset, Dataset) or name in dataset.column_names:
            continue
        columns = zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
        setattr(trainer, attribute, dataset.add_column(name, [len(p) + max(len(c), len(r)) for p, c, r in columns]))
    trainer._set_signature_columns_if_needed()
    if name not in trainer._signature_columns:
        trainer._signature_columns.append(name)  # the collator reads the id columns only and leaves this one


# ---------------------------------------------------------------------------------------- the preference measure


def preference_share(trainer, dataset) -> dict:
    """``{"share", "pairs"}``: the share of `dataset`'s pairs (tokenized by the trainer) where the policy gives the
    chosen answer a higher log-probability than the rejected one (summed over the answer's tokens, as DPO scores
    them), and how many pairs that is. The share is None when there are none."""
    import torch

    if dataset is None or not len(dataset):
        return {"share": None, "pairs": 0}
    model = trainer.model
    was_training = model.training
    model.eval()
    wins = []
    try:
        with torch.no_grad():
            for inputs in trainer.get_eval_dataloader(dataset):
                inputs = trainer._prepare_inputs(inputs)
                mask = inputs["completion_mask"]
                kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
                labels = inputs["input_ids"].masked_fill(mask == 0, -100)
                outputs = model(**kwargs, labels=labels, fused_lm_head=True, use_cache=False)
                logps = outputs.log_probs[:, -(mask.size(1) - 1) :].sum(dim=1)
                chosen, rejected = logps.float().chunk(2, dim=0)
                wins.append(trainer.accelerator.gather_for_metrics((chosen > rejected).float()))
    finally:
        model.train(was_training)
    won = torch.cat(wins)
    return {"share": round(won.mean().item(), 4), "pairs": len(won)}
