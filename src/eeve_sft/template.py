"""The EEVE Human/Assistant prompt template: the one definition that training, preview, chat and evaluation share.

The template is a Jinja chat template stored on the tokenizer, so it travels with every checkpoint, adapter
and merged model (``chat_template.jinja``). Assistant turns sit inside ``{% generation %}`` blocks: transformers'
``return_assistant_tokens_mask`` marks exactly those tokens, which is what TRL's ``assistant_only_loss`` trains on.

Rendered conversation::

    <s>{system}\\nHuman: {user}\\nAssistant: {assistant}<|im_end|>\\nHuman: {user}\\nAssistant: {assistant}<|im_end|>

The space after ``Assistant:`` belongs to the answer (inside the generation block): a prompt that ends in
``Assistant:`` then tokenizes the same way at inference as in training, and the first trained token is the
answer's own first word piece.
"""

from __future__ import annotations

import json

from .errors import UserError

DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

ROLES = ("system", "user", "assistant")
PAD_TOKEN = "</s>"  # EEVE pads with </s> (id 2), never with the eos <|im_end|>

_TEMPLATE = """\
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
{{- messages[0]['content'] -}}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{{- __DEFAULT_SYSTEM__ -}}
{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
{%- if message['role'] == 'user' -%}
{{- '\\nHuman: ' + message['content'] -}}
{%- elif message['role'] == 'assistant' -%}
{{- '\\nAssistant:' -}}
{%- generation -%}
{{- ' ' + message['content'] + eos_token -}}
{%- endgeneration -%}
{%- else -%}
{{- raise_exception('unsupported role ' + message['role'] + ': the EEVE template takes system, user and assistant') -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '\\nAssistant:' -}}
{%- endif -%}
"""


def build_chat_template(system_prompt: str | None = None) -> str:
    """Return the Jinja chat template with `system_prompt` (default: EEVE's official line) as the default system."""
    system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    # json.dumps gives a valid Jinja string literal for any text, quotes and newlines included.
    return _TEMPLATE.replace("__DEFAULT_SYSTEM__", json.dumps(system, ensure_ascii=False))


def apply_eeve_template(tokenizer, system_prompt: str | None = None) -> None:
    """Install the EEVE template on `tokenizer` (saved with it by `save_pretrained`)."""
    tokenizer.chat_template = build_chat_template(system_prompt)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` followed by the generation prompt ``\\nAssistant:``.

    The template writes ``<s>`` itself, so the tokenizer must not add special tokens a second time.
    """
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]


def stop_token_ids(tokenizer) -> list[int]:
    """Every id that ends an answer, the tokenizer's eos first (``[<|im_end|>, </s>]`` for EEVE, the order serving
    stacks expect): EEVE also emits ``</s>``."""
    ids = [tokenizer.eos_token_id]
    eos_s = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    if isinstance(eos_s, int) and eos_s != tokenizer.unk_token_id:
        ids.append(eos_s)
    return list(dict.fromkeys(i for i in ids if i is not None))


def pad_token_id(tokenizer) -> int:
    """The padding id: ``</s>``, never the eos token, so padding is never read as the end of an answer."""
    pad = tokenizer.pad_token_id
    if pad is None or pad == tokenizer.eos_token_id:
        pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    if pad is None or pad == tokenizer.unk_token_id:
        raise UserError(f"tokenizer has no pad token and no '{PAD_TOKEN}' to pad with")
    return pad


def special_token_ids(tokenizer) -> dict:
    """bos, every stop id and the pad id, as GenerationConfig fields: the one set that checkpoints, merged models
    and every generation call carry."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": stop_token_ids(tokenizer),
        "pad_token_id": pad_token_id(tokenizer),
    }
