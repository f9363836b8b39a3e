"""Exact and near-duplicate removal.

Both compare a conversation's *dedup text*: every user and assistant turn (block quotes left out), case-folded, with whitespace and
punctuation removed. Exact duplicates share a hash of that text. Near duplicates are found with MinHash over
character shingles and datasketch's MinHash LSH index; each candidate the index returns is confirmed by its
estimated Jaccard similarity. The first occurrence (in mix order, then row order) is kept.

Signatures are computed with numpy for whole batches of conversations at once. They are exactly the
hash values datasketch's own ``MinHash(num_perm, seed, hashfunc=shingle_hash).update_batch(shingles)``
gives (its default "affine32" scheme), only without a Python call per shingle.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from .normalise import Messages

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SCHEME = "affine32"

_NOT_WORD = re.compile(r"[\W_]+")
_BLOCK_QUOTE = re.compile(r"^[ \t]*>.*$", re.MULTILINE)
_POLY = np.uint64(0x100000001B3)  # odd multiplier of the shingle polynomial hash
_CHUNK_SHINGLES = 1 << 17  # shingles per numpy batch: num_perm x this x 4 bytes stays around 64 MiB
# Band layout weights (false positive, false negative): a false candidate costs one Jaccard check, a miss
# keeps a duplicate, so the index is tuned to miss less (at 0.85, 87% recall at the threshold instead of 46%).
LSH_WEIGHTS = (0.1, 0.9)


def dedup_text(messages: Messages) -> str:
    """What duplicates are judged on: the user and assistant turns without case, spacing or punctuation.

    Markdown block-quote lines are left out: rows generated from documents quote the same retrieved passages
    before different questions (see eeve_sft.retrieval.context), and the passages would make them look alike.
    """
    joined = "\n".join(_BLOCK_QUOTE.sub("", m["content"]) for m in messages if m["role"] != "system")
    return _NOT_WORD.sub("", joined.casefold())


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def shingle_hash(shingle: str) -> int:
    """32-bit hash of one shingle; the vectorised code below computes the same for every shingle at once."""
    h = 0
    for char in shingle:
        h = (h * int(_POLY) + ord(char)) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 32)) & 0xFFFFFFFF


def shingles(text: str, size: int) -> list[str]:
    """Character shingles of `text`; a text shorter than `size` is one shingle padded with NUL."""
    if len(text) < size:
        return [text + "\0" * (size - len(text))]
    return [text[i : i + size] for i in range(len(text) - size + 1)]


def _fmix32(values: np.ndarray) -> np.ndarray:
    # MurmurHash3's finaliser, as datasketch applies it to every input hash before permuting.
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for `num_perm` and `seed`."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


def _shingle_hashes(texts: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every shingle of every text, concatenated, and where each text's shingles start."""
    arrays = []
    for text in texts:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if len(codes) < size:
            codes = np.concatenate([codes, np.zeros(size - len(codes), dtype=np.uint32)])
        arrays.append(codes)
    counts = np.array([len(c) - size + 1 for c in arrays], dtype=np.int64)
    lengths = np.array([len(c) for c in arrays], dtype=np.int64)
    codes = np.concatenate(arrays).astype(np.uint64)
    text_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    shingle_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # Position in `codes` of each shingle's first character, skipping shingles that span two texts.
    positions = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(text_starts - shingle_starts, counts)
    with np.errstate(over="ignore"):
        h = np.zeros(len(positions), dtype=np.uint64)
        for offset in range(size):
            h = h * _POLY + codes[positions + offset]
    folded = (h ^ (h >> np.uint64(32))).astype(np.uint32)
    return folded, shingle_starts


def signatures(texts: list[str], num_perm: int, seed: int, size: int) -> np.ndarray:
    """MinHash hash values, one row of `num_perm` uint32 per text."""
    a, b = permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start, stop in _batches(texts, size, max(1, _CHUNK_SHINGLES * 128 // num_perm)):
        hashes, starts = _shingle_hashes(texts[start:stop], size)
        mixed = _fmix32(hashes)
        with np.errstate(over="ignore"):
            permuted = a[:, None] * mixed[None, :] + b[:, None]
        out[start:stop] = np.minimum.reduceat(permuted, starts, axis=1).T
    return out


def _batches(texts: list[str], size: int, max_shingles: int) -> Iterator[tuple[int, int]]:
    start, total = 0, 0
    for i, text in enumerate(texts):
        total += max(len(text) - size + 1, 1)
        if total >= max_shingles:
            yield start, i + 1
            start, total = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


def signatures_job(job: tuple[list[str], int, int, int]) -> np.ndarray:
    """`signatures` with its arguments in one tuple, for a process pool."""
    texts, num_perm, seed, size = job
    return signatures(texts, num_perm, seed, size)


class NearDuplicateIndex:
    """Keeps the signatures of kept conversations; says whether a new one nearly repeats one of them."""

    def __init__(self, threshold: float, num_perm: int, seed: int) -> None:
        self.threshold = threshold
        self.seed = seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self.kept: dict[int, LeanMinHash] = {}

    def match_or_add(self, key: int, hashvalues: np.ndarray) -> int | None:
        """The key of a kept conversation this one nearly duplicates; None (and it is kept) when none."""
        minhash = LeanMinHash(seed=self.seed, hashvalues=hashvalues, scheme=SCHEME)
        best, best_similarity = None, self.threshold
        for candidate in sorted(self.lsh.query(minhash)):  # sorted: ties go to the earliest kept row
            similarity = minhash.jaccard(self.kept[candidate])
            if similarity > best_similarity or (best is None and similarity == best_similarity):
                best, best_similarity = candidate, similarity
        if best is not None:
            return best
        self.lsh.insert(key, minhash, check_duplication=False)
        self.kept[key] = minhash
        return None


def find_exact_duplicates(keys: Iterable[bytes]) -> list[int | None]:
    """For each key, the index of the first earlier equal key, or None."""
    first: dict[bytes, int] = {}
    out: list[int | None] = []
    for i, key in enumerate(keys):
        earlier = first.get(key)
        out.append(earlier)
        if earlier is None:
            first[key] = i
    return out
