"""Decoding settings for chat and evaluation, importable without torch (the CLIs show them in --help)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..errors import UserError
from ..template import special_token_ids

if TYPE_CHECKING:
    from transformers import GenerationConfig


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings. The defaults are the original chat script's; `do_sample=False` is greedy."""

    max_new_tokens: int = 512
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    seed: int | None = None
    min_new_tokens: int = 0  # no stop before this many tokens: benchmarks force a fixed length with it

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise UserError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise UserError(f"temperature must be above 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"top_k must be 0 (off) or more, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise UserError(f"repetition_penalty must be above 0, got {self.repetition_penalty}")

    @classmethod
    def from_kwargs(cls, **overrides) -> SamplingConfig:
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
        return cls(**overrides)

    def generation_config(self, tokenizer) -> GenerationConfig:
        """A complete GenerationConfig, so the model's own saved defaults never leak into a run."""
        from transformers import GenerationConfig

        common = dict(
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            **special_token_ids(tokenizer),
        )
        if self.min_new_tokens:
            common["min_new_tokens"] = self.min_new_tokens
        if not self.do_sample:
            # Greedy states the values under which the sampling settings do nothing: left unset, generate() would
            # fill them in from the model's saved generation_config.json (a merged model's say temperature 0.7),
            # and then warn that greedy decoding ignores them.
            return GenerationConfig(do_sample=False, temperature=1.0, top_p=1.0, top_k=50, **common)
        return GenerationConfig(
            do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, **common
        )


# Greedy and no repetition penalty: answers are reproducible and do not depend on the batch they were in
# (a penalty would also penalise the </s> padding of shorter prompts).
EVAL_SAMPLING = SamplingConfig(max_new_tokens=512, do_sample=False, repetition_penalty=1.0)


def add_chat_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """The decoding flags of the chat CLIs (chat.py, web.py), defaulting to :class:`SamplingConfig`'s values."""
    defaults = SamplingConfig()
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--seed", type=int, help="seed for reproducible sampling")


def chat_sampling(args: argparse.Namespace) -> SamplingConfig:
    """The SamplingConfig the flags of :func:`add_chat_sampling_flags` ask for (a bad value is a UserError)."""
    return SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
