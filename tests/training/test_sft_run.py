"""The demo recipe end to end: what a run leaves behind, reruns, resume, and refusing to overwrite."""

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from eeve_sft.training.run_dir import RunDir
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
    assert f"resuming from {run / 'checkpoint-12'} (step 12)" in result.stderr.splitlines()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 14 and summary["resumed_from_step"] == 12
    assert [p["steps"] for p in summary["parts"]] == [[0, 12], [12, 14]]
    # The first 12 steps' records stay as they were; steps 13-14 follow, each once; the token counts go on.
    before, after = (RunDir(r).metrics() for r in (demo_run, run))
    assert [r for r in after if r["step"] <= 12] == [r for r in before if "train_loss" not in r]
    assert [r["step"] for r in after if "loss" in r] == [2, 4, 6, 8, 10, 12, 14]
    tokens = [r["num_tokens"] for r in after if "loss" in r]
    assert tokens == sorted(tokens) and tokens[-1] > tokens[-2] > 0
    assert [r["num_input_tokens_seen"] for r in after if "loss" in r][-1] == summary["num_input_tokens_seen"]
    # The final adapter is the best checkpoint's. transformers also evaluates at the last step when it falls
    # between eval_steps, so step 14 competes with step 12 (and wins only on a strictly lower loss).
    losses = {r["step"]: r["eval_loss"] for r in after if "eval_loss" in r}
    assert set(losses) == {6, 12, 14}
    best_step, other = (14, 12) if losses[14] < losses[12] else (12, 14)
    best = json.loads((run / "checkpoint-14" / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert best == str(run / f"checkpoint-{best_step}")
    assert same_weights(run / "final", run / best) and not same_weights(run / "final", run / f"checkpoint-{other}")


def same_weights(a, b) -> bool:
    left, right = (load_file(folder / "adapter_model.safetensors") for folder in (a, b))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_the_best_checkpoint_is_kept_and_early_stopping_stops(tmp_path):
    # A learning rate so high that evaluation gets worse after step 4: patience 2 stops the run after the
    # evaluations of steps 6 and 8, long before max_steps, and final/ is checkpoint-4's adapter, not the last.
    run = tmp_path / "early"
    result = run_script(
        sys.executable,
        "scripts/sft.py",
        str(REPO / "recipes/demo_cpu.yaml"),
        "--output_dir",
        str(run),
        *EARLY_STOPPING_FLAGS,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    evals = {r["step"]: r["eval_loss"] for r in RunDir(run).metrics() if "eval_loss" in r}
    assert sorted(evals) == [2, 4, 6, 8]
    assert evals[4] < evals[2] and evals[4] < evals[6] and evals[4] < evals[8]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 8  # of 12
    assert summary["best_model_checkpoint"] == str(run / "checkpoint-4")
    assert (summary["best_eval_loss"], summary["final_eval_loss"]) == (evals[4], evals[8])
    # save_total_limit 3 drops the oldest checkpoint, never the best.
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert same_weights(run / "final", run / "checkpoint-4") and not same_weights(run / "final", run / "checkpoint-8")


EARLY_STOPPING_FLAGS = [
    "--max_steps",
    "12",
    "--save_steps",
    "2",
    "--eval_steps",
    "2",
    "--logging_steps",
    "2",
    "--max_length",
    "256",
    "--learning_rate",
    "0.05",
    "--lr_scheduler_type",
    "constant",
    "--warmup_steps",
    "0",
    "--early_stopping_patience",
    "2",
]


def test_a_checkpoint_of_another_lora_rank_is_refused_before_training(demo_run, tmp_path):
    run = tmp_path / "other_rank"
    shutil.copytree(demo_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = train_demo(run, "--resume_from_checkpoint", "true", "--lora_r", "16")
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {run / 'checkpoint-12'} holds an adapter with lora_r 8, but the recipe says lora_r 16: resume it "
        f"with the recipe it was trained with ({run / 'recipe.yaml'}), or train into another --output_dir"
    )
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resuming_on_changed_data_is_refused(demo_run, tmp_path):
    run = tmp_path / "changed"
    shutil.copytree(demo_run, run)
    for leftover in ("final", "summary.json"):
        shutil.rmtree(run / leftover) if (run / leftover).is_dir() else (run / leftover).unlink()
    data = tmp_path / "data"
    shutil.copytree(REPO / "data" / "demo", data)
    rows = (data / "train.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(rows[7])
    row["messages"][-1]["content"] += " 감사합니다."
    rows[7] = json.dumps(row, ensure_ascii=False)
    (data / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = train_demo(run, "--resume_from_checkpoint", "true", "--dataset_name", str(data))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: the train rows of {data} differ from those this run started with (data_digests in "
        f"{run / 'run_info.json'}): a data file, the seed or eval_fraction changed since; restore them to resume, "
        "or train into another --output_dir"
    )
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


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
