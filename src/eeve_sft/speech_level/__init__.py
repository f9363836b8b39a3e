"""Korean speech level (존댓말 / 반말) of a text, and rewriting between the two.

Labels
------
- ``polite``: every counted sentence ends in 하십시오체 or 해요체
  (``-ㅂ니다``, ``-세요``, ``-어요``, ``-죠``, noun + ``요``).
- ``banmal``: every counted sentence ends in 해체 or 해라체
  (``-어``, ``-야``, ``-지``, ``-냐``, ``-자``, ``-다``, ``-거든`` ...).
- ``mixed``: polite and banmal sentences in one text.
- ``neutral``: no sentence-final predicate at all (noun phrases, lists, numbers, code).

Only the sentence-final ending decides: a subject honorific (``할머니께서 오셨어``) is still 반말.
Fenced and inline code, markdown block quotes and quoted speech (``"..."``, ``'...'``, ``“...”``,
``‘...’``, ``「...」``, ``『...』``) are not counted; a text made of nothing but a quote is judged by the quote.

Modules: :mod:`.sentences` (what of a text is speech), :mod:`.levels` (labels and the level of an ending),
:mod:`.classifier` (labelling), :mod:`.rewrite` (morpheme edits re-spelled by Kiwi), :mod:`.banmal` and
:mod:`.polite` (the rules of each direction).
"""

from __future__ import annotations

from .banmal import to_banmal, to_banmal_batch
from .classifier import _tail_cache, classify, classify_batch, sentence_levels  # noqa: F401  (cache: tests reset it)
from .levels import BANMAL, LABELS, MIXED, NEUTRAL, POLITE, get_kiwi
from .polite import to_polite, to_polite_batch

__all__ = [
    "POLITE",
    "BANMAL",
    "MIXED",
    "NEUTRAL",
    "LABELS",
    "classify",
    "classify_batch",
    "sentence_levels",
    "to_banmal",
    "to_banmal_batch",
    "to_polite",
    "to_polite_batch",
    "get_kiwi",
]
