"""data_prep/build_dataset.py: a successful run, and every mistake as one line on stderr with exit status 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eeve_sft.errors import run_cli
from helpers import FIXTURES, fixture_sources, write_mix

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data_prep" / "build_dataset.py"


def _load_cli():
    spec = importlib.util.spec_from_file_location("build_dataset_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = _load_cli()


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of the CLI, run the way its __main__ runs it."""
    with pytest.raises(SystemExit) as caught:
        run_cli(lambda: CLI.main(argv))
    return caught.value.code, capsys.readouterr().err


def one_line_error(argv: list[str], capsys) -> str:
    code, err = run_in_process(argv, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unknown_key_exits_2_with_a_suggestion(tmp_path, capsys):
    mix = write_mix(tmp_path, {"sources": fixture_sources(), "dedupe": {"exact": True}})
    line = one_line_error([str(mix), "--output", str(tmp_path / "out")], capsys)
    assert "unknown key 'dedupe'; did you mean 'dedup'?" in line
    assert not (tmp_path / "out").exists()


def test_wrong_type_exits_2(tmp_path, capsys):
    mix = write_mix(tmp_path, {"sources": fixture_sources(), "sample": {"size": "many"}})
    assert "'sample.size' expects an integer or null, got 'many'" in one_line_error([str(mix)], capsys)


def test_missing_mix_and_missing_source_file_exit_2(tmp_path, capsys):
    assert "mix file not found" in one_line_error([str(tmp_path / "nope.yaml")], capsys)
    sources = fixture_sources()
    sources[0]["path"] = str(tmp_path / "gone.jsonl")
    mix = write_mix(tmp_path, {"sources": sources})
    assert "file not found" in one_line_error([str(mix)], capsys)


def test_missing_column_exits_2_naming_the_columns(tmp_path, capsys):
    sources = fixture_sources()
    sources[2]["columns"] = {"instruction": "question", "output": "reply"}
    mix = write_mix(
        tmp_path, {"sources": sources, "speech_level": {"enabled": False}, "banmal_rewrite": {"enabled": False}}
    )
    line = one_line_error([str(mix), "--output", str(tmp_path / "out"), "--no-progress"], capsys)
    assert line.endswith("column 'reply' (columns.output) not found; it has: question, answer")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_and_bad_arguments_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x", encoding="utf-8")
    mix = write_mix(tmp_path, {"sources": fixture_sources()})
    assert "pass --overwrite" in one_line_error([str(mix), "--output", str(out)], capsys)
    assert "unrecognized arguments: --fast" in one_line_error([str(mix), "--fast"], capsys)
    assert "required: mix" in one_line_error([], capsys)


def test_subprocess_error_is_one_line_and_exit_2(tmp_path):
    mix = write_mix(tmp_path, {"sources": [{"path": str(FIXTURES / "qa.csv"), "colums": {}}]})
    result = subprocess.run([sys.executable, str(SCRIPT), str(mix)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: mix {mix}: unknown key 'sources[0].colums'; did you mean 'columns'?"]


def test_cli_builds_the_local_example_with_the_real_classifier(tmp_path):
    out = tmp_path / "local_example"
    mix = REPO / "data_prep" / "mixes" / "local_example.yaml"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(mix), "--output", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 10 train and 2 eval rows to {out}"
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["speech_level"]["assistant"]["after"]["banmal"] == 0
    assert stats["speech_level"]["rewrite"]["rows_rewritten"] == 6
    assert (out / "data_card.md").read_text(encoding="utf-8").startswith("# Data card: local_example")
