"""Shared fixtures: the shipped demo model and one short demo training run reused by every test that needs it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

# The test process itself behaves as on a CPU with AVX512-BF16 (tests/avx512bf16/sitecustomize.py), before
# anything imports bitsandbytes; the CLIs that tests run get the same through helpers.run_script.
_spec = importlib.util.spec_from_file_location("avx512bf16_cpu", Path(__file__).parent / "avx512bf16/sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

from helpers import ACCELERATE, ACCELERATE_CPU, DEMO_MODEL, DEMO_RECIPE, run_script, train_demo  # noqa: E402  (after the CPU is set up)


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_tokenizer():
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.recipe import parse_recipe

    return tokenizer_for_recipe(parse_recipe(DEMO_RECIPE))


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory, worker_id) -> Path:
    """A folder every pytest-xdist worker of this session sees (the one above their own temporary folders)."""
    root = tmp_path_factory.getbasetemp()
    return root if worker_id == "master" else root.parent


@pytest.fixture(scope="session")
def demo_run(shared_tmp) -> Path:
    """A finished demo run, launched with `accelerate launch` as the README says.

    Trained once for the whole session: a lock makes the other workers wait for the first one's run instead of
    training it again on the same cores.
    """
    from filelock import FileLock

    out = shared_tmp / "demo-shared" / "run"
    with FileLock(str(shared_tmp / "demo-shared.lock")):
        if not (out / "final").is_dir():
            shutil.rmtree(out.parent, ignore_errors=True)  # a run another worker left half-done
            launcher = (*ACCELERATE, *ACCELERATE_CPU)
            result = train_demo(out, launcher=launcher)
            assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def deepspeed_comm_op(shared_tmp) -> Path:
    """DeepSpeed's CPU shared-memory op (deepspeed_shm_comm), compiled once for the session before any test launches
    DeepSpeed; the torch extensions folder it lives in is the session's own, set for every process tests start.

    Every DeepSpeed process compiles or loads this op under a lock file in that folder. Two launches compiling it at
    once on 2 cores outran the multi-machine tests' time limit, and a launch stopped while it held the lock left
    every later launch waiting for it forever: built here first, a launch only loads it.
    """
    pytest.importorskip("deepspeed", reason="DeepSpeed is installed with the dev extra")
    from filelock import FileLock

    folder = shared_tmp / "torch_extensions"
    os.environ["TORCH_EXTENSIONS_DIR"] = str(folder)
    with FileLock(str(shared_tmp / "torch_extensions.lock")):
        if not (folder / "built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            code = "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
            result = run_script(sys.executable, "-c", code, env={"TORCH_EXTENSIONS_DIR": str(folder)})
            assert result.returncode == 0, result.stderr[-3000:]
            (folder / "built").touch()
    return folder
