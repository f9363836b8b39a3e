"""Shared fixtures: the shipped demo model and one short demo training run reused by every test that needs it."""

from __future__ import annotations

import importlib.util
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


# Put on PYTHONPATH, this folder makes bitsandbytes behave as on a CPU with AVX512-BF16 (see its sitecustomize.py).
AVX512_BF16 = Path(__file__).resolve().parent / "avx512bf16"
BNB_NOISE = "Failed to load CPU gemm_4bit_forward from kernels-community"
# The test process itself too, before anything imports bitsandbytes.
_spec = importlib.util.spec_from_file_location("avx512bf16_cpu", AVX512_BF16 / "sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))


def run_script(*args: str, cwd: Path = REPO, timeout: int = 1200, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a project CLI the way a user does, from the repo root, with no network, on a CPU whose bitsandbytes
    prints its AVX512-BF16 notice at import (as some CI machines do), so every CLI test sees that noise."""
    path = os.pathsep.join(p for p in (str(AVX512_BF16), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": path, **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # a None in `env` removes that variable
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line a CLI printed, checked to be the last line of stderr and its only ``error:`` line.

    Other lines may be libraries' own notices at import (they differ between machines); the project's
    bitsandbytes one must never reach the user.
    """
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and BNB_NOISE not in result.stderr, result.stderr[-3000:]
    return errors[0]


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
    from eeve_sft.modeling import load_tokenizer

    return load_tokenizer(parse_recipe(DEMO_RECIPE))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A finished demo run, launched with `accelerate launch` as the README says."""
    out = tmp_path_factory.mktemp("demo") / "run"
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    result = train_demo(out, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
