"""DPO after SFT on the CPU demo: pairs built from data/demo, the demo SFT run continued, the preference measure
moved to at least 0.9; the run read by compare and merged into one model; bad inputs stopped in one line."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from eeve_sft.errors import run_cli
from helpers import ACCELERATE, ACCELERATE_CPU, REPO, load_script, make_adapter, run_script

DPO_RECIPE = REPO / "recipes" / "demo_cpu_dpo.yaml"
# The fewest steps that still prove the point. A short system line keeps the prompts (and each step) short.
DPO_FLAGS = [
    "--max_steps", "6", "--learning_rate", "5e-3", "--max_length", "192", "--logging_steps", "2",
    "--eval_strategy", "steps", "--eval_steps", "6", "--save_steps", "6", "--load_best_model_at_end", "false",
    "--system_prompt", "존댓말로 답하세요.",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "demo_pairs"
    result = run_script(sys.executable, "data_prep/build_pairs.py", "data/demo", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def dpo_run(demo_run, demo_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "run"
    result = run_script(
        *ACCELERATE, *ACCELERATE_CPU, "scripts/dpo.py", str(DPO_RECIPE), "--sft_adapter", str(demo_run / "final"),
        "--dataset_name", str(demo_pairs), "--output_dir", str(out), *DPO_FLAGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SFT and DPO in one adapter" in result.stdout
    return out


def test_dpo_moves_the_held_out_preference_to_at_least_0_9(dpo_run, demo_run):
    summary = json.loads((dpo_run / "summary.json").read_text(encoding="utf-8"))
    preference = summary["preference"]
    assert preference["eval_pairs"] >= 35  # data/demo's eval split, less pairs whose prompt fills max_length
    assert preference["end"] >= 0.9 and preference["end"] > preference["sft_start"]
    assert summary["sft_adapter"] == str(demo_run / "final")
    metrics = [json.loads(line) for line in (dpo_run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0] == {"step": 0, "preference_sft_start": preference["sft_start"]}
    assert any("rewards/margins" in e for e in metrics) and any("eval_rewards/accuracies" in e for e in metrics)
    # final/ is one adapter (the policy): the frozen reference copy is not saved with it.
    assert (dpo_run / "final" / "adapter_model.safetensors").is_file() and not (dpo_run / "final" / "ref").exists()
    config = json.loads((dpo_run / "run_info.json").read_text())["configuration"]
    assert config["beta"] == 0.1 and config["sft_adapter"] == str(demo_run / "final")


def test_the_policy_starts_from_the_sft_adapter(dpo_run, demo_run):
    from safetensors.torch import load_file

    sft = load_file(demo_run / "final" / "adapter_model.safetensors")
    dpo = load_file(dpo_run / "final" / "adapter_model.safetensors")
    assert sft.keys() == dpo.keys()
    moved = [k for k in sft if not (sft[k] == dpo[k]).all()]
    assert moved and all((sft[k] - dpo[k]).abs().max() < 1.0 for k in sft)  # continued, not restarted


def test_compare_puts_sft_and_dpo_side_by_side(dpo_run, demo_run, tmp_path):
    from eeve_sft.evaluation.run_comparison import compare_runs

    out = compare_runs([demo_run, dpo_run], tmp_path / "cmp")
    report = (out / "compare.md").read_text(encoding="utf-8")
    summary = json.loads((dpo_run / "summary.json").read_text())["preference"]
    assert f"| preference on held-out pairs, SFT start | — | {100 * summary['sft_start']:.1f}% |" in report
    assert f"| preference on held-out pairs, end | — | {100 * summary['end']:.1f}% |" in report
    assert "| `sft_adapter` |" in report and "| `beta` |" in report
    assert "`lora_r`" not in report and "`lora_modules_to_save`" not in report  # the SFT adapter's, recorded as such
    assert "![reward margin and accuracy against step](reward_curves.png)" in report
    assert (out / "reward_curves.png").stat().st_size > 10_000


def test_merging_folds_both_stages_into_one_model(dpo_run, tmp_path):
    import torch

    from eeve_sft.inference.export import merge_adapter
    from eeve_sft.inference.loading import load_for_inference

    merged_dir = merge_adapter(str(dpo_run / "final"), tmp_path / "merged", dtype="float32")
    card = (merged_dir / "README.md").read_text(encoding="utf-8")
    assert "DPOTrainer" in card and "preference" in card
    adapter, tokenizer = load_for_inference(str(dpo_run / "final"), device="cpu")
    merged, _ = load_for_inference(str(merged_dir), device="cpu")
    ids = tokenizer("반말로 물어도 존댓말로 답해요", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(adapter(ids).logits, merged(ids).logits, atol=1e-4)


def test_pairs_of_like_length_share_batches_with_far_less_padding(demo_pairs, tmp_path):
    from eeve_sft.training.assembly import build_dpo_trainer
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.preference import resolve_sft_adapter, select_pairs
    from eeve_sft.training.recipe import DPO_DATACLASSES, parse_recipe

    overrides = [
        "--sft_adapter", str(make_adapter(tmp_path / "sft")), "--dataset_name", str(demo_pairs),
        "--output_dir", str(tmp_path / "run"), "--per_device_train_batch_size", "4",
        "--pad_to_multiple_of", "null",  # the demo's short pairs: widths of 64 would be mostly padding anyway
    ]  # fmt: skip
    recipe = parse_recipe(DPO_RECIPE, overrides, check_device=False, classes=DPO_DATACLASSES)
    assert recipe.training.train_sampling_strategy == "group_by_length"  # the shipped DPO recipe's, inherited
    trainer = build_dpo_trainer(recipe, tokenizer_for_recipe(recipe), select_pairs(recipe), resolve_sft_adapter(recipe))

    def padding_share() -> float:
        width = used = pairs = 0
        for batch in trainer.get_train_dataloader():
            width += batch["attention_mask"].numel()
            used += int(batch["attention_mask"].sum())
            pairs += len(batch["input_ids"]) // 2
        assert pairs == len(trainer.train_dataset)  # every pair once per epoch, grouped or not
        return 1 - used / width

    grouped = padding_share()
    trainer.args.train_sampling_strategy = "random"
    assert grouped < padding_share() / 2

    # The pairs are stored shortest first, so what reads them in stored order pads little too: TRL's reference pass
    # (precompute_ref_log_probs) and evaluation, both sequential.
    def stored_order_padding(dataset) -> float:
        masks = [batch["attention_mask"] for batch in trainer.get_eval_dataloader(dataset)]
        return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    stored = trainer.train_dataset
    assert stored_order_padding(stored) < stored_order_padding(stored.shuffle(seed=0)) / 2


def write_pairs(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        (path / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def dpo_error(capsys, argv: list[str]) -> str:
    """Run dpo.py's main in-process as its __main__ does: exit status 2 and one error line, the last on stderr
    (datasets may report the files it read before it)."""
    main = load_script("dpo").main
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


PAIR = {
    "prompt": [{"role": "user", "content": "뭐 먹을까?"}],
    "chosen": [{"role": "assistant", "content": "김밥은 어떠세요?"}],
    "rejected": [{"role": "assistant", "content": "김밥 어때?"}],
}


def test_bad_input_is_one_line_exit_2_and_nothing_written(demo_run, tmp_path, capsys):
    out = tmp_path / "run"
    base = [str(DPO_RECIPE), "--check", "--output_dir", str(out)]
    good = ["--sft_adapter", str(demo_run / "final")]

    missing = write_pairs(tmp_path / "missing", [PAIR, {k: v for k, v in PAIR.items() if k != "rejected"}])
    error = dpo_error(capsys, [*base, *good, "--dataset_name", str(missing)])
    assert f"{missing / 'train.jsonl'} line 2: missing field 'rejected'" in error
    same = write_pairs(tmp_path / "same", [PAIR, {**PAIR, "rejected": PAIR["chosen"]}])
    error = dpo_error(capsys, [*base, *good, "--dataset_name", str(same)])
    assert f"{same / 'train.jsonl'} line 2: 'chosen' and 'rejected' are the same answer" in error

    pairs = ["--dataset_name", str(write_pairs(tmp_path / "ok", [PAIR]))]
    error = dpo_error(capsys, [*base, *pairs, "--sft_adapter", str(tmp_path / "nowhere")])
    assert "sft_adapter not found" in error
    not_lora = tmp_path / "not_lora"
    not_lora.mkdir()
    error = dpo_error(capsys, [*base, *pairs, "--sft_adapter", str(not_lora)])
    assert "is not a LoRA adapter: it has no adapter_config.json" in error
    other = tmp_path / "other_base"
    shutil.copytree(demo_run / "final", other)
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/other"}))
    error = dpo_error(capsys, [*base, *pairs, "--sft_adapter", str(other)])
    assert "was trained on 'org/other', not on this recipe's model_name_or_path 'assets/demo-model'" in error
    assert not out.exists()

    # The pairs and adapter as they should be pass every check, and --check still writes nothing.
    assert load_script("dpo").main([*base, *good, *pairs]) is None
    assert "pairs checked (1 train pairs, 1 eval pairs)" in capsys.readouterr().out
    assert not out.exists()


def test_evaluate_reads_a_dpo_run_and_sft_points_a_dpo_recipe_to_dpo_py(dpo_run, demo_pairs):
    from eeve_sft.errors import UserError
    from eeve_sft.evaluation.loss import load_eval_data
    from eeve_sft.training.recipe import parse_recipe

    data = load_eval_data(dpo_run)  # --recipe RUN: the loss on the held-out pairs' chosen conversations
    first = json.loads((demo_pairs / "eval.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert data.conversations[0] == first["prompt"] + first["chosen"] and data.assistant_only_loss
    assert "chosen answers of" in data.description
    with pytest.raises(UserError, match="unknown key 'sft_adapter'; it is a key of DPO recipes: train those with"):
        parse_recipe(DPO_RECIPE, check_device=False)


def test_a_dpo_run_resumes_from_its_last_whole_checkpoint_on_the_same_pairs(
    dpo_run, demo_run, demo_pairs, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(dpo_run, run)
    (run / "checkpoint-8").mkdir()  # a save stopped part-way: no trainer_state.json
    args = [str(DPO_RECIPE), "--sft_adapter", str(demo_run / "final"), "--output_dir", str(run), *DPO_FLAGS]
    args[args.index("--max_steps") + 1] = "8"
    resume = ["--resume_from_checkpoint", "true"]

    # Other pairs than the run started with: refused before the model loads.
    changed = shutil.copytree(demo_pairs, tmp_path / "changed")
    rows = (changed / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (changed / "train.jsonl").write_text("".join(rows[:-1]), encoding="utf-8")
    error = dpo_error(capsys, [*args, "--dataset_name", str(changed), *resume, "--check"])
    assert f"the train rows of {changed} differ from those this run started with" in error

    result = run_script(
        *ACCELERATE, *ACCELERATE_CPU, "scripts/dpo.py", *args, "--dataset_name", str(demo_pairs), *resume
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert (
        "checkpoint-8 is incomplete (no trainer_state.json: its save was stopped part-way); "
        "resuming from checkpoint-6 instead"
    ) in lines
    assert f"resuming from {run / 'checkpoint-6'} (step 6)" in lines
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    before = json.loads((dpo_run / "summary.json").read_text(encoding="utf-8"))["preference"]["sft_start"]
    assert summary["global_step"] == 8 and summary["preference"]["sft_start"] == before  # not measured again
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in metrics if "loss" in e] == [2, 4, 6, 8]
    assert set(json.loads((run / "run_info.json").read_text())["data_digests"]) == {"train", "eval"}
    # final/ replaced whole by the adapter trained two steps further; nothing left half-written beside it.
    from safetensors.torch import load_file

    old = load_file(dpo_run / "final" / "adapter_model.safetensors")
    new = load_file(run / "final" / "adapter_model.safetensors")
    assert old.keys() == new.keys() and any(not (old[k] == new[k]).all() for k in old)
    assert not (run / ".partial").exists() and not (run / "final" / "ref").exists()
