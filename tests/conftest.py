"""Shared fixtures: the shipped demo model and one short demo training run reused by every test that needs it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

# The test process itself behaves as on a CPU with AVX512-BF16 (tests/avx512bf16/sitecustomize.py), before
# anything imports bitsandbytes; the CLIs that tests run get the same through helpers.run_script.
_spec = importlib.util.spec_from_file_location("avx512bf16_cpu", Path(__file__).parent / "avx512bf16/sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

from helpers import ACCELERATE, ACCELERATE_CPU, DEMO_MODEL, DEMO_RECIPE, train_demo  # noqa: E402  (after the CPU is set up)


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_tokenizer():
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.recipe import parse_recipe

    return tokenizer_for_recipe(parse_recipe(DEMO_RECIPE))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, worker_id) -> Path:
    """A finished demo run, launched with `accelerate launch` as the README says.

    Trained once for the whole session: pytest-xdist's workers share the folder above their own temporary folders,
    and a lock makes the others wait for the first one's run instead of training it again on the same cores.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    out = root / "demo-shared" / "run"
    with FileLock(str(root / "demo-shared.lock")):
        if not (out / "final").is_dir():
            shutil.rmtree(out.parent, ignore_errors=True)  # a run another worker left half-done
            launcher = (*ACCELERATE, *ACCELERATE_CPU)
            result = train_demo(out, launcher=launcher)
            assert result.returncode == 0, result.stderr[-3000:]
    return out
