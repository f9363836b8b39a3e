"""The one batched generation path: a static KV cache, the decoding step compiled, shapes bucketed so it compiles once.

Everything is transformers' own machinery: ``cache_implementation="static"`` sizes the KV cache once, and on a CUDA
GPU ``generate`` then runs every decoding step through ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).
A compiled step is specialised to its shapes, so this module keeps them fixed for a whole run:

- the cache length is one bucket for the run (the longest prompt rounded up to :data:`CACHE_BUCKET`, plus
  ``max_new_tokens``); transformers keeps the largest length it has seen, so later calls reuse the graph;
- every batch has the same number of rows: a short last batch is filled with copies of one of its prompts, marked
  finished from the first step so they never keep the batch running;
- prompts are sorted by length, so the rows of one batch need little left padding.

Decoding steps attend to the KV heads in place (:func:`sdpa_gqa_decode`) rather than through transformers' compiled
default, which repeats the whole cache for every query head each step. Rows stop on every stop id (EEVE:
``<|im_end|>`` and ``</s>``) and ``generate`` returns as soon as every row has stopped. Where compiling cannot serve,
one line on stderr says so: without a CUDA GPU the same static-cache path runs uncompiled; bitsandbytes NF4 weights,
which transformers does not compile, use plain ``generate`` (dynamic cache) in the same sorted, wide batches.
Prefill is not compiled (its width changes from batch to batch); it is one step of several hundred.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass

import torch
from transformers import (
    AttentionInterface,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from ..errors import UserError

CACHE_BUCKET = 64  # cache lengths are multiples of this plus max_new_tokens: prompts of similar length share a graph
MAX_AUTO_BATCH = 256  # beyond this the attention over the cache outgrows what a wider batch saves
CPU_BATCH = 8  # without a GPU there is no memory to size the batch from: a fixed, small width
MEMORY_SHARE = 0.7  # of the free GPU memory, for the KV cache and the prefill activations of one batch

_notes_printed: set[str] = set()

GQA_DECODE_ATTENTION = "sdpa_gqa_decode"


def sdpa_gqa_decode(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' SDPA attention, except that a one-token query (a decoding step) attends to the KV heads in
    place: its query heads are grouped per KV head, as transformers itself does outside torch.compile, instead
    of repeating the whole static cache for every query head of its group on every step.

    The repeat copies the whole cache at every step, which a decoding step otherwise only reads (the generation
    benchmark's profile is in benchmarks/RESULTS.md).
    """
    groups = getattr(module, "num_key_value_groups", 1)
    mask = attention_mask
    if (
        query.shape[2] != 1
        or groups == 1
        or kwargs.get("position_bias") is not None
        or kwargs.get("cache") is not None
        or (mask is not None and mask.shape[1] != 1)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, heads, _, dim = query.shape
    grouped = query.reshape(batch, heads // groups, groups, dim)  # head h reads KV head h // groups
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_DECODE_ATTENTION, sdpa_gqa_decode)
ALL_MASK_ATTENTION_FUNCTIONS.register(GQA_DECODE_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_gqa_decode_attention(model) -> None:
    """Switch a model on SDPA to :func:`sdpa_gqa_decode` (the same attention for prompts, in place for steps)."""
    inner = _transformers_model(model)
    if getattr(inner.config, "_attn_implementation", None) == "sdpa":
        inner.set_attn_implementation(GQA_DECODE_ATTENTION)


@dataclass(frozen=True)
class DecodePlan:
    """How decoding runs on a given model: compiled or not, and the one line that says why not."""

    compiled: bool
    static: bool = True  # static KV cache; without compile on a GPU the dynamic cache decodes faster (NF4)
    note: str | None = None


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _transformers_model(model):
    """The transformers model under a PEFT wrapper (where `hf_quantizer` and the compiled call live)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decode_plan(model) -> DecodePlan:
    device = _model_device(model)
    if device.type != "cuda":
        return DecodePlan(
            False,
            note=f"generation on {device.type}: static KV cache without torch.compile "
            "(the compiled decoding step needs a CUDA GPU)",
        )
    quantizer = getattr(_transformers_model(model), "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_compileable:
        # Uncompiled, the static cache decodes slower than the dynamic one (figures in benchmarks/RESULTS.md).
        return DecodePlan(
            False,
            static=False,
            note="generation: transformers does not compile bitsandbytes 4-bit weights; "
            "plain generate (dynamic KV cache) in wide batches",
        )
    return DecodePlan(True)


def note_once(plan: DecodePlan) -> None:
    """Print a plan's note on stderr once per process (a chat asks for a plan every turn)."""
    if plan.note and plan.note not in _notes_printed:
        _notes_printed.add(plan.note)
        print(plan.note, file=sys.stderr, flush=True)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def cache_length(longest_prompt: int, max_new_tokens: int) -> int:
    """The KV cache length of a run: the longest prompt rounded up to a bucket, plus the new tokens."""
    return round_up(max(longest_prompt, 1), CACHE_BUCKET) + max_new_tokens


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token takes in the cache, over all layers."""
    config = config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 2
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def row_bytes(config, dtype: torch.dtype, cache_len: int, longest_prompt: int) -> int:
    """GPU memory one batch row needs: its KV cache, plus the largest prefill activations of one layer
    (hidden states, the MLP's three intermediate tensors, attention scores should the kernel materialise them)."""
    text = config.get_text_config(decoder=True)
    element = torch.finfo(dtype).bits // 8
    width = round_up(max(longest_prompt, 1), CACHE_BUCKET)
    prefill = width * (4 * text.hidden_size + 3 * text.intermediate_size) * element
    prefill += width * width * text.num_attention_heads * 4 + text.vocab_size * 4
    return kv_bytes_per_token(config, dtype) * cache_len + prefill


def auto_batch_size(model, cache_len: int, longest_prompt: int) -> int:
    """As many rows as :data:`MEMORY_SHARE` of the free GPU memory holds, at most :data:`MAX_AUTO_BATCH`."""
    device = _model_device(model)
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    dtype = _compute_dtype(model)
    rows = int(free * MEMORY_SHARE // row_bytes(model.config, dtype, cache_len, longest_prompt))
    return max(1, min(MAX_AUTO_BATCH, rows))


def _compute_dtype(model) -> torch.dtype:
    """The activations' dtype: bf16 for NF4 weights (their compute dtype), else the model's own."""
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.bfloat16


def batch_rows(requested: int | str | None, n_prompts: int, fits: int) -> int:
    """Rows per batch, the same for every batch of the run.

    ``None`` or ``"auto"`` take `fits` (from free memory) and spread the prompts evenly over as few batches as
    that allows; a number is taken as given, except that no batch is wider than the prompts.
    """
    if requested is None or requested == "auto":
        batches = math.ceil(n_prompts / fits)
        rows = math.ceil(n_prompts / batches)
        return min(fits, round_up(rows, 8)) if rows > 8 else rows
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise UserError(f"batch size must be a whole number of at least 1 or 'auto', got {requested!r}")
    return min(requested, n_prompts)


class _FillerRows(StoppingCriteria):
    """Marks the rows that only fill a short batch up to its bucket as finished from the first step."""

    def __init__(self, filler: torch.Tensor):
        self.filler = filler

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return self.filler


class ProgressStreamer(BaseStreamer):
    """Counts, step by step, the prompts that have stopped and the tokens generated, for a progress bar.

    ``generate`` hands a streamer the prompt first, then each step's tokens; finished rows keep receiving padding,
    which is not counted.
    """

    def __init__(self, bar, stops: set[int], real_rows: int):
        self.bar = bar
        self.stops = stops
        self.running = [True] * real_rows
        self.tokens = 0
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()[: len(self.running)]):
            if not self.running[row]:
                continue
            if token in self.stops:
                self.running[row] = False
                self.bar.update(1)
            else:
                self.tokens += 1
        self.bar.add_tokens(self.tokens)
        self.tokens = 0

    def end(self):
        self.bar.update(sum(self.running))  # rows that hit the length limit
        self.running = [False] * len(self.running)


class GenerationProgress:
    """A tqdm bar over prompts, with the generated tokens per second as its postfix."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            unit="prompt",
            desc="generating",
            disable=not enabled,
            file=sys.stderr,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        self.tokens = 0
        self.started = time.perf_counter()
        self._shown = 0.0

    def update(self, prompts: int) -> None:
        if prompts:
            self.bar.update(prompts)

    def add_tokens(self, count: int) -> None:
        self.tokens += count
        now = time.perf_counter()
        if now - self._shown >= 1.0:
            self._shown = now
            self.bar.set_postfix_str(f"{self.tokens / (now - self.started):,.0f} tok/s", refresh=False)

    def close(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.bar.set_postfix_str(
            f"{self.tokens:,} tokens, {self.tokens / max(elapsed, 1e-9):,.0f} tok/s", refresh=False
        )
        self.bar.close()


def fast_generation_config(base: GenerationConfig, cache_len: int, plan: DecodePlan) -> GenerationConfig:
    """`base` with the static cache of length `cache_len`, compiled decoding where the plan allows it."""
    config = copy.deepcopy(base)
    config.cache_implementation = "static"
    config.max_cache_len = cache_len
    config.disable_compile = not plan.compiled
    return config


def left_pad(prompts: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of `prompts`, left-padded with `pad` to the longest."""
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return input_ids, attention_mask


def generate_ids(
    model,
    prompts: list[list[int]],
    generation_config: GenerationConfig,
    pad: int,
    stops: set[int],
    batch_size: int | str | None = "auto",
    fast: bool = True,
    progress: bool = True,
    streamer=None,
    min_cache_len: int = 0,
) -> list[list[int]]:
    """New token ids for each of `prompts` (in their order); a row that stopped ends in padding after its stop.

    `min_cache_len` sizes the cache for later, longer calls (a chat), so that they reuse the compiled step.

    ``fast=False`` is the plain path: transformers' default dynamic cache, batches as given, nothing padded
    beyond the batch's longest prompt (the reference the fast path is checked against).
    """
    if not prompts:
        return []
    device = _model_device(model)
    longest = max(len(p) for p in prompts)
    max_new = generation_config.max_new_tokens
    config, static = generation_config, False
    if fast:
        plan = decode_plan(model)
        note_once(plan)
        cache_len = max(cache_length(longest, max_new), min_cache_len)
        fits = auto_batch_size(model, cache_len, longest) if batch_size in (None, "auto") else 1
        rows = batch_rows(batch_size, len(prompts), fits)
        static = plan.static
        if static:
            config = fast_generation_config(generation_config, cache_len, plan)
            use_gqa_decode_attention(model)
    else:
        rows = batch_rows(CPU_BATCH if batch_size in (None, "auto") else batch_size, len(prompts), 1)
    # Longest first: similar lengths share a batch, and the widest batch (the most memory) comes first.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    answers: list[list[int] | None] = [None] * len(prompts)
    bar = GenerationProgress(len(prompts), enabled=progress and streamer is None)
    try:
        for start in range(0, len(order), rows):
            chunk = order[start : start + rows]
            batch = [prompts[i] for i in chunk]
            criteria = None
            if static and len(batch) < rows:  # fill the bucket, so the compiled step keeps its shape
                filler = torch.zeros(rows, dtype=torch.bool, device=device)
                filler[len(batch) :] = True
                batch += [batch[-1]] * (rows - len(batch))
                criteria = StoppingCriteriaList([_FillerRows(filler)])
            input_ids, attention_mask = left_pad(batch, pad, device)
            counter = ProgressStreamer(bar, stops, len(chunk)) if streamer is None else streamer
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                stopping_criteria=criteria,
                streamer=counter,
            )
            for row, index in enumerate(chunk):
                answers[index] = output[row, input_ids.shape[1] :].tolist()
    finally:
        bar.close()
    return answers  # type: ignore[return-value]


def warm_up(model, generation_config: GenerationConfig, pad: int, prompt: list[int], cache_len: int) -> None:
    """Compile the decoding step for one row and `cache_len` before the first real answer (chat)."""
    plan = decode_plan(model)
    note_once(plan)
    if not plan.compiled:
        return
    use_gqa_decode_attention(model)
    config = fast_generation_config(generation_config, cache_len, plan)
    config.max_new_tokens = 4  # compiling happens on the first decoding steps; the length does not matter
    input_ids, attention_mask = left_pad([prompt], pad, _model_device(model))
    model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
