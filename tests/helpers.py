"""Helpers shared by several test files (fixtures stay in conftest.py).

Paths and running the CLIs as a user does, the demo training run, sample conversations, a LoRA adapter on the
demo model, and for the data-builder tests a small rule-based speech-level pair and mix-file writing: the fake
judges a sentence by its last word only, which is enough for the short, clean fixture sentences and keeps most
build tests free of the Kiwi model (the real classifier runs in the end-to-end tests).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from eeve_sft.data_prep.speech_level_stages import SpeechLevels
from eeve_sft.errors import run_cli
from eeve_sft.speech_level import BANMAL, MIXED, NEUTRAL, POLITE

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "assets" / "demo-model"
DEMO_RECIPE = REPO / "recipes" / "demo_cpu.yaml"

# `accelerate launch` on one CPU process as README's quickstart runs it: every value it would otherwise pick itself
# and announce in a block of "values not passed" is stated. The threads are its own choice, one per physical core.
ACCELERATE_CPU = (
    "--cpu",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--num_cpu_threads_per_process",
    str(max(psutil.cpu_count(logical=False) or 1, 1)),
)
ACCELERATE = (sys.executable, "-m", "accelerate.commands.launch")

# Short enough for CI, long enough to evaluate, checkpoint twice and keep the best model.
DEMO_RUN_FLAGS = ["--max_steps", "12", "--eval_steps", "6", "--save_steps", "6", "--logging_steps", "2"]


# Put on PYTHONPATH, this folder makes bitsandbytes behave as on a CPU with AVX512-BF16 (see its sitecustomize.py).
AVX512_BF16 = Path(__file__).resolve().parent / "avx512bf16"
BNB_NOISE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def run_script(
    *args: str, cwd: Path = REPO, timeout: int = 1200, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a project CLI the way a user does, from the repo root, with no network, on a CPU whose bitsandbytes
    prints its AVX512-BF16 notice at import (as some CI machines do), so every CLI test sees that noise."""
    path = os.pathsep.join(p for p in (str(AVX512_BF16), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": path,
        **(env or {}),
    }
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


def train_demo(
    output_dir: Path, *extra: str, launcher: tuple[str, ...] = (sys.executable,)
) -> subprocess.CompletedProcess:
    return run_script(
        *launcher, "scripts/sft.py", str(DEMO_RECIPE), "--output_dir", str(output_dir), *DEMO_RUN_FLAGS, *extra
    )


def logged_losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


# --------------------------------------------------------------------------- conversations and models

SINGLE = [
    {"role": "user", "content": "서울에서 부산까지 KTX로 얼마나 걸려?"},
    {"role": "assistant", "content": "보통 2시간 30분 정도 걸려요. 즐거운 여행 되세요! 🚄"},
]
MULTI = [
    {"role": "system", "content": "당신은 친절한 요리 선생님입니다."},
    {"role": "user", "content": "김치찌개 어떻게 끓여?"},
    {"role": "assistant", "content": "김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 20분 정도 끓이시면 돼요."},
    {"role": "user", "content": "그럼 두부는 언제 넣어?"},
    {
        "role": "assistant",
        "content": "마지막 5분 전에 넣으시면 부서지지 않아요.\n```python\nprint('맛있게 드세요')\n```",
    },
]
QUESTIONS = [
    [{"role": "user", "content": "오늘 저녁 뭐 먹을지 추천 좀 해줘"}],
    [{"role": "user", "content": "안녕"}],
    [
        {"role": "system", "content": "항상 존댓말로 답하세요."},
        {"role": "user", "content": "비 오는 날엔 뭐 하고 노는 게 좋을까? 길게 말해 줘"},
    ],
]


def make_adapter(directory: Path, base: str = "assets/demo-model") -> Path:
    """A LoRA adapter on the demo model with random (non-zero) weights, saved the way training saves one."""
    import torch  # imported here: most users of this module never load a model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(DEMO_MODEL).save_pretrained(directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base  # as a recipe gives it: relative to the repository root
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_error(capsys, script: str, argv: list[str]) -> str:
    """Run a script's main in-process as its __main__ does; return its single stderr line (exit status 2)."""
    main = load_script(script).main
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# --------------------------------------------------------------------------- data build

FIXTURES = REPO / "data_prep" / "example_sources"  # the sources of data_prep/mixes/local_example.yaml
_SENTENCE_END = re.compile(r"[.?!\n]+")
_POLITE_ENDINGS = ("요", "니다", "니까", "시오")
_TO_BANMAL = (
    ("해 주세요", "해 줘"),
    ("주세요", "줘"),
    ("인가요", "야"),
    ("나요", "니"),
    ("까요", "까"),
    ("세요", "어"),
)


def fake_sentence_level(sentence: str) -> str:
    sentence = sentence.strip()
    if not sentence or not ("가" <= sentence[-1] <= "힣"):
        return NEUTRAL
    return POLITE if sentence.endswith(_POLITE_ENDINGS) else BANMAL


def fake_classify_batch(texts: list[str], batch_size: int = 256) -> list[str]:
    labels = []
    for text in texts:
        seen = {fake_sentence_level(s) for s in _SENTENCE_END.split(text)} - {NEUTRAL}
        labels.append(MIXED if len(seen) > 1 else seen.pop() if seen else NEUTRAL)
    return labels


def fake_to_banmal_batch(texts: list[str]) -> list[str]:
    out = []
    for text in texts:
        for polite, plain in _TO_BANMAL:
            text = text.replace(polite, plain)
        out.append(text)
    return out


FAKE_SPEECH = SpeechLevels(fake_classify_batch, fake_to_banmal_batch)


def write_mix(folder: Path, settings: dict, name: str = "mix.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def fixture_sources() -> list[dict]:
    """The three fixture files, one per mapping style and format."""
    return [
        {
            "name": "alpaca_style",
            "path": str(FIXTURES / "alpaca.jsonl"),
            "columns": {"instruction": "instruction", "input": "input", "output": "output"},
            "weight": 2.0,
        },
        {
            "name": "sharegpt_style",
            "path": str(FIXTURES / "chat.json"),
            "columns": {
                "messages": "conversations",
                "role_key": "from",
                "content_key": "value",
                "role_aliases": {"human": "user", "gpt": "assistant"},
            },
        },
        {
            "name": "csv_qa",
            "path": str(FIXTURES / "qa.csv"),
            "columns": {"instruction": "question", "output": "answer"},
        },
    ]
