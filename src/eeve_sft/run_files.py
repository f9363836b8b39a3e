"""What a run leaves in its output_dir so that it can be understood and rerun: the resolved recipe,
run_info.json (code, packages, hardware, data), train.log, metrics.jsonl and summary.json."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .errors import UserError
from .recipe import dump_recipe

RUN_MARKERS = ("recipe.yaml", "run_info.json", "trainer_state.json", "final")
PACKAGES = ("eeve-sft", "trl", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed",
            "liger-kernel", "tokenizers", "kiwipiepy", "torch")


def holds_run(output_dir: Path) -> bool:
    """True when output_dir already holds (part of) a training run."""
    if not output_dir.is_dir():
        return False
    return any((output_dir / m).exists() for m in RUN_MARKERS) or any(output_dir.glob("checkpoint-*"))


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to train into a directory that holds a run, unless resuming it or asked to overwrite."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output_dir {output_dir} exists and is not a directory")
    if holds_run(output_dir) and not (overwrite or resuming):
        raise UserError(
            f"output_dir {output_dir} already holds a run; pick another --output_dir, resume it with "
            "--resume_from_checkpoint true, or replace it with --overwrite_output_dir true"
        )


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def collect_run_info(argv: list[str], seed: int, fingerprints: dict[str, str], data_stats: dict) -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    return {
        "command": [sys.executable, *argv],
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "packages": versions,
        "seed": seed,
        "dataset_fingerprints": fingerprints,
        "data": data_stats,
    }


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_run_files(output_dir: Path, resolved_recipe: dict, run_info: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recipe.yaml").write_text(dump_recipe(resolved_recipe), encoding="utf-8")
    write_json(output_dir / "run_info.json", run_info)


def log_to_file(output_dir: Path) -> None:
    """Send this process's log records (ours, transformers', TRL's) to OUTPUT_DIR/train.log as well."""
    import transformers

    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("eeve_sft")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # transformers and TRL keep their own verbosity (warnings by default); their records reach the file too.
    transformers.utils.logging.add_handler(handler)
    logging.getLogger("trl").addHandler(handler)
