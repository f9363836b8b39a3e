"""How `dataset_name` is read: local files, split directories (the output of data_prep/), and the errors."""

import json
import sys

import pytest

from eeve_sft.errors import UserError
from eeve_sft.training.data import load_splits
from helpers import REPO, error_line, run_script

ROW = {"messages": [{"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "안녕하세요!"}]}


def write_rows(path, n):
    path.write_text("".join(json.dumps(ROW, ensure_ascii=False) + "\n" for _ in range(n)), encoding="utf-8")


def test_a_built_dataset_directory_gives_one_split_per_file_and_skips_metadata(tmp_path):
    write_rows(tmp_path / "train.jsonl", 3)
    write_rows(tmp_path / "eval.jsonl", 2)
    (tmp_path / "stats.json").write_text(json.dumps({"rows": 5}), encoding="utf-8")
    (tmp_path / "data_card.md").write_text("# card\n", encoding="utf-8")
    splits = load_splits(str(tmp_path))
    assert sorted(splits) == ["eval", "train"]
    assert (splits["train"].num_rows, splits["eval"].num_rows) == (3, 2)


def test_a_single_file_is_the_train_split(tmp_path):
    write_rows(tmp_path / "mine.jsonl", 4)
    splits = load_splits(str(tmp_path / "mine.jsonl"))
    assert list(splits) == ["train"] and splits["train"].num_rows == 4


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "stats.json").write_text("{}"), "holds no .jsonl or .parquet split files"),
        (lambda d: None, "holds no .jsonl or .parquet split files"),
    ],
)
def test_a_directory_without_split_files_is_refused(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(UserError, match=message):
        load_splits(str(tmp_path))


def test_a_missing_file_and_a_wrong_suffix_are_named(tmp_path):
    with pytest.raises(UserError, match="dataset file not found: ./nope.jsonl"):
        load_splits("./nope.jsonl")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="must end in .jsonl, .json or .parquet"):
        load_splits(str(tmp_path / "rows.csv"))


def test_an_unreadable_jsonl_file_is_one_error(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"messages": [\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"train.jsonl line 1: not valid JSON"):
        load_splits(str(tmp_path))


def test_a_malformed_line_is_named_by_its_file_and_line_once(tmp_path, capfd, caplog):
    """Line 4 (after a blank line 2) is line 4, not the parser's row 3, and no library error comes before it."""
    rows = tmp_path / "train.jsonl"
    rows.write_text(f"{json.dumps(ROW)}\n\n{json.dumps(ROW)}\n{{broken\n", encoding="utf-8")
    with pytest.raises(UserError) as raised:
        load_splits(str(rows))
    assert str(raised.value).startswith(f"{rows} line 4: not valid JSON")
    logged = capfd.readouterr().err + caplog.text
    assert "Failed to load JSON" not in logged and "row 3" not in logged
    rows.write_text(f"{json.dumps(ROW)}\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train.jsonl line 2: expected a JSON object, got an array"):
        load_splits(str(rows))


@pytest.mark.parametrize("script", ["scripts/sft.py", "scripts/preview_data.py"])
def test_an_empty_split_file_is_one_line_naming_it(tmp_path, script):
    write_rows(tmp_path / "train.jsonl", 3)
    (tmp_path / "eval.jsonl").write_text("\n", encoding="utf-8")
    extra = ["--check"] if script.endswith("sft.py") else ["--split", "eval"]
    result = run_script(
        sys.executable, script, str(REPO / "recipes/demo_cpu.yaml"), "--dataset_name", str(tmp_path), *extra
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result) == f"error: {tmp_path / 'eval.jsonl'} is empty: split 'eval' has no rows"
    (tmp_path / "eval.jsonl").unlink()
    (tmp_path / "train.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(UserError, match=r"train.jsonl is empty: split 'train' has no rows"):
        load_splits(str(tmp_path))


def test_a_name_that_is_neither_local_nor_on_the_hub_is_one_line():
    # data/ is a folder here, so data/not_built_yet can only be a path: it fails as one, without asking the Hub.
    result = run_script(
        sys.executable,
        "scripts/preview_data.py",
        str(REPO / "recipes/demo_cpu.yaml"),
        "--dataset_name",
        "data/not_built_yet",
    )
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: dataset file not found: data/not_built_yet (looked for {REPO / 'data/not_built_yet'}, relative to "
        "the current directory)"
    )
