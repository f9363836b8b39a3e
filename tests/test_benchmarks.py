"""The training-speed tables in benchmarks/RESULTS.md come from the stored result files, and the check can fail."""

import copy
import importlib.util
import sys

import yaml

from conftest import REPO

WORK = REPO / "benchmarks/results/train_speed"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "benchmarks/bench_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_train", module)
    spec.loader.exec_module(module)
    return module


def test_results_md_tables_are_generated_from_the_stored_results():
    bench = bench_module()
    results = bench.load_results(WORK)
    assert {"q_padded", "q_default", "b_padded", "b_fast", "b_fast_repeat"} <= set(results)
    block = bench.generated_block(results, "2026-11-25")
    assert block in (REPO / "benchmarks/RESULTS.md").read_text(encoding="utf-8")


def test_the_fixed_batch_check_fails_on_changed_loss_or_labels():
    bench = bench_module()
    results = bench.load_results(WORK)
    fast, padded = results["q_default"], results["q_padded"]
    assert bench.compare(fast, padded)["pass"]
    off_loss = copy.deepcopy(fast)
    off_loss["check"]["loss"] *= 1.01
    assert not bench.compare(off_loss, padded)["pass"]
    other_labels = copy.deepcopy(fast)
    other_labels["check"]["trained_tokens"] -= 1
    assert not bench.compare(other_labels, padded)["pass"]


def test_every_benchmark_variant_is_a_valid_recipe_with_its_overrides_applied(tmp_path):
    from eeve_sft.recipe import parse_recipe

    bench = bench_module()
    for variant in bench.VARIANTS.values():
        keys = bench.bench_keys(variant, "m", "d", tmp_path / variant.name, cpu_smoke=False)
        path = tmp_path / f"{variant.name}.yaml"
        path.write_text(yaml.safe_dump({"base_recipe": str(REPO / variant.recipe), **keys}), encoding="utf-8")
        recipe = parse_recipe(path, [], check_device=False)
        values = {**vars(recipe.script), **vars(recipe.training), **vars(recipe.model), **vars(recipe.project)}
        for key, value in variant.overrides.items():
            name = {"activation_checkpointing": "gradient_checkpointing",
                    "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}.get(key, key)
            assert values.get(name, values.get(key)) == value, (variant.name, key)


def test_scaling_model_section_is_the_models_output():
    spec = importlib.util.spec_from_file_location("scaling_model", REPO / "benchmarks/scaling_model.py")
    model = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scaling_model", model)  # dataclasses look their module up there
    spec.loader.exec_module(model)
    assert model.LORA_PARAMS == 251_658_240  # r 64 on q, k, v, o, gate, up, down of 48 layers
    ddp = model.SETUPS[0]
    # Ring all-reduce of the fp32 LoRA gradients over 16 GPUs: 2 x 15/16 x 1.007 GB at 80% of 400 GB/s, plus the
    # latency of 41 buckets x 30 ring steps x 10 us.
    seconds = model.comm_seconds_per_step(ddp, 16, model.NETWORKS[0])
    assert 2 * 15 / 16 * model.LORA_PARAMS * 4 / (0.8 * 400e9) < seconds < 0.03
    assert model.comm_seconds_per_step(ddp, 1, model.NETWORKS[0]) == 0.0
    assert model.section() in (REPO / "benchmarks/RESULTS.md").read_text(encoding="utf-8")
