"""Loading conversations and turning them into the exact token ids and labels the trainer sees.

Labels come from transformers' ``return_assistant_tokens_mask`` on the template's ``{% generation %}`` blocks:
the same call TRL's ``assistant_only_loss=True`` makes. We make it here, before the dataset reaches
``SFTTrainer``, for two reasons: examples whose trained tokens are all truncated away are dropped *and
counted* (TRL drops them silently, and not at all when packing), and ``scripts/preview_data.py`` shows the
very ids and labels that training uses. SFTTrainer then keeps our ``labels`` column as it is and only packs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, load_dataset

from ..errors import UserError, one_line
from ..hub import check_dataset, looked_for
from ..jsonfiles import iter_jsonl
from ..template import ROLES

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_FILE_FORMATS = {".jsonl", ".parquet"}  # in a dataset directory; .json files there are metadata


def load_splits(dataset_name: str, dataset_config: str | None = None) -> DatasetDict:
    """Load a Hub dataset id, a local JSON/JSONL/Parquet file, or a directory of split files.

    A directory (the output of ``data_prep/build_dataset.py``) gives one split per ``.jsonl`` or ``.parquet``
    file: ``train.jsonl`` becomes ``train``, ``eval.jsonl`` becomes ``eval``. Other files there (``stats.json``,
    ``data_card.md``) are metadata and are not read.
    """
    if not dataset_name:
        raise UserError("no dataset_name given: set it in the recipe or pass --dataset_name")
    path = Path(dataset_name).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SPLIT_FILE_FORMATS)
        if not files:
            raise UserError(f"dataset directory {path} holds no .jsonl or .parquet split files")
        kinds = {LOCAL_FORMATS[p.suffix] for p in files}
        if len(kinds) > 1:
            raise UserError(f"dataset directory {path} mixes JSON and Parquet files; keep one format")
        return _load_local(kinds.pop(), {p.stem: str(p) for p in files}, path)
    check_dataset(dataset_name, tuple(LOCAL_FORMATS))
    if path.is_file():
        if path.suffix not in LOCAL_FORMATS:
            raise UserError(f"dataset file {path} must end in .jsonl, .json or .parquet")
        return _load_local(LOCAL_FORMATS[path.suffix], {"train": str(path)}, path)
    try:
        return load_dataset(dataset_name, name=dataset_config)
    except (OSError, ValueError) as err:  # ConnectionError and DatasetNotFoundError are OSErrors
        raise UserError(
            f"dataset '{dataset_name}' is not a local file or directory and cannot be loaded from the Hub: "
            f"{one_line(err)}{looked_for(path)}"
        ) from None


def _load_local(kind: str, files: dict[str, str], where: Path) -> DatasetDict:
    for split, file in files.items():
        _check_split_file(Path(file), split)
    try:
        return load_dataset(kind, data_files=files)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as err:
        raise UserError(f"cannot read {where}: {one_line(err.__cause__ or err)}") from None


def _check_split_file(path: Path, split: str) -> None:
    """Read a JSON Lines split once before ``datasets`` does: a bad line is reported by its file and 1-based line
    (Arrow names a 0-based row, after logging its own error), and an empty file as empty (Arrow stops with a bare
    StopIteration)."""
    empty = f"{path} is empty: split '{split}' has no rows"
    if path.suffix == ".jsonl":
        if not sum(1 for _ in iter_jsonl(path)):
            raise UserError(empty)
    elif path.stat().st_size < 1 << 16 and not path.read_bytes().strip():  # a large file is not blank
        raise UserError(empty)


def select_splits(
    splits: DatasetDict, train_split: str, eval_split: str | None, eval_fraction: float, seed: int
) -> tuple[Dataset, Dataset | None]:
    """Pick the train and eval splits; hold out `eval_fraction` of train when asked and no eval split exists."""
    if train_split not in splits:
        raise UserError(f"dataset has no split '{train_split}' (dataset_train_split); it has {sorted(splits)}")
    train = splits[train_split]
    if eval_split is None:
        return train, None
    if eval_split in splits:
        return train, splits[eval_split]
    if eval_fraction > 0:
        held = train.train_test_split(test_size=eval_fraction, seed=seed)
        return held["train"], held["test"]
    raise UserError(
        f"evaluation is on but the dataset has no split '{eval_split}' (dataset_test_split); it has "
        f"{sorted(splits)}: name one, set eval_fraction to hold out part of train, or set eval_strategy: no"
    )


def conversation_problem(messages: object) -> str | None:
    """Why `messages` is not a trainable conversation, or None when it is."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {i} is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}"
        if not isinstance(content, str) or not content.strip():
            return f"message {i} ({role}) has empty or non-text content"
        if role == "system" and i != 0:
            return f"message {i} is a system message; only the first message may be one"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            return f"turns must alternate user/assistant starting with user; turn {i} is {message['role']}"
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        return "a conversation must end with an assistant turn"
    return None


def check_conversations(dataset: Dataset, split: str, dataset_name: str | None = None) -> None:
    """Fail on the first row that is not a valid conversation, naming where it is (file and 1-based line when
    `dataset_name` is local) and the problem. Check a split as loaded, before any shuffle or hold-out."""
    if "messages" not in dataset.column_names:
        raise UserError(f"{split} split has no 'messages' column; it has {dataset.column_names}")
    for index, messages in enumerate(dataset["messages"]):
        problem = conversation_problem(messages)
        if problem:
            where = row_location(dataset_name, split, index) if dataset_name else f"{split} row {index + 1}"
            raise UserError(f"{where}: {problem}")


def conversations_digest(dataset: Dataset, columns: tuple[str, ...] = ("messages",)) -> str:
    """SHA-256 of a split's conversations (`columns` of each row: messages, or a pair's prompt, chosen and
    rejected) in their order: the same rows give the same digest wherever the file lies and whatever its
    modification time (a datasets fingerprint changes with both)."""
    digest = hashlib.sha256()
    for batch in dataset.select_columns(list(columns)).iter(batch_size=1024):
        for row in zip(*(batch[column] for column in columns), strict=True):
            for value in row:
                digest.update(json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()


def split_file(dataset_name: str, split: str) -> Path | None:
    """The local file a split of `dataset_name` was read from, or None for a Hub dataset."""
    path = Path(dataset_name).expanduser()
    if path.is_dir():
        return next((p for p in sorted(path.iterdir()) if p.stem == split and p.suffix in SPLIT_FILE_FORMATS), None)
    return path if path.is_file() else None


def row_location(dataset_name: str, split: str, index: int) -> str:
    """Where row `index` of a split comes from, as a user finds it: ``FILE line N`` for JSON Lines (blank lines
    are skipped by the reader, so they are counted here), ``FILE row N`` otherwise; 1-based."""
    path = split_file(dataset_name, split)
    if path is None:
        return f"dataset '{dataset_name}' split '{split}' row {index + 1}"
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as handle:
            rows = (number for number, line in enumerate(handle, start=1) if line.strip())
            line = next((n for i, n in enumerate(rows) if i == index), None)
        if line is not None:
            return f"{path} line {line}"
    return f"{path} row {index + 1}"


@dataclass
class TokenizeStats:
    examples: int
    truncated: int
    dropped_no_trained_tokens: int

    def as_dict(self) -> dict:
        return {
            "examples": self.examples,
            "truncated": self.truncated,
            "dropped_no_trained_tokens": self.dropped_no_trained_tokens,
        }


def tokenize_conversation(
    messages: list[dict], tokenizer, max_length: int | None, assistant_only_loss: bool = True
) -> dict:
    """Token ids and labels of one conversation, truncated to `max_length` (keeping the start).

    Labels equal the ids on assistant tokens (each answer and the eos that ends it) and are -100 elsewhere.
    """
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    input_ids = list(encoded["input_ids"])
    mask = encoded["assistant_masks"]
    if assistant_only_loss:
        labels = [tok if m else IGNORE_INDEX for tok, m in zip(input_ids, mask, strict=True)]
    else:
        labels = list(input_ids)
    full_length = len(input_ids)
    if max_length is not None and full_length > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "num_trained": sum(label != IGNORE_INDEX for label in labels),
        "was_truncated": full_length > len(input_ids),
    }


def tokenize_dataset(
    dataset: Dataset,
    tokenizer,
    max_length: int | None,
    assistant_only_loss: bool = True,
    num_proc: int | None = None,
    keep_messages: bool = False,
) -> tuple[Dataset, TokenizeStats]:
    """Tokenize every conversation; drop (and count) the ones left with no trained token after truncation."""

    def encode(batch: dict) -> dict:
        rows = [tokenize_conversation(m, tokenizer, max_length, assistant_only_loss) for m in batch["messages"]]
        return {key: [row[key] for row in rows] for key in rows[0]}

    remove = [c for c in dataset.column_names if not (keep_messages and c == "messages")]
    encoded = dataset.map(
        encode, batched=True, batch_size=256, remove_columns=remove, num_proc=num_proc, desc="Tokenizing"
    )
    truncated = sum(encoded["was_truncated"])
    kept = encoded.filter(lambda n: n > 0, input_columns="num_trained", num_proc=num_proc)
    stats = TokenizeStats(len(kept), truncated, len(encoded) - len(kept))
    if stats.dropped_no_trained_tokens:
        logger.warning(
            "dropped %d of %d examples: truncation to max_length=%s left them no trained token",
            stats.dropped_no_trained_tokens,
            len(encoded),
            max_length,
        )
    if not len(kept):
        raise UserError(f"no example keeps a trained token at max_length={max_length}: raise max_length")
    return kept.remove_columns(["num_trained", "was_truncated"]), stats
