"""What a user sees from the CLIs: quick quiet --help, whole one-line errors, rows named by file and line, one flag
to turn evaluation off, a Hub that cannot be reached failing at once, and the check that runs without accelerate."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from eeve_sft.errors import UserError
from eeve_sft.training.recipe import parse_recipe
from helpers import ACCELERATE, ACCELERATE_CPU, BNB_NOISE, DEMO_RECIPE, REPO, error_line, run_script

CLIS = [
    "scripts/sft.py",
    "scripts/preview_data.py",
    "scripts/chat.py",
    "scripts/evaluate.py",
    "scripts/compare.py",
    "scripts/merge_adapter.py",
    "scripts/build_demo_model.py",
    "scripts/env.py",
    "scripts/web.py",
    "data_prep/build_dataset.py",
    "data_prep/speech_level.py",
]

# Runs a CLI's --help as its __main__ and reports which heavy libraries that imported.
HELP_PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    assert stop.code in (None, 0), stop.code
print("IMPORTED:", sorted(m for m in ("torch", "transformers", "trl", "bitsandbytes") if m in sys.modules))
"""


def load_script(path: str):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_").removesuffix(".py"), REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_simulated_cpu_prints_the_bitsandbytes_notice():
    # The noise the tests guard against is real: bitsandbytes' own CPU backend logs it on such a CPU.
    result = run_script(sys.executable, "-c", "import bitsandbytes")
    assert BNB_NOISE in result.stderr


@pytest.mark.parametrize("script", CLIS)
def test_help_imports_no_heavy_library_and_prints_nothing_on_stderr(script):
    result = run_script(sys.executable, "-c", HELP_PROBE, script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert "IMPORTED: []" in result.stdout
    assert "usage:" in result.stdout


def test_help_descriptions_are_whole():
    compare = run_script(sys.executable, "scripts/compare.py", "--help").stdout
    merge = run_script(sys.executable, "scripts/merge_adapter.py", "--help").stdout
    assert "and loss curves against step and tokens seen." in " ".join(compare.split())
    assert "ready for vLLM or TGI." in " ".join(merge.split())


def test_sft_help_points_to_the_keys_and_lists_them_by_dataclass(capsys):
    sft = load_script("scripts/sft.py")
    sft.main(["--help"])
    assert "--keys" in capsys.readouterr().out
    sft.main(["--keys"])
    listing = capsys.readouterr().out
    for group in (
        "== data (trl.ScriptArguments)",
        "== training (trl.SFTConfig",
        "== model, quantisation and LoRA",
        "== this project's keys",
    ):
        assert group in listing
    project = listing.split("== this project's keys")[1]
    assert "eval_fraction (default: 0.0)" in project and "learning_rate" not in project


def test_evaluation_off_takes_one_flag_and_says_what_followed():
    recipe = parse_recipe(DEMO_RECIPE, ["--eval_strategy", "no"])
    assert recipe.training.load_best_model_at_end is False
    assert recipe.project.early_stopping_patience is None
    assert recipe.resolved["load_best_model_at_end"] is False and recipe.resolved["early_stopping_patience"] is None
    (note,) = recipe.notes
    assert "load_best_model_at_end: false" in note and "early_stopping_patience: null" in note
    # A key given on the command line as well is left as given.
    assert parse_recipe(DEMO_RECIPE, ["--eval_strategy", "no", "--early_stopping_patience", "null"]).notes == [
        "eval_strategy is 'no', so evaluation is off: also set load_best_model_at_end: false"
    ]


def test_a_library_message_is_shown_whole():
    with pytest.raises(UserError) as err:
        parse_recipe(DEMO_RECIPE, ["--eval_strategy", "no", "--load_best_model_at_end", "true"])
    message = str(err.value)
    assert "but found" in message and "Evaluation strategy" in message and "\n" not in message


def _rows(bad_at: int, count: int = 12) -> str:
    good = {"messages": [{"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "안녕하세요!"}]}
    bad = {"messages": [{"role": "user", "content": "뭐 해?"}, {"role": "bot", "content": "쉬고 있어요."}]}
    return "".join(json.dumps(bad if i == bad_at else good, ensure_ascii=False) + "\n" for i in range(count))


HOLD_OUT = ["--eval_fraction", "0.25", "--dataset_test_split", "none"]


@pytest.mark.parametrize("flags", [HOLD_OUT, ["--eval_strategy", "no"]], ids=["eval_fraction", "no_eval"])
def test_a_bad_row_is_named_by_file_and_line(tmp_path, flags):
    from eeve_sft.training.assembly import select_data

    data = tmp_path / "rows.jsonl"
    data.write_text("\n" + _rows(bad_at=9), encoding="utf-8")  # a blank first line: row 9 is on line 11
    recipe = parse_recipe(DEMO_RECIPE, ["--dataset_name", str(data), *flags])
    with pytest.raises(UserError, match=rf"^{data} line 11: message 1 has role 'bot'"):
        select_data(recipe)


def test_not_found_paths_say_where_they_were_looked_for(tmp_path, monkeypatch):
    from eeve_sft.training.data import load_splits

    monkeypatch.chdir(tmp_path)
    looked = tmp_path / "data/local_exampel.jsonl"
    with pytest.raises(UserError, match=rf"looked for {looked}, relative to the current directory"):
        load_splits("data/local_exampel.jsonl")
    child = tmp_path / "child.yaml"
    child.write_text("base_recipe: missing.yaml\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"looked for {tmp_path / 'missing.yaml'}; base_recipe is relative to the"):
        parse_recipe(child)


UNREACHABLE = {"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"}
LOAD_DATASET = (
    "from eeve_sft.errors import run_cli; from eeve_sft.training.data import load_splits; "
    "run_cli(lambda: load_splits('someone/local_exampel'))"
)


@pytest.mark.parametrize("env", [UNREACHABLE, {"HF_HUB_OFFLINE": "1"}], ids=["unreachable", "offline"])
def test_a_dataset_the_hub_cannot_give_fails_at_once(env):
    result = run_script(sys.executable, "-c", LOAD_DATASET, env=env)
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith(
        "error: dataset 'someone/local_exampel' is not a local file or directory and cannot be loaded from the Hub: "
    )
    assert f"looked for {REPO / 'someone/local_exampel'}" in line
    assert "Retrying" not in result.stderr  # the libraries' retries are what took half a minute


@pytest.mark.parametrize("env", [UNREACHABLE, {"HF_HUB_OFFLINE": "1"}], ids=["unreachable", "offline"])
def test_a_model_the_hub_cannot_give_fails_at_once(env, tmp_path):
    result = run_script(
        sys.executable,
        "scripts/preview_data.py",
        str(DEMO_RECIPE),
        "--model_name_or_path",
        "no-such-org/no-such-model",
        env=env,
    )
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("error: cannot load a tokenizer from 'no-such-org/no-such-model': it is no local directory")
    assert ("HF_HUB_OFFLINE is set" if env.get("HF_HUB_OFFLINE") else "http://127.0.0.1:9") in line
    assert "Retrying" not in result.stderr


def test_check_runs_every_check_without_training(tmp_path, capsys):
    sft = load_script("scripts/sft.py")
    out = tmp_path / "out"
    sft.main([str(DEMO_RECIPE), "--check", "--output_dir", str(out)])
    said = capsys.readouterr().out
    assert "recipe, output_dir, tokenizer and data checked" in said and "train examples" in said
    assert not out.exists()


def test_accelerate_launch_quiet_keeps_the_clean_line_last(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"base_recipe: {DEMO_RECIPE}\nmax_seq_length: 128\n", encoding="utf-8")
    result = run_script(
        *ACCELERATE,
        "-q",
        *ACCELERATE_CPU,
        "scripts/sft.py",
        str(recipe),
    )
    assert result.returncode == 1  # accelerate launch turns every failure of the script into 1
    assert error_line(result).endswith("unknown key 'max_seq_length'; it was renamed, use 'max_length'")


def test_preview_shows_the_eval_examples_training_holds_out(capsys, monkeypatch):
    from eeve_sft.training.assembly import select_data

    monkeypatch.chdir(REPO)
    flags = ["--dataset_name", "data/demo/train.jsonl", "--eval_fraction", "0.1"]
    load_script("scripts/preview_data.py").main([str(DEMO_RECIPE), "--split", "eval", "--json", "--num", "2", *flags])
    shown = [json.loads(line)["messages"] for line in capsys.readouterr().out.splitlines()]
    held_out = select_data(parse_recipe(DEMO_RECIPE, flags)).eval
    assert len(shown) == 2 and shown == held_out["messages"][:2]
