"""Answering conversations: one turn, a batch (through the fast path of :mod:`.generation`), or a chat."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TextIO

import torch
from transformers import TextIteratorStreamer, TextStreamer, set_seed

from ..template import encode_prompt, pad_token_id, stop_token_ids
from . import generation
from .sampling import SamplingConfig


@dataclass
class GenerationResult:
    """One answer: its text, whether it ended on a stop token, and how many tokens it took (stop excluded)."""

    text: str
    stopped_on_eos: bool
    new_tokens: int

    @property
    def hit_length_limit(self) -> bool:
        return not self.stopped_on_eos


def _answer(tokenizer, new_ids: list[int], stops: set[int]) -> GenerationResult:
    end = next((i for i, tok in enumerate(new_ids) if tok in stops), None)
    answer_ids = new_ids if end is None else new_ids[:end]
    text = tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
    return GenerationResult(text=text, stopped_on_eos=end is not None, new_tokens=len(answer_ids))


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    conversations: list[list[dict]],
    batch_size: int | str | None = "auto",
    fast: bool = True,
    progress: bool = True,
    **sampling,
) -> list[GenerationResult]:
    """Answer each conversation (a message list ending with a user turn), `batch_size` at a time.

    `batch_size` is a number, or ``"auto"``/None: as many as the free GPU memory holds (8 on a CPU). Prompts are
    left-padded with ``</s>`` and masked out, so a prompt's answer does not depend on its neighbours under greedy
    decoding. `fast` (default) is the static-cache, compiled path of :mod:`eeve_sft.inference.generation`; ``fast=False``
    is transformers' plain ``generate``. `progress` shows a progress bar on stderr. Results come back in the order
    of `conversations`.
    """
    config = SamplingConfig.from_kwargs(**sampling)
    generation_config = config.generation_config(tokenizer)
    if config.seed is not None:
        set_seed(config.seed)
    prompts = [encode_prompt(tokenizer, messages) for messages in conversations]
    stops = set(stop_token_ids(tokenizer))
    new_ids = generation.generate_ids(
        model,
        prompts,
        generation_config,
        pad_token_id(tokenizer),
        stops,
        batch_size=batch_size,
        fast=fast,
        progress=progress,
    )
    return [_answer(tokenizer, ids, stops) for ids in new_ids]


def chat_cache_length(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """A chat's cache length: the model's context, so every turn of a growing conversation reuses one compile."""
    context = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", 0) or 0
    return max(context, generation.cache_length(prompt_tokens, max_new_tokens))


@torch.inference_mode()
def generate(model, tokenizer, messages: list[dict], streamer=None, fast: bool = True, **sampling) -> str:
    """Answer one conversation; `streamer` (e.g. :class:`AnswerStreamer`) receives tokens as they come.

    The fast path sizes its cache for the model's whole context (compiled once for a chat); ``fast=False`` is
    plain ``generate``, which pays no compile for a single answer.
    """
    config = SamplingConfig.from_kwargs(**sampling)
    if config.seed is not None:
        set_seed(config.seed)
    prompt = encode_prompt(tokenizer, messages)
    stops = set(stop_token_ids(tokenizer))
    compiled = fast and generation.decode_plan(model).compiled
    cache_len = chat_cache_length(model, len(prompt), config.max_new_tokens) if compiled else 0
    [new_ids] = generation.generate_ids(
        model,
        [prompt],
        config.generation_config(tokenizer),
        pad_token_id(tokenizer),
        stops,
        batch_size=1,
        fast=fast,
        progress=False,
        streamer=streamer,
        min_cache_len=cache_len,
    )
    return _answer(tokenizer, new_ids, stops).text


@torch.inference_mode()
def warm_up_chat(model, tokenizer, sampling: SamplingConfig, system_prompt: str | None = None) -> None:
    """Compile the chat's decoding step before the first question, so every answer streams at once."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt = encode_prompt(tokenizer, [*messages, {"role": "user", "content": "."}])
    cache_len = chat_cache_length(model, len(prompt), sampling.max_new_tokens)
    generation.warm_up(model, sampling.generation_config(tokenizer), pad_token_id(tokenizer), prompt, cache_len)


class AnswerStreamer(TextStreamer):
    """Prints an answer as it is generated, without the space the template puts before it."""

    def __init__(self, tokenizer, out: TextIO | None = None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out
        self._started = False

    def on_finalized_text(self, text: str, stream_end: bool = False):
        out = self.out or sys.stdout
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        out.write(text)
        if stream_end:
            out.write("\n")
            self._started = False
        out.flush()


def stream_answer(model, tokenizer, messages: list[dict], sampling: SamplingConfig) -> Iterator[str]:
    """Answer one conversation through :func:`generate`, yielding the answer so far as tokens arrive.

    The last value is the whole answer exactly as :func:`generate` returns it. A failure in the generation
    is raised here, in the caller's thread.
    """
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["answer"] = generate(model, tokenizer, messages, streamer=streamer, **asdict(sampling))
        except BaseException as err:  # handed to the caller's thread below
            outcome["error"] = err
            streamer.end()  # let the loop below stop waiting for text

    thread = threading.Thread(target=work, name="stream-answer", daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        if text.strip():
            yield text.strip()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["answer"]


CHAT_HELP = "Type a message. /reset starts a new conversation, /exit quits."


def chat_loop(
    model,
    tokenizer,
    sampling: SamplingConfig,
    system_prompt: str | None = None,
    read: Callable[[str], str] = input,
    out: TextIO | None = None,
    augment: Callable[[str], tuple[str, list[str]]] | None = None,
) -> list[dict]:
    """Interactive multi-turn chat; returns the conversation as it stood at exit.

    History is re-rendered through the template every turn, so the model sees exactly what training showed it.
    `augment` (chat --rag) turns each user line into the turn the model sees and the sources printed after the answer.
    """
    out = out or sys.stdout
    start = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages = list(start)
    print(CHAT_HELP, file=out, flush=True)
    while True:
        try:
            line = read("\n사용자> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return messages
        if not line:
            continue
        if line == "/exit":
            return messages
        if line == "/reset":
            messages = list(start)
            print("(new conversation)", file=out, flush=True)
            continue
        sources: list[str] = []
        if augment is not None:
            line, sources = augment(line)
        messages.append({"role": "user", "content": line})
        out.write("EEVE> ")
        out.flush()
        try:
            answer = generate(model, tokenizer, messages, streamer=AnswerStreamer(tokenizer, out), **asdict(sampling))
        except KeyboardInterrupt:  # stop this answer, keep the chat
            messages.pop()
            print("\n(interrupted)", file=out, flush=True)
            continue
        messages.append({"role": "assistant", "content": answer})
        for source in sources:
            print(f"  출처 {source}", file=out, flush=True)
