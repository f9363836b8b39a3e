"""Tokenizer and model-loading settings for training, derived from a recipe."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, GenerationConfig

from ..errors import UserError, one_line
from ..hub import hub_unavailable
from ..template import apply_eeve_template, special_token_ids
from .recipe import Recipe


def hub_offline_for(name: str) -> str | None:
    """Why `name` must come from the local cache (the Hub cannot be used now), or None: a local directory or a
    reachable Hub. Loading then goes straight to the cache instead of retrying the network for about a minute."""
    return None if Path(name).expanduser().is_dir() else hub_unavailable()


def tokenizer_for_recipe(recipe: Recipe):
    """The model's fast tokenizer with the EEVE template installed and a pad token that is not the eos token."""
    model, training = recipe.model, recipe.training
    offline = hub_offline_for(model.model_name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model.model_name_or_path,
            revision=model.model_revision,
            trust_remote_code=training.trust_remote_code,
            local_files_only=bool(offline),
        )
    except OSError as err:
        name = model.model_name_or_path
        if offline:
            where = "" if Path(name).is_absolute() else f" ({Path(name).resolve()})"
            raise UserError(
                f"cannot load a tokenizer from '{name}': it is no local directory{where} and no model in "
                f"the local cache, and {offline}"
            ) from None
        raise UserError(f"cannot load a tokenizer from '{name}': {one_line(err)}") from None
    if not tokenizer.is_fast:
        raise UserError(
            f"'{model.model_name_or_path}' has no fast tokenizer (tokenizer.json); assistant masks need one"
        )
    if getattr(training, "eos_token", None):  # DPOConfig has no eos_token key
        tokenizer.eos_token = training.eos_token
    if training.pad_token:
        tokenizer.pad_token = training.pad_token
    for role, token in (("eos_token", tokenizer.eos_token), ("pad_token", tokenizer.pad_token)):
        if token is None:
            raise UserError(f"the tokenizer of '{model.model_name_or_path}' has no {role}; set {role} in the recipe")
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
            raise UserError(f"{role} '{token}' is not in the vocabulary of '{model.model_name_or_path}'")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Padding is masked out of the loss, so a pad token equal to eos would hide every eos: the model
        # would never learn to stop.
        raise UserError(
            f"pad_token and eos_token are both '{tokenizer.eos_token}'; set pad_token to another token (EEVE: '</s>')"
        )
    apply_eeve_template(tokenizer, recipe.project.system_prompt)
    return tokenizer


def generation_config_for(tokenizer) -> GenerationConfig:
    """Generation settings saved with adapters: stop on every eos id, pad with the pad token."""
    return GenerationConfig(**special_token_ids(tokenizer))


def model_init_kwargs(recipe: Recipe) -> dict:
    """Keyword arguments for from_pretrained, as TRL's own sft script builds them (recipe values win)."""
    model, training = recipe.model, recipe.training
    kwargs = {
        "revision": model.model_revision,
        "trust_remote_code": training.trust_remote_code,
        "attn_implementation": model.attn_implementation,
        "dtype": model.dtype,
    }
    if hub_offline_for(model.model_name_or_path):
        kwargs["local_files_only"] = True  # the tokenizer came from the cache; the weights must too, without retries
    kwargs.update(training.model_init_kwargs or {})
    return kwargs


def skip_redundant_lora_input_casts(model) -> int:
    """Stop PEFT from copying every LoRA input to fp32 when training runs under bf16 autocast.

    PEFT keeps the adapters of a bf16 model in fp32 and casts each adapter's input to fp32 first; under bf16
    autocast the adapter matmuls run in bf16 anyway, so the cast is a full-size copy per projection per layer
    (336 on EEVE) and nothing else. The GPU benchmark measures the saving and checks the loss is unchanged.
    Only call this when autocast is on (``bf16: true``): without it a bf16 input would meet fp32 weights.
    Returns how many LoRA layers were changed.
    """
    from peft.tuners.lora import LoraLayer

    changed = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and getattr(module, "cast_input_dtype_enabled", True):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed
