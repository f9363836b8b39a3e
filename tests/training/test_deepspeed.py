"""The demo recipe under the shipped DeepSpeed configs, one process on CPU: the same losses and adapter as without
DeepSpeed, checkpoints that hold the adapter, and resuming. (Several GPUs are exercised outside CI.)"""

import shutil
import sys

import pytest
from safetensors.torch import load_file

from helpers import REPO, logged_losses, train_demo

pytest.importorskip("deepspeed", reason="DeepSpeed is installed with the dev extra")


def deepspeed_launcher(config: str) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / f"accelerate_configs/{config}.yaml"),
        "--num_processes",
        "1",
        "--mixed_precision",
        "no",
    )


def max_weight_difference(a, b) -> float:
    left, right = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert left.keys() == right.keys()
    return max(float((left[k] - right[k]).abs().max()) for k in left)


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory, deepspeed_comm_op):
    out = tmp_path_factory.mktemp("zero2") / "run"
    result = train_demo(out, launcher=deepspeed_launcher("deepspeed_zero2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_zero2_trains_as_without_deepspeed(zero2_run, demo_run):
    assert logged_losses(zero2_run) == pytest.approx(logged_losses(demo_run), rel=1e-5)
    for checkpoint in ("checkpoint-6", "checkpoint-12", "final"):
        assert (zero2_run / checkpoint / "chat_template.jinja").is_file()
        assert max_weight_difference(zero2_run / checkpoint, demo_run / checkpoint) < 1e-5


def test_zero3_saves_the_whole_adapter(demo_run, deepspeed_comm_op, tmp_path):
    out = tmp_path / "zero3"
    result = train_demo(out, launcher=deepspeed_launcher("deepspeed_zero3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert logged_losses(out) == pytest.approx(logged_losses(demo_run), rel=1e-5)
    # ZeRO-3 partitions parameters: a save that did not gather them would leave empty or different tensors.
    assert max_weight_difference(out / "final", demo_run / "final") < 1e-5


def test_zero2_resumes_from_a_checkpoint(zero2_run, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(zero2_run, run)
    shutil.rmtree(run / "checkpoint-12")
    (run / "metrics.jsonl").unlink()
    result = train_demo(run, "--resume_from_checkpoint", "true", launcher=deepspeed_launcher("deepspeed_zero2"))
    assert result.returncode == 0, result.stderr[-3000:]
    after_six = logged_losses(zero2_run)[3:]  # losses are logged every 2 steps: steps 8, 10 and 12
    assert logged_losses(run) == pytest.approx(after_six, rel=1e-5)
