"""Recipes: TRL keys, base recipes, overrides, and one-line errors before anything loads."""

import sys
from pathlib import Path

import pytest

from eeve_sft.errors import UserError
from eeve_sft.training.recipe import check_for_training, dump_recipe, parse_recipe, recipe_classes
from helpers import REPO, error_line, run_script

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path, overrides=None) -> str:
    with pytest.raises(UserError) as err:
        parse_recipe(path, overrides, check_device=False)
    return str(err.value)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses_and_passes_training_checks(path, monkeypatch):
    import importlib.machinery
    import importlib.util

    # The GPU recipes use flex attention and Liger kernels: pretend to be a GPU machine with the liger extra.
    monkeypatch.setattr("eeve_sft.training.recipe.gpu_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            importlib.machinery.ModuleSpec(name, None) if name == "liger_kernel" else real_find_spec(name, *a)
        ),
    )
    recipe = parse_recipe(path, check_device=False, classes=recipe_classes(path))
    check_for_training(recipe)
    assert recipe.model.model_name_or_path


def test_default_recipe_is_the_original_plus_speed_settings_only():
    original = parse_recipe(REPO / "recipes/eeve_banmal_original.yaml", check_device=False).resolved
    default = parse_recipe(REPO / "recipes/eeve_banmal.yaml", check_device=False).resolved
    changed = {k for k in original.keys() | default.keys() if original.get(k) != default.get(k)}
    assert changed == {
        "output_dir",
        "packing",
        "packing_strategy",
        "gradient_accumulation_steps",
        "pad_to_multiple_of",
        "attn_implementation",
        "use_liger_kernel",
        "fused_lora",
        "per_device_train_batch_size",
        "activation_offloading",
        "eval_steps",
        "save_steps",
    }
    assert default["packing"] and default["attn_implementation"] == "flex_attention"
    # Evaluation and checkpoints after about as many conversations as the original's: its steps hold 4 x 4 of
    # them, a packed step 6 rows of 2048 tokens, each holding 2048 / ~450 (the training set's mean) conversations.
    packed_step = default["per_device_train_batch_size"] * 2048 / 450
    original_span = original["eval_steps"] * original["per_device_train_batch_size"] * 4
    assert abs(default["eval_steps"] * packed_step / original_span - 1) < 0.05
    assert default["save_steps"] == default["eval_steps"] and default["activation_offloading"]


def test_default_recipe_reproduces_the_original_hyperparameters():
    r = parse_recipe(REPO / "recipes/eeve_banmal_original.yaml", check_device=False)
    m, t, p = r.model, r.training, r.project
    assert m.model_name_or_path == "yanolja/EEVE-Korean-Instruct-10.8B-v1.0"
    assert (m.lora_r, m.lora_alpha, m.lora_dropout) == (64, 128, 0.05)
    assert sorted(m.lora_target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert m.load_in_4bit and m.bnb_4bit_quant_type == "nf4" and m.use_bnb_nested_quant and m.dtype == "bfloat16"
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (2, 4, 4)
    assert (t.learning_rate, t.max_length, t.warmup_steps, t.weight_decay) == (1e-4, 2048, 0.05, 0.01)
    assert t.bf16 and t.gradient_checkpointing and t.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert t.eval_strategy == "steps" and t.eval_steps == 250 and t.save_steps == 250
    assert t.load_best_model_at_end and t.metric_for_best_model == "eval_loss" and p.early_stopping_patience
    assert t.assistant_only_loss and not t.packing


@pytest.mark.parametrize(
    "line, expected",
    [
        ("max_seq_length: 1024", "unknown key 'max_seq_length'; it was renamed, use 'max_length'"),
        ("torch_dtype: bfloat16", "unknown key 'torch_dtype'; it was renamed, use 'dtype'"),
        ("learning_rat: 0.1", "unknown key 'learning_rat'; did you mean 'learning_rate'?"),
        ("lora_rank: 8", "unknown key 'lora_rank'; did you mean 'lora_r'?"),
        ("learning_rate: fast", "recipe key 'learning_rate' expects float, got 'fast'"),
        ("per_device_train_batch_size: 2.5", "recipe key 'per_device_train_batch_size' expects int, got 2.5"),
        ("eval_strategy: sometimes", "recipe key 'eval_strategy' expects one of no, steps, epoch, got 'sometimes'"),
        ("packing: maybe", "recipe key 'packing' expects bool, got 'maybe'"),
        ("num_train_epochs: null", "recipe key 'num_train_epochs' expects float, got null"),
        ("lora_target_modules: {q: 1}", "recipe key 'lora_target_modules' expects list, got a mapping"),
    ],
)
def test_bad_keys_and_values_name_the_key(tmp_path, line, expected):
    path = write(tmp_path, f"model_name_or_path: m\n{line}\n")
    assert expected in error_of(path)


def test_missing_file_bad_yaml_and_non_mapping(tmp_path):
    assert "recipe file not found" in error_of(tmp_path / "nope.yaml")
    assert "is not valid YAML (line 2" in error_of(write(tmp_path, "a: 1\n  b: [\n"))
    assert "must be a mapping" in error_of(write(tmp_path, "- just\n- a list\n"))


def test_base_recipe_is_merged_and_overridden(tmp_path):
    write(tmp_path, "model_name_or_path: m\nlearning_rate: 1.0e-4\nlora_r: 64\n", "base.yaml")
    child = write(tmp_path, "base_recipe: base.yaml\nlora_r: 16\n", "child.yaml")
    r = parse_recipe(child, ["--learning_rate", "3e-4"], check_device=False)
    assert (r.model.lora_r, r.training.learning_rate, r.model.model_name_or_path) == (16, 3e-4, "m")
    assert r.resolved["lora_r"] == 16 and r.resolved["learning_rate"] == 3e-4


def test_base_recipe_loop_is_reported(tmp_path):
    write(tmp_path, "base_recipe: b.yaml\n", "a.yaml")
    write(tmp_path, "base_recipe: a.yaml\n", "b.yaml")
    assert "base_recipe chain loops" in error_of(tmp_path / "a.yaml")


def test_unknown_command_line_flag_suggests_a_key(tmp_path):
    path = write(tmp_path, "model_name_or_path: m\n")
    assert error_of(path, ["--learning-rat", "1"]).startswith("unknown command-line argument '--learning-rat'")
    assert "did you mean 'learning_rate'" in error_of(path, ["--learning_rat", "1"])


def test_resolved_recipe_round_trips(tmp_path):
    r = parse_recipe(REPO / "recipes/demo_cpu.yaml", ["--lora_r", "4", "--report_to", "none"], check_device=False)
    again = parse_recipe(write(tmp_path, dump_recipe(r.resolved)), check_device=False)
    assert again.resolved == r.resolved
    assert again.model.lora_r == 4 and again.training.max_length == r.training.max_length


def test_cross_key_checks(tmp_path):
    def check(text):
        with pytest.raises(UserError) as err:
            check_for_training(parse_recipe(write(tmp_path, text), check_device=False))
        return str(err.value)

    assert "use_peft: true" in check("model_name_or_path: m\nload_in_4bit: true\n")
    assert "early_stopping_patience needs" in check("model_name_or_path: m\nearly_stopping_patience: 2\n")
    assert "null turns early stopping off" in check("model_name_or_path: m\nearly_stopping_patience: 0\n")
    assert "packing needs max_length" in check("model_name_or_path: m\npacking: true\nmax_length: null\n")
    assert "8 bit and 4 bit" in error_of(
        write(tmp_path, "model_name_or_path: m\nload_in_4bit: true\nload_in_8bit: true\n")
    )


def test_sft_cli_rejects_a_bad_recipe_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    recipe = write(tmp_path, f"base_recipe: {REPO / 'recipes/demo_cpu.yaml'}\nmax_seq_length: 128\n")
    result = run_script(sys.executable, "scripts/sft.py", str(recipe), "--output_dir", str(out))
    assert result.returncode == 2
    assert (
        error_line(result) == f"error: recipe {recipe}: unknown key 'max_seq_length'; it was renamed, use 'max_length'"
    )
    assert not out.exists()


def test_liger_kernels_without_the_package_are_refused_before_loading(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real_find_spec(name, *a)
    )
    recipe = parse_recipe(write(tmp_path, "model_name_or_path: m\nuse_liger_kernel: true\n"), check_device=False)
    with pytest.raises(UserError, match=r'use_liger_kernel: true needs liger-kernel: pip install -e "\.\[liger\]"'):
        check_for_training(recipe)


def test_flex_attention_is_refused_on_cpu_before_loading(tmp_path, monkeypatch):
    text = "model_name_or_path: m\nattn_implementation: flex_attention\n"
    monkeypatch.setattr("eeve_sft.training.recipe.gpu_available", lambda: False)
    with pytest.raises(UserError, match="flex_attention trains only on a GPU"):
        check_for_training(parse_recipe(write(tmp_path, text), check_device=False))
    monkeypatch.setattr("eeve_sft.training.recipe.gpu_available", lambda: True)
    check_for_training(parse_recipe(write(tmp_path, text), check_device=False))
    with pytest.raises(UserError, match="flex_attention trains only on a GPU"):
        check_for_training(parse_recipe(write(tmp_path, text + "use_cpu: true\n"), check_device=False))


# --------------------------------------------------------------------------- what the parsing relies on in TRL,
# transformers and argparse: each of these fails when an upgrade changes it, before a recipe is misread.


def test_the_parser_offers_every_field_as_a_flag_and_raises_on_a_bad_value():
    import argparse

    from eeve_sft.training.recipe import FIELD_TYPES, command_line_values, make_parser

    parser = make_parser()
    namespace, rest = parser.parse_known_args([])
    assert rest == [] and set(FIELD_TYPES) <= set(vars(namespace))  # one flag per field, named as the field
    with pytest.raises(argparse.ArgumentError):  # not usage on stderr and SystemExit
        parser.parse_known_args(["--learning_rate=fast"])
    # A flag not given leaves the namespace's own value: that is how the given flags are told apart.
    assert command_line_values([], parser) == {}
    assert command_line_values(["--lora_r", "8", "--no_remove_unused_columns"], parser) == {
        "lora_r": 8,
        "remove_unused_columns": False,
    }


def test_the_choices_read_from_the_dataclasses_are_the_parsers():
    import argparse

    from eeve_sft.training.recipe import FIELD_CHOICES, make_parser

    parser = make_parser()
    assert {"eval_strategy", "lr_scheduler_type", "packing_strategy", "dtype"} <= set(FIELD_CHOICES)
    for key, choices in FIELD_CHOICES.items():
        for choice in choices:
            namespace, _ = parser.parse_known_args([f"--{key}={choice}"])
            assert getattr(getattr(namespace, key), "value", getattr(namespace, key)) == choice
        with pytest.raises(argparse.ArgumentError):
            parser.parse_known_args([f"--{key}=no-such-choice"])


def test_precision_set_back_after_construction_is_what_construction_gives(tmp_path):
    from trl import SFTConfig

    from eeve_sft.training.recipe import _without_precision_check, mixed_precision

    # SFTConfig reads an unset bf16 as "bf16 unless fp16".
    assert mixed_precision({})["bf16"] is SFTConfig(output_dir=str(tmp_path), use_cpu=True).bf16 is True
    kwargs = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": True}  # use_cpu passes the check anywhere
    built, set_back = SFTConfig(**kwargs), _without_precision_check(SFTConfig, kwargs)
    assert set_back.to_dict() == built.to_dict() and set_back.mixed_precision == built.mixed_precision == "bf16"


# --------------------------------------------------------------------------- a GPU recipe on this CPU machine

GPU_RECIPE = [str(REPO / "recipes/eeve_banmal.yaml"), "--model_name_or_path", "assets/demo-model"]
DEMO_DATA = ["--dataset_name", "data/demo", "--dataset_num_proc", "1"]
cpu_only = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="what a machine without a GPU says about a GPU recipe"
)


@cpu_only
def test_check_validates_a_gpu_recipe_here_with_hardware_as_notes(tmp_path, capsys, monkeypatch):
    from helpers import load_script

    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    load_script("sft").main([*GPU_RECIPE, "--check", *DEMO_DATA, "--output_dir", str(out)])
    said = capsys.readouterr()
    assert "recipe, output_dir, tokenizer and data checked (258 train examples, 42 eval examples)" in said.out
    notes = said.err.strip().splitlines()
    assert [line for line in notes if line.startswith("note: ")] == [
        "note: bf16: true needs a GPU with bf16 (NVIDIA Ampere or newer), and this machine has none; on a CPU set "
        "use_cpu: true (not needed for --check)",
        "note: attn_implementation: flex_attention trains only on a GPU (it has no CPU backward); use sdpa (not "
        "needed for --check)",
        "note: activation_offloading: true needs a GPU (TRL copies activations on CUDA streams); set it false (not "
        "needed for --check)",
        *(
            [
                'note: use_liger_kernel: true needs liger-kernel: pip install -e ".[liger]", or set use_liger_kernel: '
                "false (not needed for --check)"
            ]
            if __import__("importlib.util").util.find_spec("liger_kernel") is None
            else []
        ),
    ]
    assert not out.exists()


@cpu_only
def test_training_a_gpu_recipe_here_fails_with_one_line(tmp_path, capsys, monkeypatch):
    from helpers import cli_error

    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    line = cli_error(capsys, "sft", [*GPU_RECIPE, *DEMO_DATA, "--output_dir", str(out)])
    assert line == (
        "error: bf16: true needs a GPU with bf16 (NVIDIA Ampere or newer), and this machine has none; on a CPU set "
        "use_cpu: true; sft.py --check validates the recipe here without training"
    )
    assert not out.exists()


def test_print_recipe_prints_the_resolved_recipe_and_stops(tmp_path, capsys, monkeypatch):
    import yaml

    from helpers import load_script

    monkeypatch.chdir(REPO)
    load_script("sft").main([*GPU_RECIPE, "--print-recipe", "--learning_rate", "3e-4"])
    said = capsys.readouterr()
    printed = yaml.safe_load(said.out)
    assert printed == parse_recipe(GPU_RECIPE[0], GPU_RECIPE[1:] + ["--learning_rate", "3e-4"], False).resolved
    assert printed["learning_rate"] == 3e-4 and printed["model_name_or_path"] == "assets/demo-model"
    assert printed["attn_implementation"] == "flex_attention" and said.err == ""
    again = parse_recipe(write(tmp_path, said.out), check_device=False)  # what it prints is a recipe
    assert again.resolved == printed


def test_activation_offloading_is_refused_without_a_gpu(tmp_path, monkeypatch):
    text = "model_name_or_path: m\nactivation_offloading: true\n"
    monkeypatch.setattr("eeve_sft.training.recipe.gpu_available", lambda: False)
    with pytest.raises(UserError, match="activation_offloading: true needs a GPU"):
        check_for_training(parse_recipe(write(tmp_path, text), check_device=False))
    monkeypatch.setattr("eeve_sft.training.recipe.gpu_available", lambda: True)
    check_for_training(parse_recipe(write(tmp_path, text), check_device=False))
    with pytest.raises(UserError, match="activation_offloading: true needs a GPU"):
        check_for_training(parse_recipe(write(tmp_path, text + "use_cpu: true\n"), check_device=False))


def test_a_key_of_both_recipe_kinds_is_checked_against_its_own_kind(tmp_path):
    from eeve_sft.training.recipe import DPO_DATACLASSES

    # loss_type is one of SFTConfig's names in an SFT recipe and a list of DPO losses in a DPO recipe.
    dpo, sft = tmp_path / "dpo.yaml", tmp_path / "sft.yaml"
    dpo.write_text(f"base_recipe: {REPO / 'recipes' / 'demo_cpu_dpo.yaml'}\nloss_type: [sigmoid, ipo]\n")
    sft.write_text(f"base_recipe: {REPO / 'recipes' / 'demo_cpu.yaml'}\nloss_type: dft\n")
    assert parse_recipe(dpo, classes=DPO_DATACLASSES, check_device=False).training.loss_type == ["sigmoid", "ipo"]
    assert parse_recipe(sft, check_device=False).training.loss_type == "dft"
    sft.write_text(f"base_recipe: {REPO / 'recipes' / 'demo_cpu.yaml'}\nloss_type: sigmoid\n")
    with pytest.raises(UserError, match="recipe key 'loss_type' expects one of nll, dft, chunked_nll, got 'sigmoid'"):
        parse_recipe(sft, check_device=False)
