"""The one validator for the project's YAML settings: recipes and mix files.

Both are checked against dataclasses before anything loads (TRL's argument classes for a recipe, those of
:mod:`eeve_sft.data_prep.mix` for a mix file), and every problem is one line that names the key: an unknown key
with the closest known one, a wrong value with what the field expects and what it got, a number out of its
bounds with the bound.

Values of the project's own dataclasses are checked strictly against their annotations and ``limits`` metadata
(:func:`build`). A recipe's values convert through TrlParser's argparse types instead
(:func:`eeve_sft.training.recipe.check_values`), so that a YAML value means exactly what the same text means as a
command-line flag; both use the helpers here for what they accept and how they report it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Literal

from .errors import UserError

REQUIRED = {"required": True}  # field metadata: the file must set this key
INTERNAL = {"internal": True}  # field metadata: set by the loader, never by the file


class SchemaError(UserError):
    """One problem in a settings file, named relative to the file (the loader adds the file name)."""


def limits(low: float | None = None, high: float | None = None, *, above: float | None = None) -> dict:
    """Field metadata: inclusive bounds `low`/`high`, or an exclusive lower bound `above`."""
    return {"low": low, "high": high, "above": above}


# --------------------------------------------------------------------------- reporting


def closest_key(key: str, known: Iterable[str]) -> str | None:
    """The known key a misspelt one most likely meant, or None.

    Closest by spelling, preferring one of the same family (``lora_rank`` -> ``lora_r``, not ``local_rank``),
    else a key that starts the other (abbreviations, which spelling similarity scores low).
    """
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=5, cutoff=0.6)
    family = [k for k in close if k.split("_")[0] == key.split("_")[0]]
    close = family[:1] or close[:1]
    if not close:
        close = [k for k in known if k.startswith(key) or key.startswith(k)][:1]
    return close[0] if close else None


def shown(value: object) -> str:
    """A value as an error message quotes it: ``null``, ``a mapping``, or its (shortened) repr."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expects(label: str, description: str, value: object) -> SchemaError:
    """The error for a value of the wrong kind: ``<label> expects <description>, got <value>``."""
    return SchemaError(f"{label} expects {description}, got {shown(value)}")


# --------------------------------------------------------------------------- what an annotation accepts


def allows_none(annotation: object) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation) or annotation is typing.Any


def allows_dict(annotation: object) -> bool:
    if annotation is dict or typing.get_origin(annotation) is dict:
        return True
    return any(allows_dict(arg) for arg in typing.get_args(annotation))


def allows_str(annotation: object) -> bool:
    return annotation is str or str in typing.get_args(annotation)


def _is_union(hint: object) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def describe(hint: object) -> str:
    """What a field of the project's dataclasses expects, in words."""
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
        return f"a list (each {describe(args[0])})"
    if origin is dict:
        return "a mapping of strings to strings"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if _is_union(hint):
        options = [describe(a) for a in args if a is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    return str(hint)


# --------------------------------------------------------------------------- the project's own dataclasses


def check_limits(value: object, meta: Mapping, where: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high, above = meta.get("low"), meta.get("high"), meta.get("above")
    if above is not None and not value > above:
        raise SchemaError(f"'{where}' must be above {above}, got {value}")
    if low is not None and value < low:
        raise SchemaError(f"'{where}' must be at least {low}, got {value}")
    if high is not None and value > high:
        raise SchemaError(f"'{where}' must be at most {high}, got {value}")


def _scalar_ok(value: object, hint: object) -> bool:
    """Strict: YAML already typed the value, so "yes" is no bool and 2.5 no integer (a bool is no number)."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def convert(value: object, hint: object, where: str) -> object:
    """`value` checked against the annotation `hint` (nested dataclasses built); SchemaError names `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    wrong = expects(f"'{where}'", describe(hint), value)
    if _is_union(hint):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if value is None or len(options) != 1:
            raise wrong
        try:
            return convert(value, options[0], where)
        except SchemaError:
            if dataclasses.is_dataclass(options[0]) or typing.get_origin(options[0]) in (list, dict):
                raise  # the inner error names the exact key inside
            raise wrong from None
    if origin is Literal:
        if value not in args:
            raise wrong
        return value
    if hint in (bool, int, float, str):
        if not _scalar_ok(value, hint):
            raise wrong
        return float(value) if hint is float else value
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        return [convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise wrong
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    raise TypeError(f"settings schema uses an unsupported type {hint!r}")  # a bug in the schema, not in the file


def build(cls: type, data: object, where: str = "", *, what: str = "the file") -> object:
    """An instance of dataclass `cls` from a parsed YAML mapping, every key and value checked.

    A null section means all defaults. After its fields, an object's own ``check(where)`` method (if any) checks
    rules across fields. `what` names the whole file in the error for a top level that is not a mapping.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SchemaError(f"'{where or what}' must be a mapping of keys to values, got {shown(data)}")
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if not isinstance(key, str) or key not in known:
            close = closest_key(str(key), known)
            hint = f"; did you mean '{close}'?" if close else f"; known keys: {', '.join(known)}"
            full = f"{where}.{key}" if where else str(key)
            raise SchemaError(f"unknown key '{full}'{hint}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            values[name] = convert(data[name], hints[name], path)
            check_limits(values[name], f.metadata, path)
        elif f.metadata.get("required"):
            raise SchemaError(f"missing key '{path}'")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj
