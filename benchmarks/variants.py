"""The training-speed benchmark's variant table (`train_variants.yaml`), its checks' limits and where its results go:
what the runner (bench_train.py), the external runner (bench_external.py) and the tables (train_speed_tables.py) share."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks.common import REPO, RESULTS_ROOT

VARIANTS_FILE = REPO / "benchmarks/train_variants.yaml"
TRAIN_RESULTS = RESULTS_ROOT / "train_speed"

# The original workload whose wall time each variant's throughput is turned into: 100K conversations, 2 epochs.
WORKLOAD_SAMPLES = 100_000 * 2
CHECK_EXAMPLES = 8  # conversations in the fixed correctness batch
LOSS_RTOL = 1e-3  # relative loss difference allowed between attention/kernel paths in bf16 (a mask error: ~3e-3)
LEAK_FRACTION = 0.2  # per-token log-prob differences must stay under this share of the mask-error control's
PROBE_STD = 0.01  # LoRA B values of the adapter probe: each projection's adapter then adds a few % to its output
KNOWN_HOOKS = ("fp32_lora_input_cast",)
RUNNERS = ("bench", "unsloth")
DATA_KINDS = ("speed", "learnable")  # synthetic.py's uniform random words, or its --learnable ones
LEARNABLE_TRAIN_ROWS = 6000  # ~330 packed steps of 4 x 2048 tokens: a 300-step curve within one epoch
CURVE_RTOL = 0.01  # a loss-curve check passes when the loss at every logged step is within 1% of the reference's


@dataclasses.dataclass
class Variant:
    name: str
    family: str  # "qlora" or "bf16": variants of one family are checked against its reference
    label: str
    recipe: str
    overrides: dict = dataclasses.field(default_factory=dict)
    steps: int = 10  # optimizer steps in all
    warmup: int = 3  # steps left out of the timing (kernel compilation, allocator growth, paged optimizer setup)
    hooks: tuple = ()  # benchmark-only changes that no recipe key expresses (see apply_hooks)
    env: dict = dataclasses.field(default_factory=dict)  # set in the worker before anything loads
    needs: tuple = ()  # extra Python packages the variant imports
    runner: str = "bench"  # "bench": this file's worker; else an external trainer in bench_external.py
    data: str = "speed"  # "learnable": trained on learnable synthetic data, its loss curve checked (CURVE_RTOL)


def load_variants(path: Path = VARIANTS_FILE) -> tuple[dict, dict]:
    """The variant table and each family's reference order, from the variants file (see its header)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    recipes, presets, references = data["recipes"], data.get("presets", {}), data["references"]
    fields = {f.name for f in dataclasses.fields(Variant)} | {"use"}
    variants = {}
    for entry in data["variants"]:
        name = entry.get("name", "?")
        unknown = set(entry) - fields
        if unknown:
            raise ValueError(f"{path}: variant {name}: unknown field(s) {sorted(unknown)}")
        if name in variants:
            raise ValueError(f"{path}: variant {name} is defined twice")
        if entry.get("recipe") not in recipes or entry.get("family") not in references:
            raise ValueError(
                f"{path}: variant {name}: recipe must be one of {sorted(recipes)} and family one of "
                f"{sorted(references)}"
            )
        overrides, env = {}, {}
        for preset in entry.get("use", []):
            if preset not in presets:
                raise ValueError(f"{path}: variant {name}: no preset {preset!r}")
            keys = dict(presets[preset])
            env.update(keys.pop("env", None) or {})  # a preset's environment variables, beside its recipe keys
            overrides.update(keys)
        overrides.update(entry.get("overrides") or {})
        env.update(entry.get("env") or {})
        hooks = tuple(entry.get("hooks") or ())
        if set(hooks) - set(KNOWN_HOOKS):
            raise ValueError(f"{path}: variant {name}: unknown hook(s) {sorted(set(hooks) - set(KNOWN_HOOKS))}")
        if entry.get("runner", "bench") not in RUNNERS:
            raise ValueError(f"{path}: variant {name}: runner must be one of {', '.join(RUNNERS)}")
        if entry.get("data", "speed") not in DATA_KINDS:
            raise ValueError(f"{path}: variant {name}: data must be one of {', '.join(DATA_KINDS)}")
        variants[name] = Variant(
            name=name,
            family=entry["family"],
            label=entry["label"],
            recipe=recipes[entry["recipe"]],
            overrides=overrides,
            steps=entry.get("steps", 10),
            warmup=entry.get("warmup", 3),
            hooks=hooks,
            env={k: str(v) for k, v in env.items()},
            needs=tuple(entry.get("needs") or ()),
            runner=entry.get("runner", "bench"),
            data=entry.get("data", "speed"),
        )
    for family, names in references.items():
        if any(variants.get(n, Variant(n, "", "", "")).family != family for n in names):
            raise ValueError(f"{path}: references of {family} must be variants of that family")
    return variants, references


VARIANTS, REFERENCES = load_variants()


def result_path(folder: Path, name: str, repeat: int) -> Path:
    return folder / (f"{name}.json" if repeat == 1 else f"{name}.run{repeat}.json")


def next_repeat(folder: Path, name: str) -> int:
    repeat = 1
    while result_path(folder, name, repeat).is_file():
        repeat += 1
    return repeat


def recipe_keys(recipe: str) -> dict:
    """A recipe file's keys with its base recipes' under them."""
    import yaml

    path = REPO / recipe
    keys = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if keys.get("base_recipe"):
        return {**recipe_keys(str((path.parent / keys["base_recipe"]).relative_to(REPO))), **keys}
    return keys
