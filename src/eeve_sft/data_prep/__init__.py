"""The training-set builder: a mix file of sources in, train.jsonl/eval.jsonl plus stats and a data card out.

Modules, one job each: ``mix`` (the mix file and its checks), ``sources`` (reading Hub and local files),
``normalise`` (rows to messages), ``clean``, ``quality``, ``dedup``, ``speech_level_stages`` (the speech-level
filter and the 반말 rewrite), ``sample`` (weighted sampling and the split), ``ledger`` (counts), ``data_card``
(stats.json and data_card.md), ``parallel`` (worker processes) and
``build`` (the order of it all).
"""

from .build import BuildResult, build_dataset
from .mix import Mix, load_mix

__all__ = ["BuildResult", "Mix", "build_dataset", "load_mix"]
