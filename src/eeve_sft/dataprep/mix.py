"""The mix file: which sources to read, how their columns map onto conversations, and how each stage runs.

A mix file is YAML. It is checked whole before anything is read or written: an unknown key fails with the
closest known key, a wrong type or an out-of-range value fails naming the key, and a local source file must
exist. Relative source paths are resolved against the folder of the mix file, so a mix and its files can
move together.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..errors import UserError, yaml_problem
from ..template import ROLES

FORMAT_BY_SUFFIX = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_EVAL_FRACTION = 0.02


class MixError(Exception):
    """One problem in a mix file, described relative to the file (the loader adds the file name)."""


def _limits(low: float | None = None, high: float | None = None, *, above: float | None = None) -> dict:
    """Field metadata: inclusive bounds `low`/`high`, or an exclusive lower bound `above`."""
    return {"low": low, "high": high, "above": above}


REQUIRED = {"required": True}


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
                raise MixError(f"'{where}' maps 'messages' and also {', '.join(repr(k) for k in mixed)}; use one style")
        elif self.instruction is None or self.output is None:
            raise MixError(f"'{where}' needs 'instruction' and 'output' columns, or a 'messages' column")
        for alias, role in self.role_aliases.items():
            if role not in ROLES:
                raise MixError(f"'{where}.role_aliases.{alias}' maps to '{role}'; roles are {', '.join(ROLES)}")

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
    weight: float = field(default=1.0, metadata=_limits(above=0))
    max_rows: int | None = field(default=None, metadata=_limits(low=1))  # a seeded random subset of this many rows
    given_path: str | None = field(default=None, metadata={"internal": True})  # `path` as the mix file wrote it

    def check(self, where: str) -> None:
        if (self.hub is None) == (self.path is None):
            raise MixError(f"'{where}' needs exactly one of 'hub' (a Hub dataset id) or 'path' (a local file)")
        if self.hub is not None and self.format is not None:
            raise MixError(f"'{where}.format' applies to local files only")

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
    min_user_chars: int = field(default=2, metadata=_limits(low=0))
    max_user_chars: int = field(default=4096, metadata=_limits(low=1))
    min_assistant_chars: int = field(default=10, metadata=_limits(low=0))
    max_assistant_chars: int = field(default=8192, metadata=_limits(low=1))

    def check(self, where: str) -> None:
        for role in ("user", "assistant"):
            low, high = getattr(self, f"min_{role}_chars"), getattr(self, f"max_{role}_chars")
            if low > high:
                raise MixError(f"'{where}.min_{role}_chars' ({low}) is above '{where}.max_{role}_chars' ({high})")


@dataclass(frozen=True)
class SpecialCharFilter:
    enabled: bool = True
    max_ratio: float = field(default=0.2, metadata=_limits(0, 1))


@dataclass(frozen=True)
class RepetitionFilter:
    enabled: bool = True
    max_repeated_line_ratio: float = field(default=0.3, metadata=_limits(0, 1))
    ngram_size: int = field(default=3, metadata=_limits(1, 20))
    max_repeated_ngram_ratio: float = field(default=0.3, metadata=_limits(0, 1))
    min_ngrams: int = field(default=10, metadata=_limits(low=1))  # shorter texts are too short to judge


@dataclass(frozen=True)
class HangulFilter:
    enabled: bool = True
    min_ratio: float = field(default=0.5, metadata=_limits(0, 1))  # Hangul share of the letters
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
    threshold: float = field(default=0.85, metadata=_limits(high=1, above=0))  # estimated Jaccard similarity
    num_perm: int = field(default=128, metadata=_limits(16, 1024))
    shingle_size: int = field(default=5, metadata=_limits(1, 50))  # characters per shingle


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
    batch_size: int = field(default=256, metadata=_limits(low=1))


@dataclass(frozen=True)
class BanmalRewriteStage:
    enabled: bool = True
    share: float = field(default=0.5, metadata=_limits(0, 1))  # of output rows whose polite user turns become 반말
    batch_size: int = field(default=256, metadata=_limits(low=1))


@dataclass(frozen=True)
class SampleStage:
    enabled: bool = True
    size: int | None = field(default=None, metadata=_limits(low=1))  # None keeps every row that passes


@dataclass(frozen=True)
class SplitStage:
    enabled: bool = True
    eval_size: int | None = field(default=None, metadata=_limits(low=1))
    eval_fraction: float | None = field(default=None, metadata=_limits(high=0.5, above=0))

    def check(self, where: str) -> None:
        if self.eval_size is not None and self.eval_fraction is not None:
            raise MixError(f"'{where}' sets both 'eval_size' and 'eval_fraction'; set one")

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
    num_proc: int = field(default=2, metadata=_limits(low=1))  # worker processes for the per-row stages
    rejected_examples: int = field(default=3, metadata=_limits(low=0))  # per reason, in the data card
    normalise: NormaliseStage = field(default_factory=NormaliseStage)
    clean: CleanStage = field(default_factory=CleanStage)
    quality: QualityStage = field(default_factory=QualityStage)
    dedup: DedupStage = field(default_factory=DedupStage)
    speech_level: SpeechLevelStage = field(default_factory=SpeechLevelStage)
    banmal_rewrite: BanmalRewriteStage = field(default_factory=BanmalRewriteStage)
    sample: SampleStage = field(default_factory=SampleStage)
    split: SplitStage = field(default_factory=SplitStage)
    # Set by the loader, not by the file.
    mix_path: Path | None = field(default=None, metadata={"internal": True})
    mix_sha256: str = field(default="", metadata={"internal": True})

    def check(self, where: str) -> None:
        if not self.sources:
            raise MixError("'sources' must list at least one source")


# ---------------------------------------------------------------------------------------------------------
# Checking a parsed YAML mapping against the dataclasses above.


def _describe_type(hint: object) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        return f"a list (each {_describe_type(args[0])})"
    if origin is dict:
        return "a mapping of strings to strings"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        options = [_describe_type(a) for a in args if a is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    return str(hint)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_limits(value: object, meta: typing.Mapping, where: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high, above = meta.get("low"), meta.get("high"), meta.get("above")
    if above is not None and not value > above:
        raise MixError(f"'{where}' must be above {above}, got {value}")
    if low is not None and value < low:
        raise MixError(f"'{where}' must be at least {low}, got {value}")
    if high is not None and value > high:
        raise MixError(f"'{where}' must be at most {high}, got {value}")


def _convert(value: object, hint: object, where: str) -> object:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    wrong = MixError(f"'{where}' expects {_describe_type(hint)}, got {_show(value)}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if value is None or len(options) != 1:
            raise wrong
        try:
            return _convert(value, options[0], where)
        except MixError:
            if dataclasses.is_dataclass(options[0]) or typing.get_origin(options[0]) in (list, dict):
                raise  # the inner error names the exact key inside
            raise wrong from None
    if origin is Literal:
        if value not in args:
            raise wrong
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        return [_convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise wrong
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    raise TypeError(f"mix schema uses an unsupported type {hint!r}")  # a bug in this module, not in the file


def _build(cls: type, data: object, where: str) -> object:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MixError(f"'{where or 'the mix'}' must be a mapping of keys to values, got {_show(data)}")
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if not isinstance(key, str) or key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            full = f"{where}.{key}" if where else str(key)
            raise MixError(f"unknown key '{full}'{hint}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            values[name] = _convert(data[name], hints[name], path)
            _check_limits(values[name], f.metadata, path)
        elif f.metadata.get("required"):
            raise MixError(f"missing key '{path}'")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def _resolve_sources(mix: Mix, base: Path) -> list[Source]:
    resolved = []
    for i, source in enumerate(mix.sources):
        where = f"sources[{i}]"
        if source.path is not None:
            path = Path(source.path).expanduser()
            path = (path if path.is_absolute() else base / path).resolve()
            if not path.is_file():
                raise MixError(f"'{where}.path': file not found: {path}")
            fmt = source.format or FORMAT_BY_SUFFIX.get(path.suffix.lower())
            if fmt is None:
                raise MixError(
                    f"'{where}.path': cannot tell the format of {path.name} from its extension; set '{where}.format'"
                )
            source = dataclasses.replace(source, path=str(path), format=fmt, given_path=source.path)
        if source.name is None:
            source = dataclasses.replace(source, name=source.hub or Path(str(source.path)).stem)
        resolved.append(source)
    names = [s.name for s in resolved]
    for name in names:
        if names.count(name) > 1:
            raise MixError(f"two sources are named '{name}'; give each a unique 'name'")
    return resolved


def parse_mix(text: str, mix_path: Path) -> Mix:
    """Parse mix YAML `text` as if read from `mix_path` (relative paths resolve against its folder)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise MixError(f"not valid YAML{yaml_problem(err)}") from None
    if data is None:
        raise MixError("the file is empty; a mix needs at least 'sources'")
    mix = _build(Mix, data, "")
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
    except MixError as err:
        raise UserError(f"mix {path}: {err}") from None
