"""The training assembly every tool shares, so a recipe key takes one path through the code.

:func:`select_data` picks a recipe's train and eval conversations (rows checked where they sit in their file,
then the eval split or the ``eval_fraction`` hold-out); :func:`prepare_data` tokenizes them exactly as training
sees them; :func:`build_trainer` builds the ``SFTTrainer`` and :func:`build_dpo_trainer` the ``DPOTrainer`` that
continues an SFT adapter, both with the same model settings. ``scripts/sft.py``, ``scripts/dpo.py``,
``scripts/preview_data.py``, the evaluation's eval loss and the training benchmark all go through them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .recipe import Recipe

logger = logging.getLogger(__name__)


@dataclass
class RecipeData:
    """A recipe's conversations before tokenization: the train split and the eval split (None when off)."""

    train: object  # datasets.Dataset
    eval: object | None
    dataset_name: str
    eval_from: str | None = None  # the eval split's name, or how much of train was held out

    def split(self, name: str):
        return self.train if name == "train" else self.eval


@dataclass
class PreparedData:
    """Tokenized splits (``input_ids``, ``labels`` and the source ``messages``) and what tokenizing kept."""

    splits: dict = field(default_factory=dict)  # "train" / "eval" -> datasets.Dataset
    stats: dict = field(default_factory=dict)  # "train" / "eval" -> {"examples", "truncated", ...}

    @property
    def train(self):
        return self.splits.get("train")

    @property
    def eval(self):
        return self.splits.get("eval")


def select_data(recipe: Recipe, with_eval: bool | None = None, dataset_name: str | None = None) -> RecipeData:
    """Load the recipe's dataset and select train and eval as training does.

    `with_eval` defaults to the recipe's own choice (evaluation on unless ``eval_strategy: no``); `dataset_name`
    replaces the recipe's (a run directory read from elsewhere resolves its relative path first). Every row of
    the splits used is checked before the hold-out shuffles them, so a bad row is named by its file and line.
    """
    from .data import check_conversations, load_splits, select_splits

    script, training, project = recipe.script, recipe.training, recipe.project
    name = dataset_name or script.dataset_name
    if with_eval is None:
        with_eval = training.eval_strategy != "no"
    splits = load_splits(name, script.dataset_config)
    eval_split = script.dataset_test_split if with_eval else None
    for split in (script.dataset_train_split, eval_split):
        if split in splits:
            check_conversations(splits[split], split, name)
    train, held_out = select_splits(
        splits, script.dataset_train_split, eval_split, project.eval_fraction, training.seed
    )
    eval_from = None
    if held_out is not None:
        eval_from = (
            eval_split
            if eval_split in splits
            else (f"{project.eval_fraction:g} of {script.dataset_train_split} held out (eval_fraction)")
        )
    return RecipeData(train, held_out, name, eval_from)


def prepare_data(
    recipe: Recipe,
    tokenizer,
    data: RecipeData | None = None,
    names: Iterable[str] = ("train", "eval"),
    limit: int | None = None,
    main_process_first: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> PreparedData:
    """Tokenize the selected splits in `names` (the first `limit` rows of each when given) as the trainer sees
    them; `main_process_first` lets one process build the datasets cache before the others read it."""
    from .data import tokenize_dataset

    training = recipe.training
    data = data or select_data(recipe)
    prepared = PreparedData()
    for name in names:
        raw = data.split(name)
        if raw is None:
            continue
        if limit is not None:
            raw = raw.select(range(min(limit, len(raw))))
        with main_process_first():
            prepared.splits[name], stats = tokenize_dataset(
                raw,
                tokenizer,
                training.max_length,
                training.assistant_only_loss,
                num_proc=training.dataset_num_proc,
                keep_messages=True,
            )
        prepared.stats[name] = stats.as_dict()
        logger.info("%s data: %s", name, prepared.stats[name])
    return prepared


def build_trainer(
    recipe: Recipe,
    tokenizer,
    data: PreparedData,
    callbacks: Iterable = (),
    trainer_class: type | None = None,
):
    """The SFTTrainer for `recipe` on `data`: model settings, LoRA/quantization, early stopping from the recipe.

    `callbacks` are added to the trainer's (transformers ``TrainerCallback``); `trainer_class` is an SFTTrainer
    subclass to build instead, one that overrides a step. What the recipe asks of the model (LoRA input casts, FP8
    bases, fused projections) is applied before the trainer is returned, so a caller may change ``trainer.model``
    further before training.
    """
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    from .modeling import model_init_kwargs

    training = recipe.training
    training.model_init_kwargs = model_init_kwargs(recipe)
    callbacks = with_early_stopping(recipe, callbacks)
    trainer = (trainer_class or SFTTrainer)(
        model=recipe.model.model_name_or_path,
        args=training,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=get_peft_config(recipe.model),
        quantization_config=get_quantization_config(recipe.model),
        callbacks=callbacks,
    )
    return apply_model_settings(trainer, recipe)


def build_dpo_trainer(
    recipe: Recipe,
    tokenizer,
    data: RecipeData,
    sft_adapter,
    callbacks: Iterable = (),
    trainer_class: type | None = None,
):
    """The DPOTrainer for a DPO `recipe` on preference pairs `data`: the policy continues `sft_adapter` (checked by
    :func:`~eeve_sft.training.preference.resolve_sft_adapter`) on one copy of the base weights, and TRL keeps a
    frozen copy of the adapter as the reference. Speed and model settings as :func:`build_trainer`."""
    from trl import DPOTrainer

    from .preference import LENGTH_SAMPLERS, keep_pair_lengths, load_policy, shortest_first

    callbacks = with_early_stopping(recipe, callbacks)
    trainer = (trainer_class or DPOTrainer)(
        model=load_policy(recipe, sft_adapter),
        args=recipe.training,
        train_dataset=shortest_first(data.train),  # the reference pass and evaluation batch pairs of like length
        eval_dataset=shortest_first(data.eval),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if recipe.training.train_sampling_strategy in LENGTH_SAMPLERS:
        keep_pair_lengths(trainer)
    return apply_model_settings(trainer, recipe)


def with_early_stopping(recipe: Recipe, callbacks: Iterable) -> list:
    """`callbacks` plus early stopping when the recipe asks for it."""
    from transformers import EarlyStoppingCallback

    project = recipe.project
    callbacks = list(callbacks)
    if project.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(project.early_stopping_patience, project.early_stopping_threshold))
    return callbacks


def apply_model_settings(trainer, recipe: Recipe):
    """What every trainer of the assembly gets once built: checkpoints written whole, no TRL model-card drafts, and
    the recipe's LoRA cast, FP8 and fused-projection settings applied to its model."""
    from .checkpoints import whole_checkpoints
    from .modeling import skip_redundant_lora_input_casts

    training, project = recipe.training, recipe.project
    whole_checkpoints(trainer)  # a kill during a save never leaves a half-written checkpoint-N
    # TRL drafts a README.md into output_dir at every checkpoint, naming no base model for a local path
    # ("[None](https://huggingface.co/None)"); scripts/merge_adapter.py writes the real model card.
    trainer.create_model_card = lambda *args, **kwargs: None
    if training.bf16:
        skip_redundant_lora_input_casts(trainer.model)
    if project.float8_base:  # before fused_lora, which routes the FP8 bases through their own products
        from .float8 import convert_lora_base_layers

        logger.info("FP8 base projections: %d", convert_lora_base_layers(trainer.model))
    if project.fused_lora:
        from .fused_lora import LAST_IN_LAYER, enable_fused_lora

        # Checkpointed layers: the MLP's down projection (the last) adds its base product after the adapter, so the
        # backward's recomputation of the layer stops before that product (fused_lora's module docstring).
        last = LAST_IN_LAYER if training.activation_checkpointing else ()
        logger.info("fused LoRA: %d projections", enable_fused_lora(trainer.model, last_projections=last))
    return trainer
