"""Recipes: one YAML file per experiment, mapped onto TRL's own dataclasses and checked before anything loads.

A recipe's keys are the fields of TRL's ``ScriptArguments``, ``SFTConfig`` and ``ModelConfig`` plus the few
project keys of :class:`ProjectArguments` and ``base_recipe`` (inherit another recipe, override some keys).
Recipe values and command-line overrides go through the same ``TrlParser``, so a value means the same thing
in both places. Every mistake raises :class:`UserError` with one line that names the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib.util
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from ..errors import UserError, one_line, yaml_problem
from ..validation import allows_dict, allows_none, allows_str, closest_key, expects

BASE_KEY = "base_recipe"

# Keys that older TRL/transformers releases used, and what replaced them.
RENAMED_KEYS = {
    "max_seq_length": "max_length",
    "torch_dtype": "dtype",
    "evaluation_strategy": "eval_strategy",
    "use_flash_attention_2": "attn_implementation",
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",
    "dataset_batch_size": "dataset_num_proc",
    "warmup_ratio": "warmup_steps (a float below 1 is a ratio)",
    "num_of_sequences": "max_length",
    "chars_per_token": "max_length",
}


@dataclass
class ProjectArguments:
    """The few keys a recipe needs beyond TRL's own."""

    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System line used when a row has no system message (default: EEVE's official line)."},
    )
    eval_fraction: float = field(
        default=0.0,
        metadata={"help": "Hold out this share of the train split for evaluation when the data has no eval split."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without eval_loss improving."}
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "Smallest eval_loss improvement that counts as one."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into an output_dir that already holds a run."}
    )
    fused_lora: bool = field(
        default=False,
        metadata={
            "help": "Compute each LoRA projection (base + dropout + A/B) in one autograd function: the same "
            "arithmetic in fewer passes over memory (eeve_sft.training.fused_lora)."
        },
    )
    float8_base: bool = field(
        default=False,
        metadata={
            "help": "Hold the frozen base projections in FP8 and run their products in FP8 (LoRA on an unquantized "
            "model, a GPU of compute capability 8.9 or newer; needs torchao: eeve_sft.training.float8)."
        },
    )


DATACLASSES = (ScriptArguments, SFTConfig, ModelConfig, ProjectArguments)


@dataclass
class Recipe:
    """A parsed recipe: TRL's three argument objects, the project's, and the resolved key/value mapping."""

    script: ScriptArguments
    training: SFTConfig
    model: ModelConfig
    project: ProjectArguments
    resolved: dict  # every key the recipe or the command line set, after base recipes and overrides
    notes: list[str] = field(default_factory=list)  # keys the parser set on the user's behalf, for the log


def make_parser() -> TrlParser:
    parser = TrlParser(DATACLASSES)

    def fail(message: str) -> typing.NoReturn:
        raise UserError(message)

    parser.error = fail  # argparse would print usage and exit; we want one line and our own exit path
    parser.allow_abbrev = False  # a misspelt flag must fail, not silently match a longer one
    return parser


def _field_types() -> dict[str, object]:
    hints: dict[str, object] = {}
    for cls in DATACLASSES:
        resolved = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                hints[f.name] = resolved.get(f.name, f.type)
    return hints


FIELD_TYPES = _field_types()
VALID_KEYS = frozenset(FIELD_TYPES) | {BASE_KEY}


def suggest_key(key: str) -> str:
    """The hint appended to an unknown-key error: the renamed key, or the closest valid one."""
    if key in RENAMED_KEYS:
        return f"; it was renamed, use '{RENAMED_KEYS[key]}'"
    close = closest_key(key, VALID_KEYS)
    return f"; did you mean '{close}'?" if close else ""


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe YAML and merge in its base recipes (the recipe's own keys win)."""
    path = Path(path)
    if not path.is_file():
        where = f"recipe file not found: {path}"
        if _seen:  # a base_recipe: say where it was looked for, since it is relative to another file
            where += f" (looked for {path.resolve()}; base_recipe is relative to the recipe that names it, {_seen[-1]})"
        elif not path.is_absolute():
            where += f" (looked for {path.resolve()}, relative to the current directory)"
        raise UserError(where)
    resolved_path = path.resolve()
    if resolved_path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved_path))
        raise UserError(f"recipe {path}: base_recipe chain loops: {chain}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"recipe {path} is not valid YAML{yaml_problem(err)}") from None
    except UnicodeDecodeError:
        raise UserError(f"recipe {path} is not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or key not in VALID_KEYS:
            raise UserError(f"recipe {path}: unknown key '{key}'{suggest_key(str(key))}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"recipe {path}: '{BASE_KEY}' expects a path to another recipe, got {base!r}")
    merged = read_recipe(path.parent / base, (*_seen, resolved_path))
    merged.update(data)
    return merged


def _describe(action: argparse.Action, annotation: object) -> str:
    if action.choices:
        return "one of " + ", ".join(str(c) for c in action.choices)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        names = [getattr(a, "__name__", str(a)) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(names)
    return getattr(annotation, "__name__", str(annotation))


def _convert_one(key: str, value: object, action: argparse.Action, annotation: object) -> object:
    """Convert a scalar the way argparse converts a command-line string, and check choices."""
    if isinstance(value, (dict, list)):
        raise expects(f"recipe key '{key}'", _describe(action, annotation), value)
    converted = value
    if action.type is not None:
        try:
            converted = action.type(value if isinstance(value, str) else str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            # HfArgumentParser gives `str | bool` fields a bool parser; a string is still a valid value there.
            if not (isinstance(value, str) and allows_str(annotation)):
                raise expects(f"recipe key '{key}'", _describe(action, annotation), value) from None
    if isinstance(converted, enum.Enum):
        converted = converted.value
    if action.choices and converted not in [getattr(c, "value", c) for c in action.choices]:
        raise expects(f"recipe key '{key}'", _describe(action, annotation), value)
    return converted


def check_values(values: dict, parser: TrlParser) -> dict:
    """Type-check and convert every recipe value with the parser's own argparse types; return the converted mapping.

    The checks and messages are those of :mod:`eeve_sft.validation`, which checks mix files too.
    """
    actions = {a.dest: a for a in parser._actions if a.dest in FIELD_TYPES}
    checked = {}
    for key, value in values.items():
        action, annotation = actions[key], FIELD_TYPES[key]
        if value is None:
            if not allows_none(annotation):
                raise expects(f"recipe key '{key}'", _describe(action, annotation), value)
            checked[key] = None
        elif isinstance(value, dict):
            if not allows_dict(annotation):
                raise expects(f"recipe key '{key}'", _describe(action, annotation), value)
            checked[key] = value
        elif action.nargs in ("+", "*"):
            items = value if isinstance(value, list) else [value]
            checked[key] = [_convert_one(key, item, action, annotation) for item in items]
        else:
            checked[key] = _convert_one(key, value, action, annotation)
    return checked


def _parses(parser: TrlParser, key: str, value: str) -> bool:
    action = next(a for a in parser._actions if a.dest == key)
    try:
        action.type is None or action.type(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        return False
    return True


def _flags_given(argv: list[str], parser: TrlParser) -> set[str]:
    """The dataclass fields that command-line flags in `argv` set."""
    by_option = {opt: a.dest for a in parser._actions for opt in a.option_strings}
    given = set()
    for token in argv:
        if token.startswith("--"):
            option = token.split("=", 1)[0]
            if option in by_option:  # HfArgumentParser gives --no_x the dest x already
                given.add(by_option[option])
    return given & set(FIELD_TYPES)


def parse_recipe(path: str | Path, overrides: list[str] | None = None, check_device: bool = True) -> Recipe:
    """Read, merge, check and parse a recipe with command-line overrides; raise UserError on any mistake.

    `check_device=False` is for tools that read a recipe without training (preview, evaluation): it skips
    TrainingArguments' check that this machine supports the recipe's bf16/fp16.
    """
    overrides = list(overrides or [])
    values = read_recipe(path)
    parser = make_parser()
    checked = check_values(values, parser)
    # argparse re-parses string defaults with the field's type; keep back the strings it would reject
    # (a `str | bool` field holding a string) and put them in after parsing.
    deferred = {k: v for k, v in checked.items() if isinstance(v, str) and not _parses(parser, k, v)}
    parser.set_defaults_with_config(**{k: (None if k in deferred else v) for k, v in checked.items()})

    namespace, remaining = parser.parse_known_args(overrides)
    given = _flags_given(overrides, parser)
    for key, value in deferred.items():
        if key not in given:
            setattr(namespace, key, value)
    if remaining:
        flag = next((t for t in remaining if t.startswith("-")), remaining[0])
        name = flag.lstrip("-").split("=", 1)[0].replace("-", "_")
        hint = suggest_key(name) if flag.startswith("-") else ""
        raise UserError(f"unknown command-line argument '{flag}'{hint}")
    followed = _follow_evaluation_off(namespace, given)

    objects = []
    for cls in DATACLASSES:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {k: v for k, v in vars(namespace).items() if k in names}
        # Previewing or validating a GPU recipe on a CPU-only machine: TrainingArguments rejects bf16/fp16
        # there, so build it without them and put the recipe's values back afterwards.
        precision = {k: kwargs[k] for k in ("bf16", "fp16") if k in kwargs} if not check_device else {}
        kwargs.update(dict.fromkeys(precision, False))
        precision = {k: v for k, v in precision.items() if v}  # only explicit true values go back
        try:
            obj = cls(**kwargs)
        except (ValueError, TypeError) as err:
            raise UserError(f"recipe {path}: {one_line(err)}") from None
        for key, value in precision.items():
            setattr(obj, key, value)
        objects.append(obj)
    script, training, model, project = objects

    resolved = dict(checked)
    for key in given | set(followed):
        value = getattr(namespace, key)
        resolved[key] = value.value if isinstance(value, enum.Enum) else value
    notes = []
    if followed:
        changes = ", ".join(f"{key}: {_yaml_value(value)}" for key, value in followed.items())
        notes.append(f"eval_strategy is 'no', so evaluation is off: also set {changes}")
    return Recipe(script, training, model, project, resolved, notes)


# Keys that only mean something while evaluation runs, and their value when eval_strategy is 'no'.
EVALUATION_KEYS = {"load_best_model_at_end": False, "early_stopping_patience": None, "eval_fraction": 0.0}


def _yaml_value(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _follow_evaluation_off(namespace: argparse.Namespace, given: set[str]) -> dict:
    """With --eval_strategy no on the command line, turn off the keys that need evaluation unless the command
    line set them too.

    One flag then turns evaluation off (TrainingArguments would refuse load_best_model_at_end without it, and
    early stopping has nothing to watch). Returns the keys changed and their new values.
    """
    strategy = getattr(namespace.eval_strategy, "value", namespace.eval_strategy)
    if strategy != "no" or "eval_strategy" not in given:  # a recipe file that says both is taken as it says
        return {}
    followed = {}
    for key, off in EVALUATION_KEYS.items():
        if key not in given and getattr(namespace, key) != off:
            setattr(namespace, key, off)
            followed[key] = off
    return followed


def dump_recipe(resolved: dict) -> str:
    """YAML text of a resolved recipe, readable by :func:`parse_recipe` (keys sorted for stable diffs)."""
    return yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True, default_flow_style=False)


def gpu_available() -> bool:
    return torch.cuda.is_available()


def _check_float8_base(recipe: Recipe) -> None:
    model, training = recipe.model, recipe.training
    if not model.use_peft or model.load_in_4bit or model.load_in_8bit:
        raise UserError(
            "float8_base: true is for LoRA on an unquantized model: set use_peft: true, load_in_4bit: false"
        )
    if importlib.util.find_spec("torchao") is None:
        raise UserError('float8_base: true needs torchao: pip install -e ".[fp8]", or set float8_base: false')
    # On a CPU torch computes the FP8 products itself (slowly: for tests); a GPU needs FP8 matrix units.
    if not training.use_cpu and gpu_available() and torch.cuda.get_device_capability() < (8, 9):
        raise UserError("float8_base: true needs a GPU with FP8 matrix units (Ada, Hopper or newer); set it false")


def check_for_training(recipe: Recipe) -> None:
    """Checks across keys that TRL leaves to fail late (after the model has loaded) or never."""
    model, training, project = recipe.model, recipe.training, recipe.project
    if not model.model_name_or_path:
        raise UserError("no model_name_or_path: set it in the recipe or pass --model_name_or_path")
    if (model.load_in_4bit or model.load_in_8bit) and not model.use_peft:
        raise UserError("a quantized model trains only through adapters: set use_peft: true (QLoRA)")
    if training.chat_template_path:
        raise UserError(
            "chat_template_path is not used: the EEVE template is fixed; change its system line with system_prompt"
        )
    if project.fused_lora and not model.use_peft:
        raise UserError("fused_lora: true needs LoRA adapters: set use_peft: true, or fused_lora: false")
    if project.float8_base:
        _check_float8_base(recipe)
    if training.packing and training.max_length is None:
        raise UserError("packing needs max_length")
    if model.attn_implementation == "flex_attention" and (training.use_cpu or not gpu_available()):
        raise UserError("attn_implementation: flex_attention trains only on a GPU (it has no CPU backward); use sdpa")
    if training.activation_offloading and (training.use_cpu or not gpu_available()):
        raise UserError(
            "activation_offloading: true needs a GPU (TRL copies activations on CUDA streams); set it false"
        )
    if training.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        raise UserError(
            'use_liger_kernel: true needs liger-kernel: pip install -e ".[liger]", or set use_liger_kernel: false'
        )
    if project.early_stopping_patience is not None:
        if project.early_stopping_patience < 1:
            raise UserError("early_stopping_patience must be at least 1 (null turns early stopping off)")
        if training.eval_strategy == "no" or not training.load_best_model_at_end or not training.metric_for_best_model:
            raise UserError(
                "early_stopping_patience needs eval_strategy steps or epoch, load_best_model_at_end: true and "
                "metric_for_best_model (e.g. eval_loss); early_stopping_patience: null turns it off"
            )
    # `accelerate launch` with a DeepSpeed config says the ZeRO stage in the environment.
    zero3 = (
        os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"
        and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    if zero3 and model.load_in_4bit and model.bnb_4bit_quant_storage != "bfloat16":
        raise UserError(
            "QLoRA under DeepSpeed ZeRO-3 needs bnb_4bit_quant_storage: bfloat16 (see recipes/eeve_banmal_zero3.yaml)"
        )
    if not 0.0 <= project.eval_fraction < 1.0:
        raise UserError(f"eval_fraction must be in [0, 1), got {project.eval_fraction}")


KEY_GROUPS = {
    ScriptArguments: "data (trl.ScriptArguments)",
    SFTConfig: "training (trl.SFTConfig, with every transformers.TrainingArguments field)",
    ModelConfig: "model, quantisation and LoRA (trl.ModelConfig)",
    ProjectArguments: "this project's keys",
}


def describe_keys() -> str:
    """Every recipe key with its default and help, grouped by the dataclass that defines it (for sft.py --keys)."""
    lines = [
        f"{BASE_KEY} (default: none)\n    path of a recipe to inherit, relative to this recipe; this recipe's keys win"
    ]
    for cls, title in KEY_GROUPS.items():
        lines.append(f"\n== {title}")
        for f in dataclasses.fields(cls):
            if not f.init or f.name.startswith("_"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            default = getattr(default, "value", default)
            help_text = " ".join(str(f.metadata.get("help", "")).split())
            lines.append(f"{f.name} (default: {default!r})" + (f"\n    {help_text}" if help_text else ""))
    return "\n".join(lines)
