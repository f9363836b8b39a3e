"""scripts/env.py: the environment a bug report needs, from the same collector that run records use."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from helpers import REPO, load_script, run_script


def test_env_reports_the_commit_machine_and_every_pinned_package(capsys):
    import torch

    load_script("env").main(["--json"])
    info = json.loads(capsys.readouterr().out)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert info["git_commit"] == head and isinstance(info["git_dirty"], bool)
    assert info["torch"] == torch.__version__ and info["gpus"] == [
        torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
    ]
    assert info["packages"]["trl"] == {
        "installed": metadata.version("trl"),
        "pinned": "==1.16.0",
        "extra": None,
        "matches": metadata.version("trl") == "1.16.0",
    }
    assert info["packages"]["liger-kernel"]["extra"] == "liger" and info["packages"]["pytest"]["extra"] == "dev"
    assert set(info["packages"]) >= {"transformers", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed"}


def test_env_text_marks_missing_and_mismatched_packages():
    env = load_script("env")
    info = {
        "eeve_sft": "0.1.0",
        "git_commit": "abc",
        "git_dirty": True,
        "python": "3.11.7",
        "platform": "Linux",
        "torch": "2.13.0",
        "cuda": "12.8",
        "gpus": ["NVIDIA H100 80GB HBM3"],
        "hub": "reachable",
        "packages": {
            "trl": {"installed": "1.16.0", "pinned": "==1.16.0", "extra": None, "matches": True},
            "peft": {"installed": "0.22.0", "pinned": "==0.21.2", "extra": None, "matches": False},
            "liger-kernel": {"installed": None, "pinned": "==0.8.5", "extra": "liger", "matches": False},
        },
    }
    assert env.render(info).splitlines() == [
        "- eeve-sft: 0.1.0, git abc (with uncommitted changes)",
        "- Python: 3.11.7",
        "- Platform: Linux",
        "- torch: 2.13.0, CUDA 12.8",
        "- GPUs: NVIDIA H100 80GB HBM3",
        "- Hugging Face Hub: reachable",
        "- trl: 1.16.0 (required)",
        "- peft: 0.22.0 (required)  <- not what setup.cfg pins: ==0.21.2",
        "- liger-kernel: not installed (extra liger, pinned ==0.8.5)",
    ]


def test_env_runs_as_a_command_without_noise():
    result = run_script(sys.executable, "scripts/env.py")
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    assert f"- trl: {metadata.version('trl')} (required)" in result.stdout.splitlines()
