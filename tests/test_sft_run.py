"""The demo recipe end to end: what a run leaves behind, reruns, resume, and refusing to overwrite."""

import json
import shutil
import sys

from transformers import AutoTokenizer

from helpers import REPO, logged_losses, run_script, train_demo


def test_run_leaves_recipe_info_logs_and_a_final_adapter(demo_run):
    for name in ("recipe.yaml", "run_info.json", "train.log", "metrics.jsonl", "summary.json"):
        assert (demo_run / name).is_file(), name
    final = demo_run / "final"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (final / name).is_file(), name
    assert "Assistant:" in (final / "chat_template.jinja").read_text(encoding="utf-8")
    generation = json.loads((final / "generation_config.json").read_text())
    # The same stop ids, in the same order, as chat and merged models use: eos <|im_end|> first, then </s>.
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert tokenizer.eos_token == "<|im_end|>"
    assert generation["eos_token_id"] == [tokenizer.eos_token_id, 2] and generation["pad_token_id"] == 2

    info = json.loads((demo_run / "run_info.json").read_text())
    for key in ("git_commit", "git_dirty", "packages", "python", "torch", "cuda", "gpus", "dataset_fingerprints",
                "seed", "command"):
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
    assert len(logged_losses(rerun)) >= 5


def test_output_dir_with_a_run_is_not_overwritten(demo_run):
    before = (demo_run / "metrics.jsonl").read_bytes()
    result = train_demo(demo_run)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and len(result.stderr.strip().splitlines()) == 1
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
    rows = [{"messages": [{"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "안녕하세요!"}]},
            {"messages": [{"role": "user", "content": "뭐 해?"}, {"role": "bot", "content": "쉬고 있어요."}]}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = train_demo(out, "--dataset_name", str(data), "--eval_strategy", "no", "--load_best_model_at_end", "false",
                        "--early_stopping_patience", "null")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: train row 1: message 1 has role 'bot'; expected one of system, user, assistant")
    assert not out.exists()


def test_missing_dataset_file_is_one_line(tmp_path):
    result = train_demo(tmp_path / "out", "--dataset_name", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: dataset file not found: {tmp_path / 'nope.jsonl'}"


def test_preview_json_matches_training_tokenization(demo_tokenizer):
    from eeve_sft.data import tokenize_conversation

    result = run_script(sys.executable, "scripts/preview_data.py", str(REPO / "recipes/demo_cpu.yaml"), "--num", "3", "--json")
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
