"""Several processes and several machines, on one CPU host, through the project's own launch paths.

Two "machines" are two `accelerate launch` commands with `--num_machines 2`, machine ranks 0 and 1 and
`--main_process_ip 127.0.0.1`, as `scripts/launch.slurm` writes them for a SLURM allocation; each starts one process,
and the two train the demo recipe together over gloo. Each machine runs in its own working directory (links to the
repository's files), so a file written by the wrong machine shows; output_dir is one shared folder, as a cluster's
shared file system would be.

Why the launch commands say `--config_file accelerate_configs/multi_node_ddp.yaml` and not `--cpu`: in
accelerate 1.15, `--cpu` (and a config with `distributed_type: MULTI_CPU`) selects its "simple" launcher, which
starts exactly ONE Python process whatever `--num_processes` and `--num_machines` say; only an `mpirun` hostfile
(`--mpirun_hostfile`, with Intel MPI or Open MPI installed) turns it into several, and each process then learns its
rank from MPI's environment variables. Without MPI every machine trains alone (world size 1). The DDP config's
`MULTI_GPU` path starts torchrun, which works on a host without GPUs; the demo recipe's `use_cpu: true` then makes
accelerate pick the CPU device and the gloo backend.

DeepSpeed ZeRO-2 and ZeRO-3 also run with 2 CPU processes (its CPU accelerator falls back to gloo without oneCCL).
DeepSpeed compiles its shared-memory communication op (`deepspeed_shm_comm`) on first use; the conftest's
`deepspeed_comm_op` fixture builds it once for the session before any DeepSpeed launch (a minute or two on 2 cores).

Bounds: every launch is stopped after NODE_TIMEOUT seconds, and every process a launch started (torchrun starts its
workers in sessions of their own, out of reach of a process-group kill) is killed when its test ends. A machine
whose processes fail after training has finished leaves torchrun on the other machine waiting 300 s at its exit
barrier (torch's fixed exit_barrier_timeout) before it exits with an error: that is the "hang at exit" of two
torchrun nodes, and why a test here must never leave one machine behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from eeve_sft.errors import UserError
from eeve_sft.training.distributed import is_lost_process, stop_when_a_process_is_lost
from helpers import DEMO_RECIPE, REPO, run_script

# A few steps, checkpoints every 2, no evaluation: short, and long enough to stop a machine mid-run and resume.
FLAGS = [
    "--max_steps",
    "6",
    "--logging_steps",
    "1",
    "--save_steps",
    "2",
    "--eval_strategy",
    "no",  # alone turns evaluation off: best-model loading and early stopping follow
]
GLOBAL_ROWS = 4  # packed rows per optimizer step: 4 in one process, 2 in each of two
# Two processes sum their gradients in another order than one process does. Steps 1 and 2 (the first at learning
# rate 0) differ by rounding only; then Adam's first updates, close to lr x the sign of each gradient, carry that
# rounding forward, growing it about tenfold per step. Elementwise, adapter weights whose gradients are near zero can
# even move the other way, so the adapter is compared as a whole (relative Frobenius norm of the difference).
# The bounds are docs/checkpoints-and-resume.md's, which gives the measured figures.
FIRST_STEPS_RTOL = 2e-7
LOSS_RTOL = 2.5e-4
ADAPTER_RTOL = 0.03
# Seconds any launch may take before the test stops it: a ZeRO-3 pair beside another test worker's training runs
# on 2 cores has taken over 240.
NODE_TIMEOUT = 480
REPO_ENTRIES = ("accelerate_configs", "assets", "data", "recipes", "scripts")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env() -> dict:
    # One thread per process: two processes share 2 cores. Offline like every test.
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


def slurm_commands(tmp_path: Path, nodes: int, recipe_args: list[str], **env: str) -> tuple[int, list[list[str]], str]:
    """Run scripts/launch.slurm under stand-ins for srun/scontrol/accelerate; return its exit status, the
    `accelerate` arguments each node would run, and its stderr."""
    fake = tmp_path / "fake_slurm"
    fake.mkdir(exist_ok=True)
    log = fake / "accelerate_calls.jsonl"
    log.unlink(missing_ok=True)
    scripts = {
        # srun: one task per node, one after the other, each with its SLURM_NODEID
        "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
        'for ((n = 0; n < SLURM_NNODES; n++)); do SLURM_NODEID=$n "$@" || exit $?; done\n',
        "scontrol": '#!/bin/bash\necho "$3" | tr , "\\n"\n',
        "accelerate": f"#!/bin/bash\nexec {shlex.quote(sys.executable)} -c "
        '"import json, sys; print(json.dumps(sys.argv[1:]))" "$@" >> ' + shlex.quote(str(log)) + "\n",
    }
    for name, text in scripts.items():
        (fake / name).write_text(text, encoding="utf-8")
        (fake / name).chmod(0o755)
    environment = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NODELIST": ",".join(["127.0.0.1"] + [f"node{i}" for i in range(1, nodes)]),
        **env,
    }
    result = subprocess.run(
        ["bash", "scripts/launch.slurm", *recipe_args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result.returncode, calls, result.stderr


def machine_dir(root: Path, rank: int) -> Path:
    """A working directory for one "machine": links to the repository's files, nothing else."""
    folder = root / f"machine{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in REPO_ENTRIES:
        if not (folder / name).exists():
            (folder / name).symlink_to(REPO / name)
    return folder


class Machines:
    """Both machines' `accelerate launch` processes; every process they start is stopped when the test ends."""

    def __init__(
        self,
        name: str,
        tmp_path: Path,
        output_dir: Path,
        *extra: str,
        config: str = "accelerate_configs/multi_node_ddp.yaml",
    ):
        port = free_port()
        status, calls, stderr = slurm_commands(
            tmp_path,
            2,
            [
                str(DEMO_RECIPE.relative_to(REPO)),
                "--output_dir",
                str(output_dir),
                "--per_device_train_batch_size",
                str(GLOBAL_ROWS // 2),
                *FLAGS,
                *extra,
            ],
            CONFIG=config,
            GPUS_PER_NODE="1",
            MAIN_PORT=str(port),
            ACCELERATE_ARGS="--mixed_precision no",
        )
        assert status == 0 and len(calls) == 2, stderr
        self.dirs = [machine_dir(tmp_path, rank) for rank in (0, 1)]
        self.logs = [tmp_path / f"{name}_machine{rank}.log" for rank in (0, 1)]
        self.procs = []
        for rank, args in enumerate(calls):
            with open(self.logs[rank], "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "accelerate.commands.launch", *args[1:]],
                        cwd=self.dirs[rank],
                        env=node_env(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        self.tree = [psutil.Process(p.pid) for p in self.procs]

    def processes(self, rank: int) -> list[psutil.Process]:
        """The launcher and everything under it (torchrun starts its workers in sessions of their own)."""
        try:
            return [self.tree[rank], *self.tree[rank].children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self, rank: int) -> None:
        """What a machine that loses power does: every process of it stops at once, nothing is cleaned up."""
        for proc in self.processes(rank):
            proc.kill()

    def wait(self, timeout: float = NODE_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return [proc.returncode for proc in self.procs]

    def output(self, rank: int) -> str:
        return self.logs[rank].read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        for rank in (0, 1):
            for proc in self.processes(rank):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


def wait_for(path: Path, machines: Machines, timeout: float = NODE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or any(p.poll() is not None for p in machines.procs):
            raise AssertionError(f"{path} did not appear:\n{machines.output(0)[-3000:]}")
        time.sleep(0.1)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def losses_by_step(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if "loss" in r}


def relative_weight_difference(a: Path, b: Path) -> float:
    """|a - b| / |b| over all the adapter's weights together (Frobenius norms)."""
    left, right = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert left.keys() == right.keys()
    difference = sum(float((left[k] - right[k]).pow(2).sum()) for k in left) ** 0.5
    return difference / sum(float(right[k].pow(2).sum()) for k in right) ** 0.5


def max_weight_difference(a: Path, b: Path) -> float:
    left, right = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert left.keys() == right.keys()
    return max(float((left[k] - right[k]).abs().max()) for k in left)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: one process, the same global batch (4 packed rows per step)."""
    out = tmp_path_factory.mktemp("one_process") / "run"
    result = run_script(
        sys.executable,
        "scripts/sft.py",
        str(DEMO_RECIPE),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        str(GLOBAL_ROWS),
        *FLAGS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """Two machines train; machine 1 dies after checkpoint-2; the run is relaunched with
    --resume_from_checkpoint true on both and finishes. Yields the run folder, the machines of the first launch and
    of the relaunch, and how long machine 0 took to stop after machine 1 died."""
    root = tmp_path_factory.mktemp("two_machines")
    out = root / "shared" / "run"
    first = Machines("first", root, out)
    try:
        checkpoint = out / "checkpoint-2"
        wait_for(checkpoint / "tokenizer_config.json", first)  # written last, by the checkpoint callback
        wait_for(checkpoint / "rng_state_1.pth", first)
        first.kill(1)
        died = time.monotonic()
        first.wait()
        stopped_after = time.monotonic() - died
    finally:
        first.stop()
    again = Machines("again", root, out, "--resume_from_checkpoint", "true")
    try:
        codes = again.wait()
        assert codes == [0, 0], again.output(0)[-3000:] + again.output(1)[-3000:]
    finally:
        again.stop()
    yield out, first, again, stopped_after


def test_launch_slurm_starts_one_accelerate_launch_per_node(tmp_path):
    status, calls, _ = slurm_commands(
        tmp_path,
        3,
        ["recipes/demo_cpu.yaml", "--system_prompt", "두 단어 이상"],
        SLURM_GPUS_ON_NODE="4",
        MAIN_PORT="29999",
    )
    assert status == 0 and len(calls) == 3
    for rank, args in enumerate(calls):
        flags = dict(zip(args[1::2], args[2::2], strict=False))
        assert args[0] == "launch"
        assert flags["--config_file"] == "accelerate_configs/multi_node_ddp.yaml"
        assert flags["--num_machines"] == "3" and flags["--num_processes"] == "12"
        assert flags["--machine_rank"] == str(rank)
        assert flags["--main_process_ip"] == "127.0.0.1" and flags["--main_process_port"] == "29999"
        assert flags["--rdzv_backend"] == "static" and "--same_network" in args
        assert args[-4:] == ["scripts/sft.py", "recipes/demo_cpu.yaml", "--system_prompt", "두 단어 이상"]


def test_launch_slurm_refuses_a_missing_recipe_in_one_line(tmp_path):
    status, calls, stderr = slurm_commands(tmp_path, 2, ["recipes/no_such_recipe.yaml"])
    assert status == 2 and not calls
    assert stderr.strip().splitlines() == [
        "error: recipes/no_such_recipe.yaml not found (submit from the repository root)"
    ]
    status, calls, stderr = slurm_commands(tmp_path, 2, [])
    assert status == 2 and not calls and stderr.strip().startswith("error: usage:")


def test_a_dead_machine_stops_the_other_with_one_clear_line(two_machines):
    out, first, _, stopped_after = two_machines
    assert first.procs[0].returncode not in (0, None)
    assert stopped_after < 120, "machine 0 kept waiting for the dead machine"
    errors = [line for line in first.output(0).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, first.output(0)[-3000:]
    assert "another process of this run stopped" in errors[0]
    assert f"resume from {out / 'checkpoint-2'} by relaunching every machine" in errors[0]


def test_only_collective_failures_become_the_lost_process_line(tmp_path):
    import torch.distributed as dist

    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error: Connection reset")
    for err in (gloo, dist.DistBackendError("NCCL communicator was aborted"), dist.DistNetworkError("timed out")):
        assert is_lost_process(err)
    assert not is_lost_process(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with (
        pytest.raises(UserError, match="no checkpoint was written yet"),
        stop_when_a_process_is_lost(tmp_path / "none"),
    ):
        raise gloo
    (tmp_path / "checkpoint-4").mkdir()
    resumed = f"resume from {tmp_path / 'checkpoint-4'} by relaunching"
    with pytest.raises(UserError, match=resumed), stop_when_a_process_is_lost(tmp_path):
        raise gloo
    with pytest.raises(ValueError, match="a bug"), stop_when_a_process_is_lost(tmp_path):
        raise ValueError("a bug")


def test_two_machines_train_as_one_process_and_resume(two_machines, one_process):
    out, _, _, _ = two_machines
    info = json.loads((out / "run_info.json").read_text(encoding="utf-8"))
    assert info["world_size"] == 2
    # The relaunch resumed from checkpoint-2 (a relaunch that started again from step 0 would not say so).
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["resumed_from_step"] == 2 and [p["steps"] for p in summary["parts"]] == [[0, 2], [2, 6]]
    # Every step's record once, none missing, in order: steps 1-2 from the first launch, 3-6 resumed.
    steps = [r["step"] for r in records(out) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    # The same global batch gives the same losses, step by step, within the rounding of summing gradients over two
    # processes; and an adapter closer to one process's final adapter than that is to its adapter two steps earlier.
    reference, resumed = losses_by_step(one_process), losses_by_step(out)
    assert [resumed[1], resumed[2]] == pytest.approx([reference[1], reference[2]], rel=FIRST_STEPS_RTOL)
    assert [resumed[s] for s in steps] == pytest.approx([reference[s] for s in steps], rel=LOSS_RTOL)
    apart = relative_weight_difference(out / "final", one_process / "final")
    two_steps = relative_weight_difference(one_process / "checkpoint-4", one_process / "final")
    assert apart < ADAPTER_RTOL and apart < two_steps


def test_only_the_main_process_writes_the_run_record(two_machines):
    out, first, _, _ = two_machines
    # One run folder: the record files once, one final adapter, checkpoints with every process's RNG state.
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len([line for line in lines if '"loss"' in line]) >= 6
    assert sorted(p.name for p in out.glob("final/adapter_model.safetensors")) == ["adapter_model.safetensors"]
    assert {p.name for p in (out / "checkpoint-6").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    # Neither machine wrote anything into its own working directory.
    for folder in first.dirs:
        assert sorted(p.name for p in folder.iterdir()) == sorted(REPO_ENTRIES)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_on_two_machines_trains_as_ddp(stage, two_machines, one_process, deepspeed_comm_op, tmp_path):
    ddp = two_machines[0]
    out = tmp_path / "shared" / "run"
    machines = Machines(
        f"zero{stage}", tmp_path, out, "--save_strategy", "no", config=f"accelerate_configs/multi_node_zero{stage}.yaml"
    )
    try:
        assert machines.wait() == [0, 0], machines.output(0)[-3000:] + machines.output(1)[-3000:]
    finally:
        machines.stop()
    assert json.loads((out / "run_info.json").read_text(encoding="utf-8"))["world_size"] == 2
    assert losses_by_step(out) == pytest.approx(losses_by_step(ddp), rel=1e-5)
    assert losses_by_step(out) == pytest.approx(losses_by_step(one_process), rel=LOSS_RTOL)
    # Under ZeRO-3 each process holds half of every LoRA weight: a save that did not gather them would differ.
    assert max_weight_difference(out / "final", ddp / "final") < 1e-5
