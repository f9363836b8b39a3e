"""BM25 over Kiwi morphemes (bm25s): content morphemes (nouns, verb and adjective stems, roots, adverbs, numbers,
foreign words) are the terms; particles and endings, which carry grammar and not topic, are left out.

The vocabulary is sorted before indexing, so the same chunks always give byte-identical index files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..speech_level import get_kiwi

# Kiwi tags (without the -R/-I irregular-conjugation suffix) that carry content.
CONTENT_TAGS = frozenset({"NNG", "NNP", "NR", "NP", "VV", "VA", "XR", "MAG", "SL", "SH", "SN"})
# Nouns and predicate stems: the "content words" an answer must share with its context (groundedness).
CONTENT_WORD_TAGS = frozenset({"NNG", "NNP", "NR", "VV", "VA", "XR", "SL", "SH", "SN"})
BM25_DIR = "bm25"


# Light verbs and the like: in almost every sentence, they only add noise to the scores.
STOPWORDS = frozenset({"하", "되", "있", "않", "어떻", "이", "그", "저", "때"})
_COMPOUND_TAGS = frozenset({"NNG", "NNP", "XPN", "XSN"})


def _terms(tokens, tags: frozenset[str]) -> list[str]:
    """Content morphemes, plus each compound that Kiwi split inside one word (비밀+번호 also gives 비밀번호).

    Kiwi splits the same compound noun differently by context ("비밀번호 규칙" keeps it whole, "비밀번호는" splits
    it), so a query and a passage would miss each other on the whole word; emitting the joined run matches both.
    """
    terms: list[str] = []
    run: list = []

    def close_run() -> None:
        if len(run) > 1:
            terms.append("".join(t.form for t in run))
        run.clear()

    for tok in tokens:
        tag = tok.tag.split("-")[0]
        if tag in _COMPOUND_TAGS and (not run or run[-1].end == tok.start):
            run.append(tok)
        else:
            close_run()
            if tag in _COMPOUND_TAGS:
                run.append(tok)
        if tag in tags and tok.form not in STOPWORDS:
            terms.append(tok.form.lower())
    close_run()
    return terms


_word_cache: dict[tuple[str, frozenset[str]], list[str]] = {}
_CACHE_LIMIT = 2_000_000


def analyze_batch(texts: Iterable[str], tags: frozenset[str] = CONTENT_TAGS) -> list[list[str]]:
    """Content morphemes of each text.

    Words (whitespace-separated) are analysed one by one, each distinct word once, in one multi-threaded Kiwi
    call, and remembered: documents repeat their words, so a large corpus costs Kiwi a small share of its text.
    It also makes the analysis of a word the same in a query as in a document, whatever surrounds it.
    """
    words_of = [text.split() for text in texts]
    if not words_of:
        return []
    if len(_word_cache) > _CACHE_LIMIT:
        _word_cache.clear()
    todo = list(dict.fromkeys(w for words in words_of for w in words if (w, tags) not in _word_cache))
    if todo:
        for word, tokens in zip(todo, get_kiwi().tokenize(todo), strict=True):
            _word_cache[(word, tags)] = _terms(tokens, tags)
    return [[t for w in words for t in _word_cache[(w, tags)]] for words in words_of]


def analyze(text: str, tags: frozenset[str] = CONTENT_TAGS) -> list[str]:
    return analyze_batch([text], tags)[0]


def content_words(text: str) -> set[str]:
    """Nouns and verb/adjective stems of `text` (the groundedness check compares these)."""
    return set(analyze(text, CONTENT_WORD_TAGS))


class LexicalIndex:
    """A bm25s index; `search` scores a query's morphemes against every chunk."""

    def __init__(self, retriever) -> None:
        self.retriever = retriever

    @classmethod
    def build(cls, chunk_terms: list[list[str]], k1: float, b: float) -> LexicalIndex:
        import bm25s
        from bm25s.tokenization import Tokenized

        vocab = {term: i for i, term in enumerate(sorted({t for terms in chunk_terms for t in terms}))}
        ids = [[vocab[t] for t in terms] for terms in chunk_terms]
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)
        return cls(retriever)

    def save(self, index_dir: Path) -> None:
        self.retriever.save(str(index_dir / BM25_DIR), show_progress=False)

    @classmethod
    def load(cls, index_dir: Path) -> LexicalIndex:
        import bm25s

        return cls(bm25s.BM25.load(str(index_dir / BM25_DIR)))

    def search(self, query_terms: list[str], top_k: int) -> list[tuple[int, float]]:
        """(chunk id, score) of the best `top_k` chunks that share at least one term with the query."""
        known = [t for t in query_terms if t in self.retriever.vocab_dict]
        if not known:
            return []
        scores = self.retriever.get_scores(known)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0]
