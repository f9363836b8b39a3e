"""Tokenizer and model-loading settings for training, derived from a recipe."""

from __future__ import annotations

from transformers import AutoTokenizer, GenerationConfig

from ..errors import UserError, one_line
from ..hub import check_name, not_cached
from ..template import apply_eeve_template, special_token_ids
from .recipe import Recipe


def tokenizer_for_recipe(recipe: Recipe):
    """The model's fast tokenizer with the EEVE template installed and a pad token that is not the eos token."""
    model, training = recipe.model, recipe.training
    offline = check_name(model.model_name_or_path, "model_name_or_path not found")
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
            raise UserError(f"cannot load a tokenizer from '{name}': {not_cached(name, offline)}") from None
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
    if check_name(model.model_name_or_path, "model_name_or_path not found"):
        # The tokenizer came from the cache; the weights must too, without retries (transformers 5 does not hand
        # local_files_only on to its adapter_config.json lookup, so it is said there as well).
        kwargs.update(local_files_only=True, adapter_kwargs={"local_files_only": True})
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
