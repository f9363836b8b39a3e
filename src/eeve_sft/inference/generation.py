"""The one batched generation path: a static KV cache, the decoding step compiled, shapes bucketed so it compiles once.

The model's forward is transformers' own: a ``StaticCache`` sized once, and on a CUDA GPU every decoding step
through the model's compiled call (``torch.compile(mode="reduce-overhead")``, CUDA graphs), as ``generate`` compiles
it. The loop around the steps is this module's (:func:`decode_static`): ``generate`` waits for the GPU after every
step to decide whether to stop, so the host's work for the next step (masks, processors, the graph's launch) adds
to every step; here the host queues steps ahead and reads the stop flags once every :data:`STOP_CHECK_EVERY` steps,
so that work overlaps the GPU's. Greedy tokens are those of ``generate``. A compiled step is specialised to its
shapes, so this module keeps them fixed for a whole run:

- the cache length is one bucket for the run (the longest prompt rounded up to :data:`CACHE_BUCKET`, plus
  ``max_new_tokens``); the model keeps its cache while the rows match and the length suffices, so later calls
  reuse the graph;
- every batch has the same number of rows: a short last batch is filled with copies of one of its prompts, marked
  finished from the first step so they never keep the batch running;
- prompts are sorted by length, so the rows of one batch need little left padding.

Decoding steps attend to the KV heads in place (:func:`sdpa_gqa_decode`) rather than through transformers' compiled
default, which repeats the whole cache for every query head each step. Rows stop on every stop id (EEVE:
``<|im_end|>`` and ``</s>``) and ``generate`` returns as soon as every row has stopped. Where compiling cannot serve,
one line on stderr says so: without a CUDA GPU the same static-cache loop runs uncompiled; bitsandbytes NF4 weights,
which transformers does not compile, use plain ``generate`` (dynamic cache) in the same sorted, wide batches, and so
does a generation config with settings the loop does not implement (:data:`LOOP_SETTINGS`).
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
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from ..errors import UserError

CACHE_BUCKET = 64  # cache lengths are multiples of this plus max_new_tokens: prompts of similar length share a graph
MAX_AUTO_BATCH = 256  # beyond this the attention over the cache outgrows what a wider batch saves
CPU_BATCH = 8  # without a GPU there is no memory to size the batch from: a fixed, small width
MEMORY_SHARE = 0.7  # of the free GPU memory, for the KV cache and the prefill activations of one batch
STOP_CHECK_EVERY = 16  # decoding steps queued between reads of the stop flags: at most this many wasted at the end

# GenerationConfig fields decode_static implements; a config that sets any other one goes through generate.
LOOP_SETTINGS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "eos_token_id",
        "pad_token_id",
        "bos_token_id",
        "cache_implementation",
        "max_cache_len",
        "disable_compile",
        "transformers_version",
    }
)

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


def loop_serves(config: GenerationConfig) -> bool:
    """Whether :func:`decode_static` implements every setting of `config` (else ``generate`` runs it)."""
    return set(config.to_diff_dict()) <= LOOP_SETTINGS


def _processors(config: GenerationConfig, prompt_width: int, device) -> LogitsProcessorList:
    """transformers' own processors for the settings of :data:`LOOP_SETTINGS`, in the order ``generate`` applies them."""
    eos = config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.min_new_tokens and eos:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_width, config.min_new_tokens, eos, device=device))
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            processors.append(TopKLogitsWarper(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p))
    return processors


def _static_cache(inner, rows: int, cache_len: int) -> tuple[StaticCache, int]:
    """The model's StaticCache and its length: reset and reused while its rows and length fit, as ``generate`` keeps
    its own (another shape means another compiled graph)."""
    held = getattr(inner, "_eeve_static_cache", None)
    if held is not None and held[0] == rows and held[1] >= cache_len:
        held[2].reset()
        return held[2], held[1]
    inner._eeve_static_cache = None  # free the old cache before allocating the new one
    cache = StaticCache(config=inner.config, max_cache_len=cache_len)
    inner._eeve_static_cache = (rows, cache_len, cache)
    return cache, cache_len


@torch.inference_mode()
def decode_static(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    cache_len: int,
    plan: DecodePlan,
    finished_after_first: torch.Tensor | None = None,
    streamer=None,
    check_every: int = STOP_CHECK_EVERY,
) -> torch.Tensor:
    """Prompt and new tokens of each row, as ``generate`` returns them under the same config, with a static cache.

    The prompt is one uncompiled forward; each new token one call of the model's compiled step (uncompiled where
    `plan` says so). Nothing waits for the GPU inside the loop except every `check_every` steps, where the stop
    flags (and, for a streamer, the tokens) are read; a `streamer` gets the prompt, then each step's tokens, as
    ``generate`` gives them. Rows in `finished_after_first` are finished after their first token (batch fillers).
    """
    inner = _transformers_model(model)
    rows, width = input_ids.shape
    device = input_ids.device
    max_new = config.max_new_tokens
    cache, cache_len = _static_cache(inner, rows, cache_len)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    eos = config.eos_token_id
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), dtype=torch.long, device=device)
    processors = _processors(config, width, device)
    step_call = inner.get_compiled_call(config.compile_config) if plan.compiled else inner.__call__

    sequences = torch.full((rows, width + max_new), pad, dtype=torch.long, device=device)
    sequences[:, :width] = input_ids
    # The prompt's padding masked, every later slot open: causality closes the slots not yet written.
    open_slots = torch.ones(rows, cache_len, dtype=torch.bool, device=device)
    open_slots[:, :width] = attention_mask.bool()
    slot = torch.arange(cache_len, device=device)
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    position = positions[:, -1:].clone()
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    active = torch.zeros(max_new, dtype=torch.bool, device=device)  # some row still running before step t
    if streamer is not None:
        streamer.put(input_ids.cpu())

    outputs = inner(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = outputs.logits[:, -1].to(dtype=torch.float32, copy=True)
    del outputs
    flushed = 0
    for step in range(max_new):
        active[step] = unfinished.any()
        scores = processors(sequences[:, : width + step], logits)
        if config.do_sample:
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            tokens = scores.argmax(dim=-1)
        tokens = torch.where(unfinished, tokens, pad)
        sequences[:, width + step] = tokens
        unfinished &= ~torch.isin(tokens, eos)
        if step == 0 and finished_after_first is not None:
            unfinished &= ~finished_after_first
        last = step == max_new - 1
        if last or (step + 1) % check_every == 0:
            flushed = _flush(sequences, active, width, flushed, step + 1, streamer)
            if last or not bool(unfinished.any()):
                break
        position = position + 1
        mask = (open_slots & (slot <= width + step))[:, None, None, :]
        outputs = step_call(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        logits = outputs.logits[:, -1].to(dtype=torch.float32, copy=True)
        del outputs
    steps = int(active.sum())  # the steps generate runs: the first, then one more while any row is running
    if streamer is not None:
        streamer.end()
    return sequences[:, : width + steps]


def _flush(sequences, active, width: int, start: int, stop: int, streamer) -> int:
    """Hand the streamer the tokens of steps [start, stop) that ``generate`` would have run; returns `stop`."""
    if streamer is not None and stop > start:
        ran = active[start:stop].tolist()
        block = sequences[:, width + start : width + stop].cpu()
        for column, running in enumerate(ran):
            if running:
                streamer.put(block[:, column])
    return stop


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
    config, static, own_loop = generation_config, False, False
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
            own_loop = loop_serves(config)
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
            if own_loop:
                output = decode_static(
                    model,
                    input_ids,
                    attention_mask,
                    config,
                    cache_len,
                    plan,
                    finished_after_first=criteria[0].filler if criteria else None,
                    streamer=counter,
                    check_every=STOP_CHECK_EVERY if streamer is None else 1,  # a caller's streamer shows each token
                )
            else:
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
    if loop_serves(config):
        decode_static(model, input_ids, attention_mask, config, cache_len, plan)
    else:
        model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
