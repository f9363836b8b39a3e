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
from trl import DPOConfig, ModelConfig, ScriptArguments, SFTConfig, TrlParser

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


@dataclass
class DPOArguments:
    """The keys a preference (DPO) recipe adds: the SFT run it starts from."""

    sft_adapter: str | None = field(
        default=None,
        metadata={
            "help": "The SFT adapter DPO starts from (an SFT run's final/ or checkpoint-N/, or the run folder): the "
            "policy continues it and the reference is the SFT model. Relative to the current directory."
        },
    )


DATACLASSES = (ScriptArguments, SFTConfig, ModelConfig, ProjectArguments)
# scripts/dpo.py: TRL's DPOConfig in place of SFTConfig, plus DPOArguments (parse_recipe's `classes`).
DPO_DATACLASSES = (ScriptArguments, DPOConfig, ModelConfig, ProjectArguments, DPOArguments)
TRAINING_CLASSES = (SFTConfig, DPOConfig)


@dataclass
class Recipe:
    """A parsed recipe: TRL's three argument objects, the project's, and the resolved key/value mapping."""

    script: ScriptArguments
    training: SFTConfig
    model: ModelConfig
    project: ProjectArguments
    resolved: dict  # every key the recipe or the command line set, after base recipes and overrides
    notes: list[str] = field(default_factory=list)  # keys the parser set on the user's behalf, for the log
    # What this machine lacks to train the recipe (parse_recipe with check_device=False; check_for_training adds
    # its own), one line each.
    hardware: list[str] = field(default_factory=list)
    dpo: DPOArguments | None = None  # a DPO recipe's own keys (parsed with DPO_DATACLASSES)

    @property
    def argument_objects(self) -> tuple:
        return (self.script, self.training, self.model, self.project, *((self.dpo,) if self.dpo else ()))


def make_parser(classes: tuple = DATACLASSES) -> TrlParser:
    """TRL's parser for the four dataclasses: a misspelt flag never matches a longer one (no abbreviations), and a
    bad value raises argparse.ArgumentError instead of printing usage and exiting."""
    return TrlParser(classes, allow_abbrev=False, exit_on_error=False)


def _field_types(classes: tuple) -> dict[str, object]:
    hints: dict[str, object] = {}
    for cls in classes:
        resolved = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                hints[f.name] = resolved.get(f.name, f.type)
    return hints


def _field_choices(classes: tuple, types_: dict[str, object]) -> dict[str, list]:
    """The values a field accepts when it has a fixed set: those HfArgumentParser offers as choices (a field's
    ``choices`` metadata, or the values of an Enum in its type)."""
    choices = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if "choices" in f.metadata:
                choices[f.name] = list(f.metadata["choices"])
                continue
            hint = types_[f.name]
            enums = [a for a in (hint, *typing.get_args(hint)) if isinstance(a, type) and issubclass(a, enum.Enum)]
            if enums:
                choices[f.name] = [member.value for member in enums[0]]
    return choices


def _field_defaults(classes: tuple) -> dict[str, object]:
    defaults = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.init and f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.init and f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    return defaults


# SFT recipes' keys. A key of both kinds of recipe can differ between them (SFTConfig's loss_type is one name,
# DPOConfig's a list), so a value is checked against the type and choices of its own recipe kind.
FIELD_TYPES = _field_types(DATACLASSES)
FIELD_CHOICES = _field_choices(DATACLASSES, FIELD_TYPES)
FIELD_DEFAULTS = _field_defaults(DATACLASSES)
VALID_KEYS = frozenset(FIELD_TYPES) | {BASE_KEY}
_SCHEMAS = {DATACLASSES: FIELD_TYPES, DPO_DATACLASSES: _field_types(DPO_DATACLASSES)}
_CHOICES = {
    DATACLASSES: FIELD_CHOICES,
    DPO_DATACLASSES: _field_choices(DPO_DATACLASSES, _SCHEMAS[DPO_DATACLASSES]),
}


def field_types(classes: tuple = DATACLASSES) -> dict[str, object]:
    """Every key of the recipe kind `classes` and its annotation."""
    return _SCHEMAS[classes]


def suggest_key(key: str, classes: tuple = DATACLASSES) -> str:
    """The hint appended to an unknown-key error: the renamed key, or the closest valid one."""
    if key in RENAMED_KEYS:
        return f"; it was renamed, use '{RENAMED_KEYS[key]}'"
    if classes == DATACLASSES and key in field_types(DPO_DATACLASSES):
        return "; it is a key of DPO recipes: train those with scripts/dpo.py"
    close = closest_key(key, frozenset(field_types(classes)) | {BASE_KEY})
    return f"; did you mean '{close}'?" if close else ""


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = (), classes: tuple = DATACLASSES) -> dict:
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
        if not isinstance(key, str) or (key not in field_types(classes) and key != BASE_KEY):
            raise UserError(f"recipe {path}: unknown key '{key}'{suggest_key(str(key), classes)}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"recipe {path}: '{BASE_KEY}' expects a path to another recipe, got {base!r}")
    merged = read_recipe(path.parent / base, (*_seen, resolved_path), classes)
    merged.update(data)
    return merged


def recipe_classes(path: str | Path) -> tuple:
    """The kind of the recipe at `path`: DPO_DATACLASSES when it or a base recipe sets sft_adapter, else DATACLASSES
    (whose parse then reports any mistake)."""
    try:
        return DPO_DATACLASSES if "sft_adapter" in read_recipe(path, classes=DPO_DATACLASSES) else DATACLASSES
    except UserError:
        return DATACLASSES


def _describe(key: str, classes: tuple) -> str:
    if key in _CHOICES[classes]:
        return "one of " + ", ".join(str(c) for c in _CHOICES[classes][key])
    annotation = _SCHEMAS[classes][key]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        names = [getattr(a, "__name__", str(a)) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(names)
    return getattr(annotation, "__name__", str(annotation))


def _takes_list(annotation: object) -> bool:
    return any(typing.get_origin(a) is list for a in (annotation, *typing.get_args(annotation)))


def _as_flag(parser: TrlParser, key: str, items: list[object]) -> object:
    """What ``--key ITEM ...`` means on the command line: the parser's own conversion, so a recipe value and a
    flag mean the same. Raises argparse.ArgumentError for a value the flag would refuse."""
    # `--key=value` keeps a value that starts with "-" a value; several items must be separate words.
    argv = [f"--{key}={items[0]}"] if len(items) == 1 else [f"--{key}", *map(str, items)]
    namespace, remaining = parser.parse_known_args(argv)
    if remaining:  # a list item that reads like a flag
        raise argparse.ArgumentError(None, f"unexpected {remaining[0]!r}")
    return getattr(namespace, key)


def _convert(parser: TrlParser, key: str, value: object, classes: tuple) -> object:
    annotation = _SCHEMAS[classes][key]
    if isinstance(value, dict) or (isinstance(value, list) and not _takes_list(annotation)):
        raise expects(f"recipe key '{key}'", _describe(key, classes), value)
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, (dict, list)) for item in items) or not items:
        raise expects(f"recipe key '{key}'", _describe(key, classes), value)
    try:
        converted = _as_flag(parser, key, items)
    except argparse.ArgumentError:
        # HfArgumentParser gives `str | bool` fields a bool parser; a string is still a valid value there.
        if isinstance(value, str) and allows_str(annotation) and key not in _CHOICES[classes]:
            return value
        raise expects(f"recipe key '{key}'", _describe(key, classes), value) from None
    if isinstance(converted, list):
        return [getattr(c, "value", c) for c in converted]
    return getattr(converted, "value", converted)


def check_values(values: dict, parser: TrlParser, classes: tuple = DATACLASSES) -> dict:
    """Type-check and convert every recipe value as the command line would; return the converted mapping.

    The checks and messages are those of :mod:`eeve_sft.validation`, which checks mix files too.
    """
    types_ = field_types(classes)
    checked = {}
    for key, value in values.items():
        annotation = types_[key]
        if value is None:
            if not allows_none(annotation):
                raise expects(f"recipe key '{key}'", _describe(key, classes), value)
            checked[key] = None
        elif isinstance(value, dict):
            if not allows_dict(annotation):
                raise expects(f"recipe key '{key}'", _describe(key, classes), value)
            checked[key] = value
        else:
            checked[key] = _convert(parser, key, value, classes)
    return checked


_UNSET = object()


def command_line_values(overrides: list[str], parser: TrlParser, classes: tuple = DATACLASSES) -> dict:
    """The recipe keys that `overrides` (``--key value`` flags) set, converted; UserError for an unknown flag or a
    bad value."""
    # argparse leaves an attribute the namespace already holds when no flag sets it: what still holds the marker
    # was not given.
    types_ = field_types(classes)
    namespace = argparse.Namespace(**dict.fromkeys(types_, _UNSET))
    try:
        namespace, remaining = parser.parse_known_args(overrides, namespace=namespace)
    except argparse.ArgumentError as err:
        raise UserError(one_line(err)) from None
    if remaining:
        flag = next((t for t in remaining if t.startswith("-")), remaining[0])
        name = flag.lstrip("-").split("=", 1)[0].replace("-", "_")
        hint = suggest_key(name, classes) if flag.startswith("-") else ""
        raise UserError(f"unknown command-line argument '{flag}'{hint}")
    return {key: value for key, value in vars(namespace).items() if key in types_ and value is not _UNSET}


PRECISION_KEYS = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval")


def mixed_precision(values: dict) -> dict[str, bool]:
    """The mixed-precision keys as training will take them: SFTConfig reads an unset bf16 as "bf16 unless fp16"."""
    taken = {key: values.get(key, FIELD_DEFAULTS.get(key)) for key in PRECISION_KEYS}
    if taken["bf16"] is None:
        taken["bf16"] = not taken["fp16"]
    return {key: bool(value) for key, value in taken.items()}


def precision_facts(values: dict) -> list[str]:
    """What this machine lacks for the recipe's mixed precision (TrainingArguments refuses such a recipe here)."""
    from transformers.utils import is_torch_bf16_gpu_available

    if values.get("use_cpu"):
        return []
    taken, facts = mixed_precision(values), []
    if (taken["bf16"] or taken["bf16_full_eval"]) and not is_torch_bf16_gpu_available():
        unset = " (SFTConfig's default)" if values.get("bf16") is None else ""
        facts.append(
            f"bf16: true{unset} needs a GPU with bf16 (NVIDIA Ampere or newer), and this machine has none; "
            "on a CPU set use_cpu: true"
        )
    if (taken["fp16"] or taken["fp16_full_eval"]) and not gpu_available():
        facts.append("fp16: true needs a GPU, and this machine has none")
    return facts


def _without_precision_check(cls: type, kwargs: dict):
    """Build TrainingArguments (SFTConfig or DPOConfig) for a machine that will not train the recipe: without the mixed
    precision its check refuses here, then with the recipe's values set back, as that check is all it does with
    them beyond the ``mixed_precision`` it derives (tests/training/test_recipe.py checks both)."""
    precision = {k: v for k, v in mixed_precision(kwargs).items() if v}
    obj = cls(**{**kwargs, **dict.fromkeys(PRECISION_KEYS, False)})
    for key, value in precision.items():
        setattr(obj, key, value)
    if precision.get("fp16") or precision.get("bf16"):
        obj.mixed_precision = "fp16" if precision.get("fp16") else "bf16"
    return obj


def parse_recipe(
    path: str | Path, overrides: list[str] | None = None, check_device: bool = True, classes: tuple = DATACLASSES
) -> Recipe:
    """Read, merge, check and parse a recipe with command-line overrides; raise UserError on any mistake.

    `check_device=False` is for reading a recipe on a machine that will not train it (``sft.py --check``, preview,
    evaluation): what this machine lacks for the recipe's bf16/fp16 goes into ``Recipe.hardware`` instead of
    failing. `classes` is the recipe's kind: DATACLASSES (SFT) or DPO_DATACLASSES.
    """
    overrides = list(overrides or [])
    parser = make_parser(classes)
    checked = check_values(read_recipe(path, classes=classes), parser, classes)
    given = command_line_values(overrides, parser, classes)
    values = {**checked, **given}
    followed = _follow_evaluation_off(values, set(given))
    hardware = precision_facts(values)
    if hardware and check_device:
        raise UserError(f"{hardware[0]}; sft.py --check validates the recipe here without training")

    objects = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {k: v for k, v in values.items() if k in names}
        try:
            obj = _without_precision_check(cls, kwargs) if hardware and cls in TRAINING_CLASSES else cls(**kwargs)
        except (ValueError, TypeError) as err:
            raise UserError(f"recipe {path}: {one_line(err)}") from None
        objects.append(obj)
    script, training, model, project, *extra = objects

    resolved = dict(checked)
    for key in set(given) | set(followed):
        value = values[key]
        resolved[key] = value.value if isinstance(value, enum.Enum) else value
    notes = []
    if followed:
        changes = ", ".join(f"{key}: {_yaml_value(value)}" for key, value in followed.items())
        notes.append(f"eval_strategy is 'no', so evaluation is off: also set {changes}")
    return Recipe(script, training, model, project, resolved, notes, hardware, dpo=extra[0] if extra else None)


# Keys that only mean something while evaluation runs, and their value when eval_strategy is 'no'.
EVALUATION_KEYS = {"load_best_model_at_end": False, "early_stopping_patience": None, "eval_fraction": 0.0}


def _yaml_value(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _follow_evaluation_off(values: dict, given: set[str]) -> dict:
    """With --eval_strategy no on the command line, turn off the keys that need evaluation unless the command
    line set them too.

    One flag then turns evaluation off (TrainingArguments would refuse load_best_model_at_end without it, and
    early stopping has nothing to watch). Changes `values`; returns the keys changed and their new values.
    """
    strategy = getattr(values.get("eval_strategy"), "value", values.get("eval_strategy"))
    if strategy != "no" or "eval_strategy" not in given:  # a recipe file that says both is taken as it says
        return {}
    followed = {}
    for key, off in EVALUATION_KEYS.items():
        if key not in given and values.get(key, FIELD_DEFAULTS.get(key)) != off:
            values[key] = off
            followed[key] = off
    return followed


def dump_recipe(resolved: dict) -> str:
    """YAML text of a resolved recipe, readable by :func:`parse_recipe` (keys sorted for stable diffs)."""
    return yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True, default_flow_style=False)


def gpu_available() -> bool:
    return torch.cuda.is_available()


def hardware_facts(recipe: Recipe) -> list[str]:
    """What this machine lacks to train `recipe` beyond its mixed precision: a GPU, or a GPU-only package."""
    model, training, project = recipe.model, recipe.training, recipe.project
    facts = []
    if project.float8_base:
        if importlib.util.find_spec("torchao") is None:
            facts.append('float8_base: true needs torchao: pip install -e ".[fp8]", or set float8_base: false')
        # On a CPU torch computes the FP8 products itself (slowly: for tests); a GPU needs FP8 matrix units.
        elif not training.use_cpu and gpu_available() and torch.cuda.get_device_capability() < (8, 9):
            facts.append("float8_base: true needs a GPU with FP8 matrix units (Ada, Hopper or newer); set it false")
    if model.attn_implementation == "flex_attention" and (training.use_cpu or not gpu_available()):
        facts.append("attn_implementation: flex_attention trains only on a GPU (it has no CPU backward); use sdpa")
    if training.activation_offloading and (training.use_cpu or not gpu_available()):
        facts.append("activation_offloading: true needs a GPU (TRL copies activations on CUDA streams); set it false")
    if training.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        facts.append(
            'use_liger_kernel: true needs liger-kernel: pip install -e ".[liger]", or set use_liger_kernel: false'
        )
    return facts


def check_for_training(recipe: Recipe, check_only: bool = False) -> list[str]:
    """Checks across keys that TRL leaves to fail late (after the model has loaded) or never.

    What this machine lacks to train the recipe (:func:`hardware_facts`) is an error, or with `check_only` (the
    recipe trains elsewhere) one of the notes returned, with those of :attr:`Recipe.hardware`.
    """
    model, training, project = recipe.model, recipe.training, recipe.project
    if not model.model_name_or_path:
        raise UserError("no model_name_or_path: set it in the recipe or pass --model_name_or_path")
    if (model.load_in_4bit or model.load_in_8bit) and not model.use_peft:
        raise UserError("a quantized model trains only through adapters: set use_peft: true (QLoRA)")
    if getattr(training, "chat_template_path", None):
        raise UserError(
            "chat_template_path is not used: the EEVE template is fixed; change its system line with system_prompt"
        )
    if project.fused_lora and not model.use_peft:
        raise UserError("fused_lora: true needs LoRA adapters: set use_peft: true, or fused_lora: false")
    if project.float8_base and (not model.use_peft or model.load_in_4bit or model.load_in_8bit):
        raise UserError(
            "float8_base: true is for LoRA on an unquantized model: set use_peft: true, load_in_4bit: false"
        )
    if getattr(training, "packing", False) and training.max_length is None:
        raise UserError("packing needs max_length")
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
    facts = hardware_facts(recipe)
    if facts and not check_only:
        raise UserError(facts[0])
    return [*recipe.hardware, *facts] if check_only else []


KEY_GROUPS = {
    ScriptArguments: "data (trl.ScriptArguments)",
    SFTConfig: "training (trl.SFTConfig, with every transformers.TrainingArguments field)",
    ModelConfig: "model, quantisation and LoRA (trl.ModelConfig)",
    ProjectArguments: "this project's keys",
    DPOConfig: "training (trl.DPOConfig, with every transformers.TrainingArguments field)",
    DPOArguments: "this project's preference (DPO) keys",
}


def describe_keys(classes: tuple = DATACLASSES) -> str:
    """Every recipe key with its default and help, grouped by the dataclass that defines it (for --keys)."""
    lines = [
        f"{BASE_KEY} (default: none)\n    path of a recipe to inherit, relative to this recipe; this recipe's keys win"
    ]
    for cls in classes:
        lines.append(f"\n== {KEY_GROUPS[cls]}")
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
