"""Run comparison: recipe diff, figures, loss curves (a real PNG) and the report, on two recorded runs."""

from __future__ import annotations

import json
import shutil
import sys

import matplotlib.image
import pytest

from eeve_sft.errors import UserError
from eeve_sft.evaluation.run_comparison import compare_runs, curves, differing_keys, load_run, run_figures
from helpers import REPO, error_line, run_script

RUNS = REPO / "tests" / "data" / "tools" / "runs"
RUN_A = RUNS / "r16_lr1e-4"
RUN_B = RUNS / "r64_lr2e-4_packing"


def test_report_shows_only_differing_keys_and_each_runs_figures(tmp_path):
    out = compare_runs([RUN_A, RUN_B], tmp_path / "cmp")
    report = (out / "compare.md").read_text(encoding="utf-8")
    diff = report.split("## Recipe differences")[1].split("## Results")[0]
    keys = [line.split("`")[1] for line in diff.splitlines() if line.startswith("| `")]
    assert keys == ["learning_rate", "lora_alpha", "lora_r", "packing"]  # not output_dir, not shared keys
    assert "| `learning_rate` | 0.0001 | 0.0002 |" in diff
    results = report.split("## Results")[1]
    assert "| best eval loss | 1.0461 | 1.0590 |" in results
    assert "| final eval loss | 1.0461 | 1.0673 |" in results  # run B got worse after its best eval
    assert "| peak GPU memory (GiB) | 13.8 | 19.4 |" in results
    assert "| wall time (h:mm:ss) | 1:31:00 | 1:10:10 |" in results
    # eval.json in the run's eval/ subdir (A) and in the run dir itself (B): the final adapter's rate,
    # not a checkpoint's
    assert "| 존댓말 rate | 92.5% | 97.5% |" in results
    assert "| 존댓말 rate measured on (prompts) | 40 | 40 |" in results
    assert "different prompt sets" not in report  # both on the same 40 prompts
    assert "![train and eval loss against step and tokens seen](loss_curves.png)" in report

    table = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in table["runs"]] == ["r16_lr1e-4", "r64_lr2e-4_packing"]
    assert table["differing_keys"]["lora_r"] == {"r16_lr1e-4": 16, "r64_lr2e-4_packing": 64}


def test_plot_is_a_two_panel_png(tmp_path):
    out = compare_runs([RUN_A, RUN_B], tmp_path)
    image = matplotlib.image.imread(out / "loss_curves.png")
    height, width = image.shape[:2]
    assert width > 2 * height > 1000  # two side-by-side panels at a readable size
    # Not a blank canvas: the curves put many distinct colours on it.
    assert len({tuple(px) for px in image[::7, ::7, :3].reshape(-1, 3).round(2).tolist()}) > 50


def test_eval_points_get_token_counts():
    run = load_run(RUN_A)
    points = curves(run)
    assert [p[0] for p in points["eval"]] == [100, 200, 300]
    logged = [e["eval_num_tokens"] for e in run.metrics if "eval_loss" in e]
    assert [p[2] for p in points["eval"]] == logged

    # Without TRL's eval_num_tokens the count is interpolated between the neighbouring train logs.
    run.metrics = [
        {"step": 10, "loss": 2.0, "num_tokens": 1000.0},
        {"step": 20, "loss": 1.5, "num_tokens": 3000.0},
        {"step": 15, "eval_loss": 1.8},
        {"step": 30, "eval_loss": 1.4},
    ]
    assert [p[2] for p in curves(run)["eval"]] == [2000.0, 4500.0]  # midpoint; past the last log, the average rate


def test_running_run_without_summary_uses_its_logs(tmp_path):
    run_dir = tmp_path / "still_running"
    shutil.copytree(RUN_B, run_dir)
    (run_dir / "summary.json").unlink()
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 301, "loss": 0.9')  # the trainer is mid-write
    figures = run_figures(load_run(run_dir))
    assert figures["best_eval_loss"] == 1.059 and figures["final_eval_loss"] == 1.0673
    assert figures["peak_gpu_memory_gib"] == 19.4 and figures["global_step"] == 300
    assert figures["tokens_per_second"] is None and not figures["finished"]
    report = (compare_runs([RUN_A, run_dir], tmp_path / "out") / "compare.md").read_text(encoding="utf-8")
    assert "`still_running` has no summary.json" in report


def _evaluation_on(source, target, rate, prompt_set=None, prompts_file=None, num_prompts=None):
    """`source`'s evaluation document with another rate (and another prompt set when given), written to `target`."""
    document = json.loads(source.read_text(encoding="utf-8"))
    if prompt_set:
        document.update(prompt_set=prompt_set, prompts_file=prompts_file, num_prompts=num_prompts)
    for model in document["models"]:
        model.update(num_prompts=document["num_prompts"], polite_rate=rate)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document), encoding="utf-8")


def test_rates_on_different_prompt_sets_are_not_set_side_by_side(tmp_path):
    run_b = tmp_path / RUN_B.name  # its eval.json names the models by the run's directory
    shutil.copytree(RUN_B, run_b)
    _evaluation_on(run_b / "eval.json", run_b / "eval.json", 0.5, "0123abcd4567", "mine.txt", 12)
    report = (compare_runs([RUN_A, run_b], tmp_path / "out") / "compare.md").read_text(encoding="utf-8")
    assert "| 존댓말 rate | — | — |" in report and "| 존댓말 rate measured on (prompts) | — | — |" in report
    flagged = [line for line in report.splitlines() if "No prompt set" in line]
    assert flagged == [
        "- No prompt set was evaluated for every run (`r16_lr1e-4`: eval/prompts_banmal.jsonl, 40 prompts; "
        "`r64_lr2e-4_packing`: mine.txt, 12 prompts): 존댓말 rates on different prompts are not compared. "
        "Evaluate each run on the same prompts (scripts/evaluate.py --prompts)."
    ]
    table = json.loads((tmp_path / "out" / "compare.json").read_text(encoding="utf-8"))
    assert [r["polite_rate"] for r in table["runs"]] == [None, None]


def test_the_evaluation_on_the_prompt_set_every_run_has_is_picked(tmp_path):
    """A later, smaller evaluation of one run does not displace the set both runs were evaluated on."""
    run_a, run_b = tmp_path / RUN_A.name, tmp_path / RUN_B.name
    shutil.copytree(RUN_A, run_a)
    shutil.copytree(RUN_B, run_b)
    full_a = run_a / "eval" / "eval.json"
    _evaluation_on(full_a, run_a / "eval" / "eval_mine_12p_aaaa.json", 0.5, "0123abcd4567", "mine.txt", 12)
    table = json.loads((compare_runs([run_a, run_b], tmp_path / "one") / "compare.json").read_text(encoding="utf-8"))
    assert [(r["polite_rate"], r["polite_prompts"]) for r in table["runs"]] == [(0.925, 40), (0.975, 40)]
    assert table["runs"][0]["polite_evaluation"] == str(full_a)
    assert table["polite_rate_note"] == (
        f"존댓말 rates on one prompt set, eval/prompts_banmal.jsonl, 40 prompts: `r16_lr1e-4` from {full_a}; "
        f"`r64_lr2e-4_packing` from {run_b / 'eval.json'}"
    )
    # Both runs on both sets: the larger set; a newer evaluation on it replaces the older one in the report.
    mine_b = run_b / "eval" / "eval_mine_12p_bbbb.json"
    _evaluation_on(run_a / "eval" / "eval_mine_12p_aaaa.json", mine_b, 0.25)
    for model in (doc := json.loads(mine_b.read_text(encoding="utf-8")))["models"]:
        model["model_path"] = model["model_path"].replace(RUN_A.name, RUN_B.name)  # run B's own models
    mine_b.write_text(json.dumps(doc), encoding="utf-8")
    newer = run_a / "eval" / "eval_prompts_banmal_40p_cccc.json"
    _evaluation_on(full_a, newer, 0.8)
    table = json.loads((compare_runs([run_a, run_b], tmp_path / "two") / "compare.json").read_text(encoding="utf-8"))
    assert [(r["polite_rate"], r["polite_prompts"]) for r in table["runs"]] == [(0.8, 40), (0.975, 40)]
    assert table["runs"][0]["polite_evaluation"] == str(newer)


def test_same_recipes_and_missing_keys():
    a, b = load_run(RUN_A), load_run(RUN_B)
    assert differing_keys([a, a]) == []
    del b.recipe["lora_dropout"]
    assert "lora_dropout" in differing_keys([a, b])  # set in one, default in the other


def test_demo_run_compares_with_a_recorded_run(demo_run, tmp_path):
    out = compare_runs([demo_run, RUN_A], tmp_path)
    report = (out / "compare.md").read_text(encoding="utf-8")
    assert "`model_name_or_path` | assets/demo-model | yanolja/EEVE-Korean-Instruct-10.8B-v1.0 |" in report
    figures = run_figures(load_run(demo_run))
    assert figures["finished"] and figures["best_eval_loss"] is not None and figures["train_loss"] is not None
    assert curves(load_run(demo_run))["train"] and all(p[2] for p in curves(load_run(demo_run))["train"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "run directory not found"),
        (lambda d: d.mkdir(), "has no training logs (metrics.jsonl)"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("")), "holds no log events"),
        (lambda d: (shutil.copytree(RUN_A, d), (d / "recipe.yaml").unlink()), "has no recipe.yaml"),
        (
            lambda d: (shutil.copytree(RUN_A, d), (d / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{}\n')),
            "line 2 is not valid JSON",
        ),
    ],
)
def test_bad_run_dirs_fail_with_one_line(tmp_path, make, message):
    run_dir = tmp_path / "run"
    make(run_dir)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare_runs([RUN_A, run_dir], tmp_path / "out")


def test_cli(tmp_path):
    result = run_script(sys.executable, "scripts/compare.py", str(RUN_A), str(RUN_B), "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "compare.md").is_file() and (tmp_path / "loss_curves.png").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(sys.executable, "scripts/compare.py", str(RUN_A), str(empty), "--output", str(tmp_path))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {empty} has no training logs (metrics.jsonl): not a training run, or it has not logged yet"
    )
