"""Local path or Hub id, decided the same way by every CLI: a mistyped path fails at once with where it was looked
for, and a Hub that cannot be reached (as on this machine) fails at once in one line instead of the libraries'
retries, while a model in the local cache still loads."""

from __future__ import annotations

import shutil
import sys

import pytest

from eeve_sft.errors import UserError
from eeve_sft.hub import check_dataset, check_model, looks_like_path
from helpers import DEMO_MODEL, DEMO_RECIPE, REPO, error_line, run_script

# No offline mode and an endpoint nothing listens on: the Hub cannot be reached, as for a user without network.
UNREACHABLE = {"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"}


def test_the_path_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for path in ("/abs/model", "./model", "../model", "~/model", "outputs/nope", "a/b/c", "my model", "a\\b"):
        assert looks_like_path(path), path
    for hub_id in ("yanolja/EEVE-Korean-Instruct-10.8B-v1.0", "gpt2", "BAAI/bge-m3", "other/nope"):
        assert not looks_like_path(hub_id), hub_id
    assert looks_like_path("rows.jsonl", (".jsonl",)) and not looks_like_path("rows.jsonl")


def test_a_missing_path_fails_before_the_hub_is_asked(tmp_path, monkeypatch):
    import eeve_sft.hub as hub

    def no_hub():
        raise AssertionError("a path-like name must not reach the Hub check")

    monkeypatch.setattr(hub, "hub_unavailable", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(UserError, match=rf"^model path not found: outputs/nope \(looked for {tmp_path}/outputs/nope,"):
        check_model("outputs/nope")
    with pytest.raises(UserError, match=r"^dataset file not found: rows\.jsonl \(looked for"):
        check_dataset("rows.jsonl", (".jsonl",))
    assert check_model(str(DEMO_MODEL)) is False  # a local folder: no Hub, no cache-only loading


MISSING = "outputs/nope"  # reads like a Hub id, but outputs/ is a folder where the CLIs run, as after a first run
CLI_CASES = {
    "chat": (["scripts/chat.py", "--model-path", MISSING, "--prompt", "안녕"], "model path not found"),
    "evaluate": (["scripts/evaluate.py", "--model-path", "base", MISSING], "model path not found"),
    "merge": (["scripts/merge_adapter.py", "--model-path", MISSING, "--output", "merged"], "model path not found"),
    "generate": (
        ["data_prep/generate_from_docs.py", ".", "--model-path", MISSING, "--output", "gen"],
        "model path not found",
    ),
    "index": (
        ["data_prep/index_docs.py", str(REPO / "data/wms_docs"), "--output", "idx", "--embedding-model", MISSING],
        "embedding model path not found",
    ),
    "sft": (
        ["scripts/sft.py", str(DEMO_RECIPE), "--check", "--model_name_or_path", MISSING],
        "model_name_or_path not found",
    ),
    "preview": (
        [
            "scripts/preview_data.py",
            str(DEMO_RECIPE),
            "--model_name_or_path",
            str(DEMO_MODEL),
            "--dataset_name",
            MISSING,
        ],
        "dataset file not found",
    ),
}


@pytest.mark.parametrize("cli", CLI_CASES)
def test_every_cli_fails_at_once_on_a_missing_path_that_reads_like_a_hub_id(cli, tmp_path):
    (tmp_path / "outputs").mkdir()
    script, *argv = CLI_CASES[cli][0]
    result = run_script(sys.executable, str(REPO / script), *argv, cwd=tmp_path, env=UNREACHABLE)
    assert result.returncode == 2, result.stderr[-2000:]
    looked = f"(looked for {tmp_path / MISSING}, relative to the current directory)"
    assert error_line(result) == f"error: {CLI_CASES[cli][1]}: {MISSING} {looked}"
    assert "Retrying" not in result.stderr and "huggingface.co" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # nothing written


def test_a_hub_model_not_in_the_cache_fails_at_once_when_the_hub_cannot_be_reached(tmp_path):
    env = {**UNREACHABLE, "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = run_script(sys.executable, "scripts/chat.py", "--model-path", "no-org/no-model", "--prompt", "x", env=env)
    assert result.returncode == 2
    assert error_line(result) == (
        "error: cannot load model 'no-org/no-model': it is no local directory (looked for "
        f"{REPO / 'no-org/no-model'}, relative to the current directory) and no model in the local cache, and the "
        "Hub (http://127.0.0.1:9) cannot be reached"
    )


def test_a_hub_model_in_the_cache_loads_without_the_hub(tmp_path):
    # The demo model laid out as huggingface_hub caches a download of `demo-org/demo-model`.
    repo = tmp_path / "cache" / "models--demo-org--demo-model"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(DEMO_MODEL, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {**UNREACHABLE, "HF_HUB_CACHE": str(tmp_path / "cache")}
    argv = ["--model-path", "demo-org/demo-model", "--prompt", "안녕", "--max-new-tokens", "2", "--greedy"]
    result = run_script(sys.executable, "scripts/chat.py", *argv, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Retrying" not in result.stderr


def test_a_hub_dataset_fails_at_once_when_the_hub_cannot_be_reached(tmp_path):
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        "name: remote\nsources:\n  - hub: no-org/no-data\n    columns: {instruction: q, output: a}\n", encoding="utf-8"
    )
    result = run_script(
        sys.executable, "data_prep/build_dataset.py", str(mix), "--output", str(tmp_path / "o"), env=UNREACHABLE
    )
    assert result.returncode == 2
    assert error_line(result) == (
        "error: cannot load Hub dataset 'no-org/no-data': the Hub (http://127.0.0.1:9) cannot be reached "
        "(set HF_HUB_OFFLINE=1 to use a cached copy)"
    )
    assert not (tmp_path / "o").exists()
