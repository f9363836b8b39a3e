"""The demo recipe end to end: what a run leaves behind, reruns, resume, and refusing to overwrite."""

import json
import shutil
import sys

import pytest
from transformers import AutoTokenizer

from helpers import REPO, error_line, logged_losses, run_script, train_demo


def test_run_leaves_recipe_info_logs_and_a_final_adapter(demo_run):
    for name in ("recipe.yaml", "run_info.json", "train.log", "metrics.jsonl", "summary.json"):
        assert (demo_run / name).is_file(), name
    final = demo_run / "final"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
    ):
        assert (final / name).is_file(), name
    assert "Assistant:" in (final / "chat_template.jinja").read_text(encoding="utf-8")
    generation = json.loads((final / "generation_config.json").read_text())
    # The same stop ids, in the same order, as chat and merged models use: eos <|im_end|> first, then </s>.
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert tokenizer.eos_token == "<|im_end|>"
    assert generation["eos_token_id"] == [tokenizer.eos_token_id, 2] and generation["pad_token_id"] == 2

    info = json.loads((demo_run / "run_info.json").read_text())
    for key in (
        "git_commit",
        "git_dirty",
        "packages",
        "python",
        "torch",
        "cuda",
        "gpus",
        "dataset_fingerprints",
        "seed",
        "command",
    ):
        assert key in info, key
    assert info["packages"]["trl"] and info["dataset_fingerprints"]["train"]

    summary = json.loads((demo_run / "summary.json").read_text())
    assert summary["global_step"] == 12 and summary["best_eval_loss"] is not None
    assert summary["data"]["train"]["examples"] > 0
    assert "step 12" in (demo_run / "train.log").read_text(encoding="utf-8")


def test_every_checkpoint_carries_the_template(demo_run):
    checkpoints = sorted(demo_run.glob("checkpoint-*"))
    assert checkpoints
    for checkpoint in checkpoints:
        assert (checkpoint / "chat_template.jinja").is_file()
        assert (checkpoint / "adapter_model.safetensors").is_file()


def test_rerun_from_saved_recipe_logs_identical_losses(demo_run, tmp_path):
    rerun = tmp_path / "rerun"
    result = run_script(sys.executable, "scripts/sft.py", str(demo_run / "recipe.yaml"), "--output_dir", str(rerun))
    assert result.returncode == 0, result.stderr[-2000:]
    assert logged_losses(rerun) == logged_losses(demo_run)
    # The console ends with where the run is and what to do with it next.
    assert f"run written to {rerun}" in result.stdout
    assert f"scripts/chat.py --model-path {rerun / 'final'}" in result.stdout
    assert "is_gradient_checkpointing" not in result.stderr
    assert "Setting accelerator to CPU" not in result.stdout
    assert len(logged_losses(rerun)) >= 5


def test_output_dir_with_a_run_is_not_overwritten(demo_run):
    before = (demo_run / "metrics.jsonl").read_bytes()
    result = train_demo(demo_run)
    assert result.returncode == 2
    assert "already holds a run" in error_line(result)
    assert (demo_run / "metrics.jsonl").read_bytes() == before


def test_resume_from_latest_checkpoint(demo_run, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(demo_run, run)
    shutil.rmtree(run / "final")
    result = train_demo(run, "--resume_from_checkpoint", "true", "--max_steps", "14")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 14
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_bad_data_row_fails_before_training_and_writes_nothing(tmp_path):
    data = tmp_path / "bad.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "안녕하세요!"}]},
        {"messages": [{"role": "user", "content": "뭐 해?"}, {"role": "bot", "content": "쉬고 있어요."}]},
    ]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = train_demo(
        out,
        "--dataset_name",
        str(data),
        "--eval_strategy",
        "no",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result) == (
        f"error: {data} line 2: message 1 has role 'bot'; expected one of system, user, assistant"
    )
    assert not out.exists()


def test_missing_dataset_file_is_one_line(tmp_path):
    result = train_demo(tmp_path / "out", "--dataset_name", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: dataset file not found: {tmp_path / 'nope.jsonl'}"


def test_preview_json_matches_training_tokenization(demo_tokenizer):
    from eeve_sft.training.data import tokenize_conversation

    result = run_script(
        sys.executable, "scripts/preview_data.py", str(REPO / "recipes/demo_cpu.yaml"), "--num", "3", "--json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    for row in lines:
        expected = tokenize_conversation(row["messages"], demo_tokenizer, max_length=512)
        assert row["input_ids"] == expected["input_ids"] and row["labels"] == expected["labels"]


def test_preview_marks_trained_text(tmp_path):
    result = run_script(sys.executable, "scripts/preview_data.py", str(REPO / "recipes/demo_cpu.yaml"), "--num", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Human: " in result.stdout and "Assistant:⟦" in result.stdout and "<|im_end|>⟧" in result.stdout


def test_resuming_a_finished_run_leaves_it_as_it_was(demo_run, tmp_path):
    run = tmp_path / "finished"
    shutil.copytree(demo_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = train_demo(run, "--resume_from_checkpoint", "true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith(f"{run} is already complete (step 12)")
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_an_interrupted_run_resumed_reads_like_an_uninterrupted_one(demo_run, tmp_path):
    # As if training had been stopped after logging step 12 but before checkpoint-12 and the end were written.
    run = tmp_path / "interrupted"
    shutil.copytree(demo_run, run)
    for leftover in ("final", "checkpoint-12"):
        shutil.rmtree(run / leftover)
    (run / "summary.json").unlink()
    result = train_demo(run, "--resume_from_checkpoint", "true")
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    whole = [json.loads(line)["step"] for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == sorted(set(whole))
    assert logged_losses(run) == logged_losses(demo_run)  # every loss once, and the same as without the stop
    summary = json.loads((run / "summary.json").read_text())
    uninterrupted = json.loads((demo_run / "summary.json").read_text())
    assert summary["resumed_from_step"] == 6 and [p["steps"] for p in summary["parts"]] == [[0, 6], [6, 12]]
    assert summary["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-3)
    assert summary["train_runtime"] == pytest.approx(sum(p["train_runtime"] for p in summary["parts"]), abs=0.01)
    assert summary["parts"][0]["train_runtime"] > 0


def test_a_run_has_no_card_naming_a_base_model_of_none(demo_run):
    assert not (demo_run / "README.md").exists()
    cards = [p.read_text(encoding="utf-8") for p in demo_run.rglob("README.md")]
    assert not any("huggingface.co/None" in card for card in cards)


def test_a_run_records_its_whole_configuration(demo_run):
    import dataclasses

    from trl import SFTConfig

    config = json.loads((demo_run / "run_info.json").read_text())["configuration"]
    assert config["eval_fraction"] == 0.0 and config["lora_r"] == 8  # project and recipe keys
    default = next(f.default for f in dataclasses.fields(SFTConfig) if f.name == "adam_beta1")
    assert config["adam_beta1"] == default  # a TRL default the recipe never names
