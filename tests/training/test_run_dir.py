"""eeve_sft.training.run_dir.RunDir: the one place that knows a run folder's layout and reads it."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from eeve_sft.errors import UserError
from eeve_sft.training.run_dir import RunDir


def test_a_run_is_found_from_its_adapters(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "checkpoint-6").mkdir()
    (run / "recipe.yaml").write_text("lora_r: 8\n", encoding="utf-8")
    for path in (run, run / "final", run / "checkpoint-6"):
        assert RunDir.containing(path).path == run.resolve()
    assert RunDir.containing(tmp_path) is None


def test_checkpoints_are_ordered_by_step_not_by_name(tmp_path):
    for step in (100, 20, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    run = RunDir(tmp_path)
    assert [p.name for p in run.checkpoints()] == ["checkpoint-3", "checkpoint-20", "checkpoint-100"]
    assert run.latest_checkpoint().name == "checkpoint-100" and run.holds_run()


def test_a_relative_path_is_found_through_the_runs_parents(tmp_path, monkeypatch):
    (tmp_path / "data" / "set").mkdir(parents=True)
    run = RunDir(tmp_path / "outputs" / "run")
    monkeypatch.chdir(tmp_path / "data")  # somewhere the relative path does not resolve
    assert run.find_near("data/set") == tmp_path / "data" / "set"
    assert run.find_near("data/missing") is None


def test_every_evaluation_is_found_and_the_fullest_is_cited(tmp_path):
    run = RunDir(tmp_path)
    assert run.evaluations() == [] and run.evaluation() is None
    (tmp_path / "eval").mkdir()

    def evaluation(path, name, prompts, age):
        path.write_text(json.dumps({"num_prompts": prompts, "models": [{"name": name}]}), encoding="utf-8")
        os.utime(path, (age, age))

    evaluation(tmp_path / "eval.json", "top", 8, 1_000)  # where older versions wrote it
    evaluation(tmp_path / "eval" / "eval_p_8p_aaaa.json", "full", 8, 2_000)
    evaluation(tmp_path / "eval" / "eval_p_2p_bbbb.json", "limited", 2, 3_000)
    assert [path.name for path, _ in run.evaluations()] == ["eval.json", "eval_p_8p_aaaa.json", "eval_p_2p_bbbb.json"]
    # The newest evaluation on the most prompts: a later --limit run does not replace the full one.
    assert run.eval_file() == tmp_path / "eval" / "eval_p_8p_aaaa.json"
    assert run.evaluation()["models"][0]["name"] == "full"
    (tmp_path / "eval" / "compare.json").write_text("{}", encoding="utf-8")  # not an evaluation's name: not read
    assert len(run.evaluations()) == 3
    (tmp_path / "eval" / "eval_broken.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match=r"eval_broken.json is not an evaluation result"):
        run.evaluations()


def test_metrics_after_a_checkpoint_are_dropped_for_a_resume(tmp_path):
    run = RunDir(tmp_path)
    for step in (2, 4, 6, 8):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    run.keep_metrics_until(6)
    assert [e["step"] for e in run.metrics()] == [2, 4, 6]


def test_the_end_record_of_an_earlier_part_is_dropped_for_a_resume(tmp_path):
    run = RunDir(tmp_path)
    for step in (2, 4):
        run.append_metrics({"step": step, "loss": 1.0 / step, "train_runtime": 1.0})  # transformers logs it per step
    run.append_metrics({"step": 4, "train_runtime": 9.0, "train_loss": 0.4})
    run.keep_metrics_until(4)
    assert [(e["step"], "train_loss" in e) for e in run.metrics()] == [(2, False), (4, False)]


def test_a_checkpoint_without_trainer_state_is_passed_over(tmp_path):
    run = RunDir(tmp_path)
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}", encoding="utf-8")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_', encoding="utf-8")
    latest, notes = run.resumable_checkpoint()
    assert latest == tmp_path / "checkpoint-2"
    assert notes == [
        "checkpoint-6 is incomplete (no trainer_state.json: its save was stopped part-way)",
        "checkpoint-4 is incomplete (trainer_state.json is not valid JSON: its save was stopped part-way)",
    ]
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert run.resumable_checkpoint()[0] is None


def test_a_staged_folder_replaces_its_namesake_whole(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "old.bin").write_text("old", encoding="utf-8")
    staged = run.staged("checkpoint-4")
    (staged / "new.bin").write_text("new", encoding="utf-8")
    assert run.publish(staged, "checkpoint-4") == tmp_path / "checkpoint-4"
    assert [p.name for p in (tmp_path / "checkpoint-4").iterdir()] == ["new.bin"]
    assert not run.staging_dir.exists()  # nothing left beside the run
    # What a stopped save left in .partial/ is cleared before the same folder is written again.
    leftover = run.staging_dir / "checkpoint-6"
    leftover.mkdir(parents=True)
    (leftover / "optimizer.pt").write_text("half", encoding="utf-8")
    assert list(run.staged("checkpoint-6").iterdir()) == []


def test_a_checkpoint_of_another_lora_rank_is_refused(tmp_path):
    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    (checkpoint / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}), encoding="utf-8")
    run = RunDir(tmp_path)
    run.check_checkpoint_matches(checkpoint, SimpleNamespace(lora_r=16, lora_alpha=32, use_dora=False))
    with pytest.raises(UserError, match=r"checkpoint-6 holds an adapter with lora_r 16, but the recipe says lora_r 8"):
        run.check_checkpoint_matches(checkpoint, SimpleNamespace(lora_r=8, lora_alpha=32, use_dora=False))
