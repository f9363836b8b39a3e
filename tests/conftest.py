"""Shared fixtures: the shipped demo model and one short demo training run reused by every test that needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "assets" / "demo-model"
DEMO_RECIPE = REPO / "recipes" / "demo_cpu.yaml"

# Short enough for CI, long enough to evaluate, checkpoint twice and keep the best model.
DEMO_RUN_FLAGS = ["--max_steps", "12", "--eval_steps", "6", "--save_steps", "6", "--logging_steps", "2"]


def run_script(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a project CLI the way a user does, from the repo root, with no network."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def train_demo(output_dir: Path, *extra: str, launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    return run_script(*launcher, "scripts/sft.py", str(DEMO_RECIPE), "--output_dir", str(output_dir),
                      *DEMO_RUN_FLAGS, *extra)


def logged_losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_tokenizer():
    from eeve_sft.recipe import parse_recipe
    from eeve_sft.modeling import tokenizer_for_recipe

    return tokenizer_for_recipe(parse_recipe(DEMO_RECIPE))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A finished demo run, launched with `accelerate launch` as the README says."""
    out = tmp_path_factory.mktemp("demo") / "run"
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    result = train_demo(out, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
