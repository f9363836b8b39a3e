"""The benchmarks package: RESULTS.md's generated blocks match the stored result files, the checks can fail, and the
runners work on a tiny model on CPU."""

import copy
import hashlib
import importlib
import importlib.util
import json
import re
import subprocess
import sys

import pytest
import yaml

from helpers import REPO

ROOT = REPO / "benchmarks/results/train_speed"
H100 = ROOT / "2026-11-25_h100"


def load_module(name):
    return importlib.import_module(f"benchmarks.{name}")


def bench_module():
    return load_module("bench_train")


def report_module():
    return load_module("train_speed_tables")


def test_every_generated_block_of_results_md_matches_its_result_files():
    assert load_module("render_results").stale() == []  # else: python -m benchmarks.render_results --write


def test_report_write_rewrites_a_stale_block_and_keeps_the_notes(tmp_path):
    report = load_module("render_results")
    retrieval = next(b for b in report.BLOCKS if b.name == "bench_retrieval")
    original = (REPO / "benchmarks/RESULTS.md").read_text(encoding="utf-8")
    block = report.current(original, retrieval)
    note = "\n\nA note written by hand after the retrieval block.\n"
    # A stale retrieval table, and a note of its own after the block.
    edited = original.replace(block, f"{retrieval.begin}\n| stale |\n{retrieval.end}{note}")
    path = tmp_path / "RESULTS.md"
    path.write_text(edited, encoding="utf-8")
    assert report.stale(path) == ["bench_retrieval"]
    cli = [sys.executable, "-m", "benchmarks.render_results", "--results-md", str(path)]
    proc = subprocess.run(cli, capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 1 and "bench_retrieval" in proc.stdout
    assert report.write(path) == ["bench_retrieval"]
    assert path.read_text(encoding="utf-8") == original.replace(block, block + note)  # the note stays
    path.write_text(edited.split(retrieval.begin)[0], encoding="utf-8")  # the blocks from there on cut off
    report.write(path)
    assert report.stale(path) == []


def test_a_result_of_the_same_day_is_numbered_and_the_newest_is_rendered(tmp_path):
    common = load_module("common")
    first = common.write_result(tmp_path / "2026-12-01_cpu/retrieval.json", {"n": 1})
    second = common.write_result(tmp_path / "2026-12-01_cpu/retrieval.json", {"n": 2})
    assert second.name == "retrieval.run2.json" and json.loads(first.read_text()) == {"n": 1}
    assert common.newest_result(tmp_path, "retrieval.json") == second
    later = common.write_result(tmp_path / "2026-12-03_cpu/retrieval.json", {"n": 3})
    assert common.newest_result(tmp_path, "retrieval.json") == later
    with pytest.raises(FileNotFoundError, match="no docgen.json"):
        common.newest_result(tmp_path, "docgen.json")


def test_the_stored_training_results_load_by_folder_and_repeat():
    bench, report = bench_module(), report_module()
    all_results = report.load_all(ROOT)
    assert {"2026-11-25_h100", "2026-12-01_h200"} <= set(all_results)
    h100 = all_results["2026-11-25_h100"]
    assert {"q_padded", "q_default", "b_padded", "b_fast"} <= set(h100)
    assert [r["repeat"] for r in h100["q_default"]] == [1, 2, 3, 4]  # repeats of one variant, not new variants
    assert all(r["name"] in bench.VARIANTS for runs in h100.values() for r in runs)


def test_the_fixed_batch_check_fails_on_changed_loss_or_labels():
    report = report_module()
    results = report.load_folder(H100)
    fast, padded = results["q_default"][0], results["q_padded"][0]
    assert report.compare(fast, padded)["pass"]
    off_loss = copy.deepcopy(fast)
    off_loss["check"]["loss"] *= 1.01
    assert not report.compare(off_loss, padded)["pass"]
    other_labels = copy.deepcopy(fast)
    other_labels["check"]["trained_tokens"] -= 1
    assert not report.compare(other_labels, padded)["pass"]
    far_tokens = copy.deepcopy(fast)  # same loss, but per-token log-probs as far off as a mask error's
    far_tokens["check"]["log_probs"] = [x + 0.5 for x in far_tokens["check"]["log_probs"]]
    assert not report.compare(far_tokens, padded)["pass"]


def test_the_adapter_probe_and_loss_curve_are_compared_where_both_results_have_them():
    report = report_module()
    results = report.load_folder(H100)
    fast, padded = copy.deepcopy(results["q_default"][0]), copy.deepcopy(results["q_padded"][0])
    assert "adapter_probe" not in fast["check"]  # recorded before the probe: compared without it
    assert "probe_rel_loss_diff" not in report.compare(fast, padded)
    probe = {"loss": 11.0, "std": 0.01, "log_probs": [-10.0] * padded["check"]["trained_tokens"]}
    padded["check"]["adapter_probe"] = probe
    fast["check"]["adapter_probe"] = copy.deepcopy(probe)
    same = report.compare(fast, padded)
    assert same["pass"] and same["probe_rel_loss_diff"] == 0
    fast["check"]["adapter_probe"]["loss"] = 11.0 * 1.01  # the adapters computed differently: base scores agree
    assert not report.compare(fast, padded)["pass"]
    fast["check"]["adapter_probe"] = {**probe, "log_probs": [-9.5] * len(probe["log_probs"])}
    assert not report.compare(fast, padded)["pass"]

    assert report.loss_curve_diff(fast, padded) is None  # neither logged its steps
    padded["train_log"] = [[1, 11.0, 2.0], [2, 10.0, 2.1], [3, 9.0, 2.2]]
    fast["train_log"] = [[2, 10.5, 2.0], [3, 9.0, 2.0], [4, 8.0, 2.0]]
    assert report.loss_curve_diff(fast, padded) == (0.05, 2)


def test_a_folder_without_the_padded_run_checks_against_the_shipped_recipe():
    report = report_module()
    results = report.load_folder(ROOT / "2026-12-01_h200")
    assert "q_padded" not in results
    assert report.reference_for(results, results["q_default_b6_offload"][0]) == "q_default"
    assert report.check_against_reference(results, results["q_default"][0]) is None  # the reference itself
    ref_name, c = report.check_against_reference(results, results["q_default_b6_offload"][0])
    assert ref_name == "q_default" and c["pass"]


def test_every_benchmark_variant_is_a_valid_recipe_with_its_overrides_applied(tmp_path):
    from eeve_sft.training.recipe import parse_recipe

    bench = bench_module()
    for variant in bench.VARIANTS.values():
        keys = bench.bench_keys(variant, "m", "d", tmp_path / variant.name, cpu_smoke=False)
        path = tmp_path / f"{variant.name}.yaml"
        path.write_text(yaml.safe_dump({"base_recipe": str(REPO / variant.recipe), **keys}), encoding="utf-8")
        recipe = parse_recipe(path, [], check_device=False)
        values = {**vars(recipe.script), **vars(recipe.training), **vars(recipe.model), **vars(recipe.project)}
        for key, value in variant.overrides.items():
            name = {
                "activation_checkpointing": "gradient_checkpointing",
                "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs",
            }.get(key, key)
            assert values.get(name, values.get(key)) == value, (variant.name, key)


def test_the_variants_file_rejects_unknown_presets_hooks_fields_and_duplicates(tmp_path):
    variants_module = load_module("variants")
    base = {
        "recipes": {"default": "recipes/eeve_banmal.yaml"},
        "references": {"qlora": ["q_a"]},
        "presets": {"liger": {"use_liger_kernel": True}, "compile": {"torch_compile": True, "env": {"A": "1", "B": 2}}},
    }
    good = {
        "name": "q_a",
        "family": "qlora",
        "label": "a",
        "recipe": "default",
        "use": ["liger", "compile"],
        "overrides": {"per_device_train_batch_size": 6},
        "env": {"B": "3"},
    }
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump({**base, "variants": [good]}), encoding="utf-8")
    variants, refs = variants_module.load_variants(path)
    assert variants["q_a"].overrides == {
        "use_liger_kernel": True,
        "torch_compile": True,
        "per_device_train_batch_size": 6,
    }
    assert variants["q_a"].env == {"A": "1", "B": "3"}  # a preset's environment, the variant's own set last
    assert variants["q_a"].recipe == "recipes/eeve_banmal.yaml" and refs == {"qlora": ["q_a"]}
    for bad, message in [
        ({**good, "use": ["nope"]}, "no preset 'nope'"),
        ({**good, "hooks": ["x"]}, "unknown hook"),
        ({**good, "stepz": 3}, "unknown field"),
        ({**good, "recipe": "other"}, "recipe must be"),
        ({**good, "data": "random"}, "data must be one of speed, learnable"),
    ]:
        path.write_text(yaml.safe_dump({**base, "variants": [bad]}), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            variants_module.load_variants(path)
    path.write_text(yaml.safe_dump({**base, "variants": [good, good]}), encoding="utf-8")
    with pytest.raises(ValueError, match="defined twice"):
        variants_module.load_variants(path)


def test_the_fp32_input_cast_hook_gives_back_the_casts_build_trainer_skips_under_bf16():
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from eeve_sft.training.modeling import skip_redundant_lora_input_casts
    from helpers import DEMO_MODEL

    bench = bench_module()
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(DEMO_MODEL), LoraConfig(r=4, target_modules=["q_proj"]))
    lora = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert skip_redundant_lora_input_casts(model) == len(lora) > 0  # what build_trainer does under bf16
    bench.apply_hooks(model, ())
    assert not any(m.cast_input_dtype_enabled for m in lora)  # a variant without the hook trains as shipped
    bench.apply_hooks(model, ("fp32_lora_input_cast",))
    assert all(m.cast_input_dtype_enabled for m in lora)


def test_the_flop_count_saves_exactly_the_down_projections_recomputed_base_product(tmp_path):
    out = tmp_path / "flops.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_flops", "--tiny", "--tokens", "48", "--write", str(out)],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["saved_flops"] == result["down_proj_forward_flops"] == 2 * 48 * 64 * 224  # tiny hidden, MLP
    assert result["flops"]["last_base_after_lora"] > 0 and "saved:" in proc.stdout
    # The stored EEVE-shaped count, and its rendering for RESULTS.md.
    stored = json.loads((REPO / "benchmarks/results/step_flops/eeve_layer_2048.json").read_text())
    assert stored["saved_flops"] == stored["down_proj_forward_flops"] == 2 * 2048 * 4096 * 14336
    block = load_module("step_flops").generated_block()
    assert "| 2,766.0 | 1,350.6 |" in block and "| 2,525.4 | 1,233.1 |" in block
    assert "exactly the down projection's forward product, **8.7% of the layer's step**" in block


def test_repeats_get_numbered_files_and_devices_short_names(tmp_path):
    bench = bench_module()
    assert bench.next_repeat(tmp_path, "q_default") == 1
    bench.result_path(tmp_path, "q_default", 1).write_text("{}")
    assert bench.next_repeat(tmp_path, "q_default") == 2
    assert bench.result_path(tmp_path, "q_default", 2).name == "q_default.run2.json"
    assert bench.device_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert bench.device_slug("NVIDIA H200") == "h200"


def test_gpu_clock_summaries_keep_to_the_timed_window_and_survive_missing_readings():
    clocks = load_module("gpu_clocks")
    row = clocks._parse("1980, 3201, 1980, [N/A], 700.00, 41, 99, 0x0000000000000004")
    assert row["sm_mhz"] == 1980 and row["power_w"] is None and row["event_reasons"] == "0x0000000000000004"
    samples = [
        {
            "unix": t,
            "sm_mhz": mhz,
            "power_w": w,
            "temp_c": 40.0,
            "util_pct": 100.0,
            "mem_mhz": 3201.0,
            "event_reasons": None,
        }
        for t, mhz, w in [(1, 345, 80.0), (2, 1980, 650.0), (3, 1440, 700.0), (4, 1800, None), (9, 345, 90.0)]
    ]
    timed = clocks.summarize(samples, (2, 4))
    assert timed["samples"] == 3 and timed["sm_mhz_min"] == 1440 and timed["sm_mhz_median"] == 1800
    assert timed["power_w_mean"] == 675.0  # the missing reading is left out, not counted as zero
    assert clocks.summarize(samples, (5, 8)) is None


@pytest.fixture(scope="module")
def tiny_model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    py = sys.executable
    subprocess.run(
        [py, "-m", "benchmarks.synthetic", "model", str(root / "model"), "--tiny"],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    subprocess.run(
        [
            py,
            "-m",
            "benchmarks.synthetic",
            "data",
            str(root / "data"),
            "--tokenizer",
            str(root / "model"),
            "--train",
            "64",
            "--eval",
            "8",
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    return root


def bench_cli(command: str, *args, root):
    """`python -m benchmarks.bench_train COMMAND --cpu-smoke ARGS` on the tiny model and data under `root`."""
    cmd = [sys.executable, "-m", "benchmarks.bench_train", command, "--cpu-smoke", *map(str, args)]
    cmd += ["--model", str(root / "model"), "--data", str(root / "data")]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO)


def test_every_scoring_path_of_the_variant_table_passes_the_fixed_batch_check_on_cpu(tiny_model_and_data):
    """A new variant with a new collator, attention or hook path is checked here before it reaches the GPU."""
    bench = bench_module()
    root = tiny_model_and_data
    proc = bench_cli("check", "--work", root / "w", root=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    paths = bench.scoring_paths(cpu_smoke=True)
    for name in paths:
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"{name}:"))
        refs = bench.REFERENCES[bench.VARIANTS[name].family]
        if any(importlib.util.find_spec(m) is None for m in bench.VARIANTS[name].needs):  # an extra not installed
            assert "not checked, needs" in line, line
            continue
        assert ("reference" in line) if name == refs[0] else ("PASS" in line), line
    packed = json.loads((root / "w/checks/q_packed.json").read_text())["check"]
    assert packed["leak_control_loss"] != packed["loss"]  # the packed path really scored a flattened batch
    assert packed["adapter_probe"]["loss"] != packed["loss"]  # the probe ran the adapters' arithmetic
    assert "q_default_fused" in paths  # the fused projections are one of the scoring paths checked above


def test_an_external_trainer_variant_without_its_packages_is_recorded_as_not_run(tmp_path):
    bench = bench_module()
    variant = bench.VARIANTS["x_unsloth_packed"]
    assert variant.runner == "unsloth" and "x_unsloth_packed" not in bench.scoring_paths(cpu_smoke=True)
    args = type(
        "Args",
        (),
        {"external_site": str(tmp_path / "empty"), "model": "m", "data": "d", "cpu_smoke": True, "timeout": 10},
    )()
    bench.run_one(variant, args, tmp_path / "work", tmp_path, "now")
    result = json.loads((tmp_path / "x_unsloth_packed.json").read_text())
    assert result["status"] == "failed" and result["error"] == "needs unsloth (not installed)"


def test_the_external_runner_trains_the_tokens_and_answer_masks_the_project_trains(tiny_model_and_data):
    from transformers import AutoTokenizer

    from eeve_sft.training.data import tokenize_conversation

    external = load_module("bench_external")
    root = tiny_model_and_data
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    keys = {"max_length": 256, "assistant_only_loss": True}
    dataset, _ = external.training_rows(str(root / "data"), tokenizer, keys)
    first = json.loads((root / "data/train.jsonl").read_text().splitlines()[0])["messages"]
    expected = tokenize_conversation(first, tokenizer, 256, True)
    assert dataset[0]["input_ids"] == expected["input_ids"]
    assert dataset[0]["assistant_masks"] == [int(x != -100) for x in expected["labels"]]
    assert 0 < sum(dataset[0]["assistant_masks"]) < len(dataset[0]["input_ids"])  # answer only, not the prompt


def test_the_external_runners_trainer_config_trains_the_answer_tokens_only(tiny_model_and_data, tmp_path):
    """TRL, given training_rows' data and the runner's config, builds the labels the project's tokenizer made."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    bench, external = bench_module(), load_module("bench_external")
    root = tiny_model_and_data
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    variant = bench.VARIANTS["x_unsloth_packed"]
    keys = {**load_module("variants").recipe_keys(variant.recipe), **variant.overrides, "max_length": 256}
    dataset, rows = external.training_rows(str(root / "data"), tokenizer, keys)
    config = external.trainer_config(variant, keys, tmp_path)
    assert config["packing"] and config["padding_free"]
    config.update(bf16=False, use_cpu=True, optim="adamw_torch")  # CPU: no bf16 autocast, no paged 8-bit Adam
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(root / "model"),
        args=SFTConfig(**config),
        train_dataset=dataset.select(range(6)),
        processing_class=tokenizer,
    )
    labels = [x for row in trainer.train_dataset["labels"] for x in row]  # packed rows, in order
    assert labels == [x for r in rows[:6] for x in r["labels"]]  # the project's labels, prompt masked
    trained = sum(1 for x in labels if x != -100)
    assert trained < sum(len(r) for r in trainer.train_dataset["input_ids"])  # prompts are not trained


def test_the_generation_section_renders_every_stored_run():
    bench = load_module("bench_generate")
    block = bench.generated_block(REPO / "benchmarks/results/generation")
    assert "| bf16 fast auto | 224 |" in block and "| nf4 plain b64 | 64 |" in block


def test_generation_targets_are_judged_on_the_figures(tmp_path):
    bench = load_module("bench_generate")
    document = {
        "variants": [{"variant": "bf16 fast b64", "step_ms": 14.9}, {"variant": "bf16 fast auto", "eval_s": 121.0}]
    }
    lines = bench.target_lines(document)
    assert lines[0].endswith("(bf16 fast b64), met") and lines[1].endswith("(bf16 fast auto), missed")
    assert lines[2].endswith("not measured in this run")


def test_the_scaling_model_counts_the_ring_all_reduce():
    model = load_module("scaling_model")
    assert model.LORA_PARAMS == 251_658_240  # r 64 on q, k, v, o, gate, up, down of 48 layers
    ddp = model.SETUPS[0]
    # Ring all-reduce of the fp32 LoRA gradients over 16 GPUs: 2 x 15/16 x 1.007 GB at 80% of 400 GB/s, plus the
    # latency of 41 buckets x 30 ring steps x 10 us.
    seconds = model.comm_seconds_per_step(ddp, 16, model.NETWORKS[0])
    assert 2 * 15 / 16 * model.LORA_PARAMS * 4 / (0.8 * 400e9) < seconds < 0.03
    assert model.comm_seconds_per_step(ddp, 1, model.NETWORKS[0]) == 0.0


def test_the_docgen_section_renders_both_stages_of_the_stored_run():
    bench = load_module("bench_docgen")
    result = REPO / "benchmarks/results/docgen/2026-12-01_h200/docgen.json"
    block = bench.generated_block(result)
    document = json.loads(result.read_text(encoding="utf-8"))
    assert [s["stage"] for s in document["stages"]] == ["questions", "answers"]
    assert "| answers | 53 |" in block and "**Rows per hour: 17,223 warm**" in block


def test_docgen_rows_per_hour_counts_an_answer_and_a_share_of_a_question_prompt():
    bench = load_module("bench_docgen")
    stages = [
        {"stage": "questions", "prompts": 10, "new_tokens": 100, "warm_s": 20.0, "cold_s": 80.0},
        {"stage": "answers", "prompts": 20, "new_tokens": 200, "warm_s": 60.0, "cold_s": 120.0},
    ]
    t = bench.throughput({"questions_per_chunk": 2, "stages": stages})
    assert t["warm"]["seconds_per_row"] == 60 / 20 + 20 / (10 * 2)  # 3 s of answer, 1 s of question per row
    assert t["warm"]["rows_per_hour"] == 900 and t["warm"]["tokens_per_row"] == 250
    assert t["cold"]["seconds_per_row"] == 120 / 20 + 80 / 20
    assert bench.throughput({"questions_per_chunk": 2, "stages": stages[:1]}) is None  # answers never ran


def test_a_profiled_step_is_summarised_by_kernel_family():
    bench = bench_module()

    from torch.autograd import DeviceType

    class Event:
        def __init__(self, key, count, us, host_us=0):
            self.key, self.count, self.self_device_time_total, self.self_cpu_time_total = key, count, us, host_us
            # Operators and launches run on the host; kernels on the device.
            on_host = key.startswith(("aten::", "cuda"))
            self.device_type = DeviceType.CPU if on_host else DeviceType.CUDA

    class Profile:
        def key_averages(self):
            return [
                Event("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN", 700, 600_000),
                Event("void kDequantizeBlockwise<__nv_bfloat16, 512, 64, 8, 2>(float*, ...)", 336, 30_000),
                Event("triton_tem_fused_flex_attention_0", 96, 120_000),
                Event("_rms_norm_forward_kernel", 97, 10_000),
                Event("void at::native::vectorized_elementwise_kernel<4, ...>", 2000, 200_000),
                Event("cudaLaunchKernel", 5000, 0, 400_000),  # host-side rows carry no device time
                Event("aten::mm", 700, 600_000, 90_000),  # its kernels' time again: not counted twice
                Event("some_unknown_kernel", 1, 40_000),
            ]

    text = bench.kernel_summary(Profile(), 1.25, "q_default, optimizer step 2")
    assert text.startswith(
        "torch profiler, q_default, optimizer step 2: wall 1250 ms, GPU kernels 1000 ms (80% of the wall time), "
        "3230 launches"
    )
    lines = text.splitlines()
    family = {line[:40].strip(): line[40:].split() for line in lines[3:10] if line.strip()}
    assert family["matmul (cuBLAS / CUTLASS)"] == ["600.0", "60.0%"]
    assert family["4-bit dequantize (bitsandbytes)"] == ["30.0", "3.0%"]
    assert family["flex attention"] == ["120.0", "12.0%"]
    assert family["other elementwise / reductions"] == ["200.0", "20.0%"]
    assert family["other"] == ["40.0", "4.0%"]
    top = lines[lines.index(next(x for x in lines if x.strip().startswith("calls"))) + 1]
    assert top.split()[:3] == ["700", "600.0", "60.0%"]
    # The host's operators follow, costliest first: the kernels' table never lists them.
    host = lines.index("host: 490 ms of CPU operators' own time")
    assert "cudaLaunchKernel" not in "\n".join(lines[:host])
    assert lines[host + 3].split() == ["5000", "400.0", "cudaLaunchKernel"]
    assert lines[host + 4].split() == ["700", "90.0", "aten::mm"]


def test_a_cpu_smoke_run_records_the_timing_every_steps_loss_and_the_adapter_probe(tiny_model_and_data, tmp_path):
    root = tiny_model_and_data
    proc = bench_cli(
        "run", "--variants", "c_fast_fused", "--work", tmp_path / "w", "--results", tmp_path / "results",
        "--date", "2026-12-01", root=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "results/2026-12-01_cpu/c_fast_fused.json").read_text())
    assert result["status"] == "ok" and result["tokens_per_s"] > 0
    assert [step for step, _, _ in result["train_log"]] == [1, 2, 3]  # max_steps 3 in the smoke run
    assert all(loss > 0 and grad_norm > 0 for _, loss, grad_norm in result["train_log"])
    probe = result["check"]["adapter_probe"]
    assert probe["loss"] != result["check"]["loss"] and len(probe["log_probs"]) == result["check"]["trained_tokens"]
    # A loss-curve variant trains on the learnable data, built beside the speed data on first use.
    recipe = yaml.safe_load((tmp_path / "w/runs/c_fast_fused/bench_recipe.yaml").read_text())
    assert recipe["dataset_name"] == f"{root / 'data'}-learnable" and result["data"] == "learnable"
    first = json.loads((root / "data-learnable/train.jsonl").read_text().splitlines()[0])
    assert first != json.loads((root / "data/train.jsonl").read_text().splitlines()[0])


def test_learnable_synthetic_words_follow_one_successor_table_and_speed_data_stays_as_measured():
    synthetic = load_module("synthetic")
    tokenizer = synthetic.build_tokenizer(40960)
    # The speed data the stored results were measured on: a change here would make new rows incomparable.
    speed = synthetic.make_rows(20, 1234, tokenizer)
    assert hashlib.sha256(json.dumps(speed).encode()).hexdigest().startswith("03c434876154b87a")

    def words(rows):
        return [[int(w[1:]) for w in m["content"].split()] for row in rows for m in row["messages"]]

    train, held_out = (
        words(synthetic.make_rows(300, 1234, tokenizer, True)),
        words(synthetic.make_rows(50, 7, tokenizer, True)),
    )
    vocabulary = {w for text in train for w in text}
    assert len(vocabulary) <= synthetic.LEARNABLE_WORDS and synthetic.EOS_ID not in vocabulary
    successor = {}
    for text in train:
        for a, b in zip(text, text[1:], strict=False):
            successor.setdefault(a, {}).setdefault(b, 0)
            successor[a][b] += 1
    table = {a: max(c, key=c.get) for a, c in successor.items()}
    pairs = [(a, b) for text in held_out for a, b in zip(text, text[1:], strict=False) if a in table]
    follows = sum(table[a] == b for a, b in pairs) / len(pairs)
    assert 0.6 < follows < 0.8  # another split's seed, the same table (LEARNABLE_FOLLOW 0.7)
    uniform = words(synthetic.make_rows(300, 1234, tokenizer))
    mean = sum(map(len, uniform)) / len(uniform)
    assert abs(sum(map(len, train)) / len(train) - mean) < 0.15 * mean  # the same length distribution


def test_a_loss_curve_check_fails_beyond_one_percent_or_on_other_steps_and_is_plotted(tmp_path):
    bench, report = bench_module(), report_module()
    assert bench.REFERENCES["bf16_curve"][0] == "c_fast_fused" and bench.VARIANTS["c_fast_fused"].data == "learnable"

    def result(name, losses):
        return {"name": name, "status": "ok", "family": "bf16_curve", "repeat": 1,
                "train_log": [[i + 1, loss, 1.0] for i, loss in enumerate(losses)]}  # fmt: skip

    ref = [10.0, 8.0, 6.0, 5.0]
    close = result("c_fast_fp8_fused_compile_noliger", [10.0, 8.05, 6.03, 4.98])
    results = {"c_fast_fused": [result("c_fast_fused", ref)], "c_fast_fp8_fused_compile_noliger": [close]}
    [(r, ref_name, c)] = report.curve_pairs(results)
    assert r is close and ref_name == "c_fast_fused" and c["pass"] and c["at_step"] == 2
    assert c["max_rel_diff"] == pytest.approx(0.05 / 8)
    far = result("c_fast_fp8_fused_compile_noliger", [10.0, 8.0, 6.07, 5.0])  # 1.2% at one step
    assert not report.curve_check(far, results["c_fast_fused"][0])["pass"]
    short = result("c_fast_fp8_fused_compile_noliger", ref[:3])  # a run that stopped early
    assert not report.curve_check(short, results["c_fast_fused"][0])["pass"]
    [plot] = report.write_curve_plots(tmp_path, results)
    assert plot.name == "c_fast_fp8_fused_compile_noliger.curve.png" and plot.read_bytes()[:4] == b"\x89PNG"
    table = report.curve_table("2026-12-02_h200", results)
    assert "| PASS |" in table and f"(results/train_speed/2026-12-02_h200/{plot.name})" in table


def test_a_variant_that_left_no_result_is_summarised_by_its_exception_line():
    bench = bench_module()
    log = [
        "Traceback (most recent call last):",
        '  File "bench_train.py", line 206, in fixed_batch_check',
        "torch._dynamo.exc.InternalTorchDynamoError: RuntimeError: accessing tensor output of CUDAGraphs | overwritten",
        "from user code:",
        '  File "modeling_llama.py", line 295, in forward',
        "    hidden_states = self.input_layernorm(hidden_states)",
        "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace",
    ]
    summary = bench.failure_summary(log, 1)
    assert summary == "exit 1: " + log[2]  # the exception, not the hints and frames printed after it
    assert bench.failure_summary(["step 1", "torch.OutOfMemoryError: CUDA out of memory."], 1) == "out of GPU memory"
    assert bench.failure_summary(["loading", "Killed", ""], "timeout") == "exit timeout: Killed"
    # In the report the message's own bars are escaped, so the row keeps its cells.
    report = report_module()
    failed = {"name": "b_fast_fused_cudagraphs", "status": "failed", "error": summary, "repeat": 1}
    table = report.report_table({"b_fast_fused_cudagraphs": [failed]})
    row = next(line for line in table.splitlines() if "CUDAGraphs" in line)
    cells = re.split(r"(?<!\\)\|", row)[1:-1]
    assert len(cells) == 12 and "CUDAGraphs \\| overwritten" in cells[2]


def test_a_compiled_variant_records_its_graphs_and_graph_breaks():
    import torch

    bench = bench_module()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def f(x):
        x = x * 2
        torch._dynamo.graph_break()
        return x + 1

    assert bench.compile_report()["graph_breaks"] == 0
    out = torch.compile(f, backend="eager")(torch.ones(3))
    assert out.tolist() == [3.0, 3.0, 3.0]
    report = bench.compile_report()
    assert report["graph_breaks"] == 1 and report["unique_graphs"] == 2
    assert len(report["break_reasons"]) == 1 and report["cudagraph_skips"] == 0
    torch._dynamo.reset()


def test_every_dpo_variant_is_a_valid_dpo_recipe(tmp_path):
    from benchmarks.bench_dpo import load_variants
    from eeve_sft.training.recipe import DPO_DATACLASSES, parse_recipe

    for name, variant in load_variants().items():
        keys = {"base_recipe": str(REPO / "recipes/eeve_banmal_dpo.yaml"), **variant.get("overrides", {})}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(keys), encoding="utf-8")
        recipe = parse_recipe(tmp_path / f"{name}.yaml", [], check_device=False, classes=DPO_DATACLASSES)
        for key, value in variant.get("overrides", {}).items():
            owner = next(part for part in (recipe.training, recipe.model, recipe.project) if hasattr(part, key))
            assert getattr(owner, key) == value, (name, key)


def test_a_profiled_dpo_smoke_run_keeps_the_profiled_step_out_of_its_timing(tiny_model_and_data, tmp_path):
    root = tiny_model_and_data
    cmd = [sys.executable, "-m", "benchmarks.bench_dpo", "run", "--cpu-smoke", "--profile", "--no-sft"]
    cmd += ["--variants", "dpo_adapter_twice", "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")]
    cmd += ["--date", "2026-12-05", "--model", str(root / "model"), "--data", str(root / "data")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / "r/2026-12-05_cpu"
    result = json.loads((folder / "dpo_adapter_twice.json").read_text())
    # The epoch's last step is the profiled one; the timing leaves it out, and the one warm-up step before.
    steps = len(result["train_log"])
    assert result["profiled"] and steps >= 3 and result["measured_steps"] == steps - 2
    assert result["tokens_per_s"] > 0 and result["tokens_per_s_with_reference_pass"] is None
    profile = (folder / "dpo_adapter_twice.profile.txt").read_text()
    assert profile.startswith(f"torch profiler, dpo_adapter_twice, optimizer step {steps} (1 micro-step): wall ")
    assert "CPU operators" in profile and "aten::mm" in profile


def test_the_dpo_report_counts_the_reference_pass_in_speed_and_memory(tmp_path):
    from benchmarks.bench_dpo import report_table

    def result(name, tok_s, pass_s=0.0, peak=12.0, pass_peak=8.0, family="dpo"):
        row = {"name": name, "status": "ok", "family": family, "label": name, "tokens_per_s": tok_s,
               "tokens_per_step": 10_000, "measured_steps": 7, "warmup_steps": 3, "reference_pass_seconds": pass_s,
               "peak_allocated_gib": peak, "peak_build_allocated_gib": pass_peak}  # fmt: skip
        (tmp_path / f"{name}.json").write_text(json.dumps(row))

    result("q_default_fused", 1000.0, family="sft")
    result("every_step", 800.0)  # no pass: its policy speed is the run's
    result("slow_pass", 900.0, pass_s=100.0)  # 0.9x while training, 0.47x with the pass spread over its tokens
    result("fast_pass", 900.0, pass_s=10.0)
    result("big_pass", 900.0, pass_s=10.0, pass_peak=17.0)
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[2:-1]]
            for line in report_table(tmp_path).splitlines() if line.startswith("| `")}  # fmt: skip
    assert rows["every_step"][4:] == ["–", "800", "0.80", "12.0", "–", "met"]
    assert rows["slow_pass"][2:] == ["0.90", "–", "100.0", "474", "0.47", "12.0", "8.0", "missed"]
    assert rows["fast_pass"][6:] == ["0.83", "12.0", "8.0", "met"]
    assert rows["big_pass"][-2:] == ["17.0", "missed"]
