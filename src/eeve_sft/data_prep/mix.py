"""The mix file: which sources to read, how their columns map onto conversations, and how each stage runs.

A mix file is YAML. It is checked whole before anything is read or written, against the dataclasses below
by :func:`eeve_sft.validation.build` (the validator recipes use too): an unknown key fails with the closest
known key, a wrong type or an out-of-range value fails naming the key, and a local source file must exist.
Relative source paths are resolved against the folder of the mix file, so a mix and its files can move together.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..errors import UserError, yaml_problem
from ..template import ROLES
from ..validation import INTERNAL, REQUIRED, SchemaError, build, limits

FORMAT_BY_SUFFIX = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_EVAL_FRACTION = 0.02


@dataclass(frozen=True)
class Columns:
    """Where a source keeps its text: instruction/input/output columns, or one column of chat messages."""

    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    system: str | None = None
    messages: str | None = None
    role_key: str = "role"  # keys inside each message of a messages column
    content_key: str = "content"
    role_aliases: dict[str, str] = field(default_factory=dict)  # e.g. {human: user, gpt: assistant}

    def check(self, where: str) -> None:
        if self.messages is not None:
            mixed = [k for k in ("instruction", "input", "output", "system") if getattr(self, k) is not None]
            if mixed:
                also = ", ".join(repr(k) for k in mixed)
                raise SchemaError(f"'{where}' maps 'messages' and also {also}; use one style")
        elif self.instruction is None or self.output is None:
            raise SchemaError(f"'{where}' needs 'instruction' and 'output' columns, or a 'messages' column")
        for alias, role in self.role_aliases.items():
            if role not in ROLES:
                raise SchemaError(f"'{where}.role_aliases.{alias}' maps to '{role}'; roles are {', '.join(ROLES)}")

    def named_columns(self) -> dict[str, str]:
        """Mapping key -> column name for every column this mapping reads (checked against the source)."""
        keys = ("messages",) if self.messages is not None else ("instruction", "input", "output", "system")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class Source:
    """One input: a Hugging Face Hub dataset id (`hub`) or a local JSON/JSONL/CSV/Parquet file (`path`)."""

    columns: Columns = field(default_factory=Columns, metadata=REQUIRED)
    name: str | None = None  # defaults to the hub id or the file name
    hub: str | None = None
    path: str | None = None
    format: Literal["json", "jsonl", "csv", "parquet"] | None = None  # defaults from the file extension
    config: str | None = None  # Hub dataset configuration name
    split: str = "train"
    revision: str | None = None  # pin a Hub commit so that a rebuild reads the same rows
    weight: float = field(default=1.0, metadata=limits(above=0))
    max_rows: int | None = field(default=None, metadata=limits(low=1))  # a seeded random subset of this many rows
    given_path: str | None = field(default=None, metadata=INTERNAL)  # `path` as the mix file wrote it

    def check(self, where: str) -> None:
        if (self.hub is None) == (self.path is None):
            raise SchemaError(f"'{where}' needs exactly one of 'hub' (a Hub dataset id) or 'path' (a local file)")
        if self.hub is not None and self.format is not None:
            raise SchemaError(f"'{where}.format' applies to local files only")

    @property
    def kind(self) -> str:
        return "hub" if self.hub is not None else str(self.format)

    @property
    def location(self) -> str:
        """The Hub id, or the file path as the mix file wrote it (for reports)."""
        return str(self.hub if self.hub is not None else self.given_path or self.path)


@dataclass(frozen=True)
class NormaliseStage:
    """Mapping rows onto messages. Always on: every later stage works on messages."""

    input_separator: str = "\n\n"  # between the instruction and the input in the user turn
    keep_system: bool = True  # keep a leading system message when a source has one


@dataclass(frozen=True)
class CleanStage:
    enabled: bool = True
    unicode_nfc: bool = True
    whitespace: bool = True
    html: bool = True  # stray HTML tags and entities, outside code blocks


@dataclass(frozen=True)
class LengthFilter:
    enabled: bool = True
    min_user_chars: int = field(default=2, metadata=limits(low=0))
    max_user_chars: int = field(default=4096, metadata=limits(low=1))
    min_assistant_chars: int = field(default=10, metadata=limits(low=0))
    max_assistant_chars: int = field(default=8192, metadata=limits(low=1))

    def check(self, where: str) -> None:
        for role in ("user", "assistant"):
            low, high = getattr(self, f"min_{role}_chars"), getattr(self, f"max_{role}_chars")
            if low > high:
                raise SchemaError(f"'{where}.min_{role}_chars' ({low}) is above '{where}.max_{role}_chars' ({high})")


@dataclass(frozen=True)
class SpecialCharFilter:
    enabled: bool = True
    max_ratio: float = field(default=0.2, metadata=limits(0, 1))


@dataclass(frozen=True)
class RepetitionFilter:
    enabled: bool = True
    max_repeated_line_ratio: float = field(default=0.3, metadata=limits(0, 1))
    ngram_size: int = field(default=3, metadata=limits(1, 20))
    max_repeated_ngram_ratio: float = field(default=0.3, metadata=limits(0, 1))
    min_ngrams: int = field(default=10, metadata=limits(low=1))  # shorter texts are too short to judge


@dataclass(frozen=True)
class HangulFilter:
    enabled: bool = True
    min_ratio: float = field(default=0.5, metadata=limits(0, 1))  # Hangul share of the letters
    roles: list[Literal["user", "assistant"]] = field(default_factory=lambda: ["assistant"])


@dataclass(frozen=True)
class QualityStage:
    enabled: bool = True
    length: LengthFilter = field(default_factory=LengthFilter)
    special_chars: SpecialCharFilter = field(default_factory=SpecialCharFilter)
    repetition: RepetitionFilter = field(default_factory=RepetitionFilter)
    hangul: HangulFilter = field(default_factory=HangulFilter)


@dataclass(frozen=True)
class NearDedup:
    enabled: bool = True
    threshold: float = field(default=0.85, metadata=limits(high=1, above=0))  # estimated Jaccard similarity
    num_perm: int = field(default=128, metadata=limits(16, 1024))
    shingle_size: int = field(default=5, metadata=limits(1, 50))  # characters per shingle


@dataclass(frozen=True)
class DedupStage:
    enabled: bool = True
    exact: bool = True
    near: NearDedup = field(default_factory=NearDedup)


@dataclass(frozen=True)
class SpeechLevelStage:
    """Which assistant speech levels stay. Dropped rows are counted per label either way."""

    enabled: bool = True
    neutral: Literal["keep", "drop"] = "keep"
    banmal: Literal["keep", "drop"] = "drop"
    mixed: Literal["keep", "drop"] = "drop"
    batch_size: int = field(default=256, metadata=limits(low=1))


@dataclass(frozen=True)
class BanmalRewriteStage:
    enabled: bool = True
    share: float = field(default=0.5, metadata=limits(0, 1))  # of output rows whose polite user turns become 반말
    batch_size: int = field(default=256, metadata=limits(low=1))


@dataclass(frozen=True)
class SampleStage:
    enabled: bool = True
    size: int | None = field(default=None, metadata=limits(low=1))  # None keeps every row that passes


@dataclass(frozen=True)
class SplitStage:
    enabled: bool = True
    eval_size: int | None = field(default=None, metadata=limits(low=1))
    eval_fraction: float | None = field(default=None, metadata=limits(high=0.5, above=0))

    def check(self, where: str) -> None:
        if self.eval_size is not None and self.eval_fraction is not None:
            raise SchemaError(f"'{where}' sets both 'eval_size' and 'eval_fraction'; set one")

    def eval_rows(self, total: int) -> int:
        """How many of `total` rows go to eval (always leaving at least one for train)."""
        if not self.enabled or total < 2:
            return 0
        if self.eval_size is not None:
            wanted = self.eval_size
        else:
            fraction = DEFAULT_EVAL_FRACTION if self.eval_fraction is None else self.eval_fraction
            wanted = max(1, round(total * fraction))
        return min(wanted, total - 1)


@dataclass(frozen=True)
class Mix:
    sources: list[Source] = field(default_factory=list, metadata=REQUIRED)
    name: str | None = None  # defaults to the mix file name
    seed: int = 42
    num_proc: int = field(default=2, metadata=limits(low=1))  # worker processes for the per-row stages
    rejected_examples: int = field(default=3, metadata=limits(low=0))  # per reason, in the data card
    normalise: NormaliseStage = field(default_factory=NormaliseStage)
    clean: CleanStage = field(default_factory=CleanStage)
    quality: QualityStage = field(default_factory=QualityStage)
    dedup: DedupStage = field(default_factory=DedupStage)
    speech_level: SpeechLevelStage = field(default_factory=SpeechLevelStage)
    banmal_rewrite: BanmalRewriteStage = field(default_factory=BanmalRewriteStage)
    sample: SampleStage = field(default_factory=SampleStage)
    split: SplitStage = field(default_factory=SplitStage)
    # Set by the loader, not by the file.
    mix_path: Path | None = field(default=None, metadata=INTERNAL)
    mix_sha256: str = field(default="", metadata=INTERNAL)

    def check(self, where: str) -> None:
        if not self.sources:
            raise SchemaError("'sources' must list at least one source")


def _resolve_sources(mix: Mix, base: Path) -> list[Source]:
    resolved = []
    for i, source in enumerate(mix.sources):
        where = f"sources[{i}]"
        if source.path is not None:
            path = Path(source.path).expanduser()
            path = (path if path.is_absolute() else base / path).resolve()
            if not path.is_file():
                raise SchemaError(f"'{where}.path': file not found: {path}")
            fmt = source.format or FORMAT_BY_SUFFIX.get(path.suffix.lower())
            if fmt is None:
                raise SchemaError(
                    f"'{where}.path': cannot tell the format of {path.name} from its extension; set '{where}.format'"
                )
            source = dataclasses.replace(source, path=str(path), format=fmt, given_path=source.path)
        if source.name is None:
            source = dataclasses.replace(source, name=source.hub or Path(str(source.path)).stem)
        resolved.append(source)
    names = [s.name for s in resolved]
    for name in names:
        if names.count(name) > 1:
            raise SchemaError(f"two sources are named '{name}'; give each a unique 'name'")
    return resolved


def parse_mix(text: str, mix_path: Path) -> Mix:
    """Parse mix YAML `text` as if read from `mix_path` (relative paths resolve against its folder)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SchemaError(f"not valid YAML{yaml_problem(err)}") from None
    if data is None:
        raise SchemaError("the file is empty; a mix needs at least 'sources'")
    mix = build(Mix, data, what="the mix")
    assert isinstance(mix, Mix)
    sources = _resolve_sources(mix, mix_path.parent)
    return dataclasses.replace(
        mix,
        sources=sources,
        name=mix.name or mix_path.stem,
        mix_path=mix_path,
        mix_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_mix(path: str | Path) -> Mix:
    """Read and check a mix file; any problem raises UserError with one line naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mix file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"mix {path} is not UTF-8 text") from None
    try:
        return parse_mix(text, path.resolve())
    except SchemaError as err:
        raise UserError(f"mix {path}: {err}") from None
