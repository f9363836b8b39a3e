"""A run killed with SIGKILL at any moment resumes to exactly what the uninterrupted run gives.

One run is killed four times, each at a moment seen from outside (a file appearing, a record logged) or reached
by the process stopping itself there (tests/stop_at): between a save and the next step, during a step, during
evaluation, and during a save (model, optimizer and RNG state written, trainer state not yet). Each time it is
resumed with --resume_from_checkpoint true; a checkpoint folder as an older layout left it after a stopped save
(no trainer_state.json) sits among its checkpoints all along. On CPU training is bit-reproducible, so the resumed
run must log the same losses, step by step, and save the same adapter, to the bit.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from eeve_sft.training.run_dir import RunDir
from helpers import AVX512_BF16, DEMO_RECIPE, REPO, error_line, run_script

STOP_AT = Path(__file__).resolve().parent.parent / "stop_at"
# Short rows and few steps; a checkpoint and an evaluation every 2 steps; evaluation two rows at a time, so it
# lasts long enough (21 batches) to be caught from outside.
FLAGS = [
    "--max_steps",
    "6",
    "--save_steps",
    "2",
    "--eval_steps",
    "2",
    "--logging_steps",
    "1",
    "--max_length",
    "256",
    "--per_device_eval_batch_size",
    "2",
]
# One thread per process: the suite runs on 2 shared cores, where torch's threads would wait for each other.
ENV = {"OMP_NUM_THREADS": "1"}
TIMEOUT = 300


def start(out: Path, log: Path, *extra: str, **stop: str) -> subprocess.Popen:
    """scripts/sft.py on the demo recipe with FLAGS and `extra`; or, when `extra` holds the whole argument list
    (it names the recipe), with exactly those arguments."""
    path = os.pathsep.join(p for p in (str(STOP_AT), str(AVX512_BF16), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": path, **ENV, **stop}
    args = list(extra) if str(DEMO_RECIPE) in extra else [str(DEMO_RECIPE), "--output_dir", str(out), *FLAGS, *extra]
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "scripts/sft.py", *args],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def train(out: Path, *args: str) -> subprocess.CompletedProcess:
    """scripts/sft.py on the demo recipe into `out`, run to its end."""
    return run_script(sys.executable, "scripts/sft.py", str(DEMO_RECIPE), "--output_dir", str(out), *args, env=ENV)


def records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return found


def logged(out: Path, step: int, key: str) -> bool:
    return any(r["step"] == step and key in r for r in records(out))


def wait_until(condition, proc: subprocess.Popen, log: Path, poll: float = 0.002) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never reached the moment:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(poll)


def stopped(proc: subprocess.Popen) -> bool:
    try:
        return psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def losses(out: Path) -> list[tuple]:
    return [
        (r["step"], r.get("loss"), r.get("eval_loss"), r.get("num_tokens"))
        for r in records(out)
        if "loss" in r or "eval_loss" in r
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = train(out, *FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_adapter(uninterrupted, tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    resume = ("--resume_from_checkpoint", "true")

    # Between a save and the next step: stopped just after checkpoint-2 was renamed into place.
    proc = start(out, log, EEVE_TEST_STOP_AFTER_RENAME="checkpoint-2")
    wait_until(lambda: stopped(proc), proc, log)
    assert (out / "checkpoint-2" / "trainer_state.json").is_file() and not logged(out, 3, "loss")
    kill(proc)
    # A checkpoint folder as a stopped save of an older layout left it: everything but trainer_state.json.
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-4")
    (out / "checkpoint-4" / "trainer_state.json").unlink()

    # During a step: step 3 logged, step 4 under way.
    proc = start(out, log, *resume)
    wait_until(lambda: logged(out, 3, "loss"), proc, log)
    kill(proc)
    assert not logged(out, 4, "loss")

    # During evaluation: step 4 logged, its evaluation (which comes before its save) not finished.
    proc = start(out, log, *resume)
    wait_until(lambda: logged(out, 4, "loss"), proc, log, poll=0.001)
    proc.send_signal(signal.SIGSTOP)
    wait_until(lambda: stopped(proc), proc, log)
    assert not logged(out, 4, "eval_loss") and not (out / ".partial" / "checkpoint-4").exists()
    kill(proc)

    # During a save: adapter, optimizer, scheduler and RNG state written, trainer state not yet.
    proc = start(out, log, *resume, EEVE_TEST_STOP_BEFORE_OPEN=".partial/checkpoint-4/trainer_state.json")
    wait_until(lambda: stopped(proc), proc, log)
    staged = out / ".partial" / "checkpoint-4"
    assert (staged / "adapter_model.safetensors").is_file() and (staged / "optimizer.pt").is_file()
    assert not (out / "checkpoint-4" / "trainer_state.json").exists()
    kill(proc)

    # Ctrl-C during step 6: one line, no traceback, and the command that resumes the run.
    proc = start(out, log, *resume)
    wait_until(lambda: logged(out, 5, "loss"), proc, log)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=TIMEOUT) == 130
    console = log.read_text(errors="replace")
    assert "Traceback" not in console and "KeyboardInterrupt" not in console, console[-3000:]
    # Every resume so far passed over the incomplete folder in one line naming it and the checkpoint instead.
    assert [line for line in console.splitlines() if "is incomplete" in line] == [
        "checkpoint-4 is incomplete (no trainer_state.json: its save was stopped part-way); "
        "resuming from checkpoint-2 instead"
    ]
    assert f"resuming from {out / 'checkpoint-2'} (step 2)" in console.splitlines()
    last = console.strip().splitlines()[-1]
    assert last.startswith(f"stopped at step 5 (Ctrl-C); the last checkpoint is {out / 'checkpoint-4'}. Resume: ")
    command = shlex.split(last.split("Resume: ", 1)[1])
    assert command[:2] == ["python", "scripts/sft.py"] and command[-2:] == ["--resume_from_checkpoint", "true"]

    proc = start(out, log, *command[2:])  # the command as printed (its python is the one running the tests)
    assert proc.wait(timeout=TIMEOUT) == 0, log.read_text(errors="replace")[-3000:]
    console = log.read_text(errors="replace").splitlines()
    assert f"resuming from {out / 'checkpoint-4'} (step 4)" in console and "is incomplete" not in log.read_text()

    # The same record, step by step (each step once; TRL's token count continued), and the same adapter.
    assert losses(out) == losses(uninterrupted)
    assert [r["step"] for r in records(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    ours, theirs = (load_file(run / "final" / "adapter_model.safetensors") for run in (out, uninterrupted))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint-", "."))) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
    ]
    assert (out / "checkpoint-4" / "trainer_state.json").is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 6 and summary["resumed_from_step"] == 4
    assert summary["best_model_checkpoint"] == str(out / "checkpoint-6")


def test_a_full_disk_during_a_save_is_one_line_and_the_run_resumes_once_freed(tmp_path):
    # output_dir on a 3 MiB tmpfs: checkpoint-2 (about 2 MB) fits, checkpoint-4's optimizer state does not.
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        out = disk / "run"
        flags = ["--max_steps", "4", "--save_steps", "2", "--eval_strategy", "no", "--logging_steps", "1"]
        result = train(out, *flags)
        assert result.returncode == 2, result.stderr[-3000:]
        line = error_line(result)
        assert line.startswith(f"error: no space left on the device of {out} while saving checkpoint-4 (")
        assert line.endswith(
            "the unfinished checkpoint-4 was removed. Free space, then resume from checkpoint-2 with "
            "--resume_from_checkpoint true"
        )
        run = RunDir(out)
        assert [p.name for p in run.checkpoints()] == ["checkpoint-2"]
        assert run.checkpoint_problem(out / "checkpoint-2") is None and not run.staging_dir.exists()

        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        result = train(out, *flags, "--resume_from_checkpoint", "true")
        assert result.returncode == 0, result.stderr[-3000:]
        assert [r["step"] for r in run.metrics() if "loss" in r] == [1, 2, 3, 4]
        assert (out / "final" / "adapter_model.safetensors").is_file()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_the_resume_command_is_the_launch_command_with_resume_set(tmp_path):
    # A stand-in for `python -m accelerate.commands.launch FLAGS scripts/sft.py ARGS`: its child, under the
    # environment accelerate gives, prints the command that resumes it.
    child = (
        "import sys; from eeve_sft.training.launch import resume_command; "
        "sys.argv = sys.argv[1:]; print(resume_command())"
    )
    args = ["scripts/sft.py", "recipes/demo_cpu.yaml", "--output_dir", "out", "--resume_from_checkpoint", "out/x"]
    launcher = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[6:]])"
    flags = ["--cpu", "--num_processes", "1"]
    launch = [sys.executable, "-c", launcher, child, "accelerate.commands.launch", *flags, *args]
    result = run_script(*launch, env={"LOCAL_RANK": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == (
        "accelerate launch --cpu --num_processes 1 scripts/sft.py recipes/demo_cpu.yaml --output_dir out "
        "--resume_from_checkpoint true"
    )
