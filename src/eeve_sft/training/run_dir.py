"""A training run's output_dir: its layout, what training writes there, and the readers every tool uses.

recipe.yaml      the recipe as given, resolved (base recipes and command-line overrides applied)
run_info.json    command, code, packages, hardware, data, and the full configuration (every TRL default)
train.log        log records
metrics.jsonl    every logged metric with its step
summary.json     totals when training ends
checkpoint-N/    resumable checkpoints (with run_progress.json: training time up to that step)
final/           the final adapter
eval/            scripts/evaluate.py's evaluations, each a NAME.json with its NAME.md
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import yaml

from ..errors import UserError
from ..hub import looks_like_path
from ..jsonfiles import write_json
from ..versions import package_versions

PACKAGES = (
    "eeve-sft",
    "trl",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "bitsandbytes",
    "deepspeed",
    "liger-kernel",
    "tokenizers",
    "kiwipiepy",
    "torch",
)
PROGRESS_FILE = "run_progress.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


class RunDir:
    """One training run's folder. Paths are properties; readers raise :class:`UserError` on a broken file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    recipe_file = property(lambda self: self.path / "recipe.yaml")
    run_info_file = property(lambda self: self.path / "run_info.json")
    log_file = property(lambda self: self.path / "train.log")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    summary_file = property(lambda self: self.path / "summary.json")
    final_dir = property(lambda self: self.path / "final")
    eval_dir = property(lambda self: self.path / "eval")

    # ------------------------------------------------------------------------------------------- finding runs

    @classmethod
    def containing(cls, path: str | Path) -> RunDir | None:
        """The run that `path` (the run itself, its final/ or a checkpoint-N/) belongs to, or None."""
        path = Path(path).resolve()
        for candidate in (path, path.parent):
            if (candidate / "recipe.yaml").is_file():
                return cls(candidate)
        return None

    def find_near(self, name: str) -> Path | None:
        """A relative path that was written from another working directory: look for it in this run's parents
        (a run dir sits inside the checkout it was trained from). Paths that exist as given are returned as is."""
        if not name:
            return None
        given = Path(name).expanduser()
        if given.is_absolute() or given.exists():
            return given if given.exists() else None
        for parent in self.path.resolve().parents:
            if (parent / given).exists():
                return parent / given
        return None

    # ----------------------------------------------------------------------------------------- what it holds

    def holds_run(self) -> bool:
        """True when the folder already holds (part of) a training run."""
        if not self.path.is_dir():
            return False
        markers = ("recipe.yaml", "run_info.json", "trainer_state.json", "final")
        return any((self.path / m).exists() for m in markers) or bool(self.checkpoints())

    def check_can_train(self, overwrite: bool, resuming: bool) -> None:
        """Refuse to train into a folder that holds a run, unless resuming it or asked to overwrite."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"output_dir {self.path} exists and is not a directory")
        if self.holds_run() and not (overwrite or resuming):
            raise UserError(
                f"output_dir {self.path} already holds a run; pick another --output_dir, resume it with "
                "--resume_from_checkpoint true, or replace it with --overwrite_output_dir true"
            )

    def checkpoints(self) -> list[Path]:
        """checkpoint-N folders, by step."""
        if not self.path.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.path.iterdir() if (m := _CHECKPOINT.fullmatch(p.name)) and p.is_dir()
        ]
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def is_complete(self, training, checkpoint: str | Path) -> bool:
        """True when this run finished (final adapter and summary written), `checkpoint` (the one a resume would
        start from) is where it ended, and `training` asks for no more steps than it ran: resuming it would
        change nothing but its record."""
        if not (self.final_dir.is_dir() and self.summary_file.is_file()):
            return False
        summary = self.summary()
        step = _CHECKPOINT.fullmatch(Path(checkpoint).name)
        if step is None or int(step.group(1)) < (summary.get("global_step") or 0):
            return False  # resuming from an earlier checkpoint trains those steps again
        if training.max_steps and training.max_steps > 0:
            return training.max_steps <= (summary.get("global_step") or 0)
        return training.num_train_epochs <= self.configuration().get("num_train_epochs", 0)

    # ------------------------------------------------------------------------------------------------ readers

    def _json(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path} is not valid JSON") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} is not valid JSON")
        return data

    def recipe(self) -> dict:
        """The resolved recipe it was trained with, as written (empty when there is none)."""
        if not self.recipe_file.is_file():
            return {}
        try:
            data = yaml.safe_load(self.recipe_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raise UserError(f"{self.recipe_file} is not a readable recipe") from None
        return data if isinstance(data, dict) else {}

    def configuration(self) -> dict:
        """Every key's value as training used it, TRL's defaults included (run_info.json); for runs recorded
        before run_info.json held it, the recipe with TRL's defaults filled in."""
        recorded = self.run_info().get("configuration")
        if recorded:
            return recorded
        from .recipe import parse_recipe

        return full_configuration(parse_recipe(self.recipe_file, check_device=False))

    def run_info(self) -> dict:
        return self._json(self.run_info_file)

    def summary(self) -> dict:
        return self._json(self.summary_file)

    def metrics(self) -> list[dict]:
        """metrics.jsonl events; a half-written last line (a run still logging) is left out."""
        events = []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines() if self.metrics_file.is_file() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):
                    break
                raise UserError(f"{self.metrics_file} line {number} is not valid JSON") from None
        return events

    def evaluations(self) -> list[tuple[Path, dict]]:
        """Every evaluation of this run, oldest first: the ``eval*.json`` files scripts/evaluate.py wrote into eval/
        (one per evaluation), and an eval.json at the top as older versions wrote it. Other files there are not
        read (a comparison written into eval/, say)."""
        evaluations = []
        for path in [*sorted(self.eval_dir.glob("eval*.json")), self.path / "eval.json"]:
            if not path.is_file():
                continue
            document = self._json(path)
            if not isinstance(document.get("models"), list):
                raise UserError(f"{path} is not an evaluation result (from scripts/evaluate.py)")
            evaluations.append((path, document))
        return sorted(evaluations, key=lambda item: item[0].stat().st_mtime)

    def _cited_evaluation(self) -> tuple[Path, dict] | None:
        """The evaluation on the most prompts, the newest of those."""
        evaluations = list(enumerate(self.evaluations()))
        if not evaluations:
            return None
        return max(evaluations, key=lambda item: (_num_prompts(item[1][1]), item[0]))[1]

    def eval_file(self) -> Path | None:
        """The evaluation this run is reported with (its model card cites it): :meth:`_cited_evaluation`."""
        cited = self._cited_evaluation()
        return cited[0] if cited else None

    def evaluation(self) -> dict | None:
        """The parsed :meth:`eval_file`, or None when the run has none."""
        cited = self._cited_evaluation()
        return cited[1] if cited else None

    # -------------------------------------------------------------------------------------- what training writes

    def write_start(self, resolved_recipe: dict, run_info: dict) -> None:
        from .recipe import dump_recipe

        self.path.mkdir(parents=True, exist_ok=True)
        self.recipe_file.write_text(dump_recipe(resolved_recipe), encoding="utf-8")
        write_json(self.run_info_file, run_info)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def keep_metrics_until(self, step: int) -> None:
        """Drop the records logged after `step`: a resumed run logs those steps again from its checkpoint."""
        if not self.metrics_file.is_file():
            return
        kept = [
            line
            for line in self.metrics_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and _step_of(line) is not None and _step_of(line) <= step
        ]
        tmp = self.metrics_file.with_name(self.metrics_file.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(self.metrics_file)

    def progress_at(self, checkpoint: Path) -> dict:
        """What the run had done when `checkpoint` was saved (training seconds so far); empty if unrecorded."""
        return self._json(checkpoint / PROGRESS_FILE)

    def log_to_file(self) -> None:
        """Send this process's log records (ours, transformers', TRL's) to train.log as well."""
        import transformers

        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        logger = logging.getLogger("eeve_sft")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # transformers and TRL keep their own verbosity (warnings by default); their records reach the file too.
        transformers.utils.logging.add_handler(handler)
        logging.getLogger("trl").addHandler(handler)


def _num_prompts(document: dict) -> int:
    count = document.get("num_prompts")
    return count if isinstance(count, int) else 0


def _step_of(line: str) -> int | None:
    try:
        return json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=True, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _plain(value: object) -> object:
    """A configuration value as JSON holds it (enums by value, other objects by their text)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def full_configuration(recipe) -> dict:
    """Every key of the recipe's argument dataclasses with the value training uses, defaults included."""
    config = {}
    for obj in recipe.argument_objects:
        for f in dataclasses.fields(obj):
            if f.init:
                config[f.name] = _plain(getattr(obj, f.name))
    return dict(sorted(config.items()))


def machine_info(packages: tuple[str, ...] = PACKAGES) -> dict:
    """The code and machine a run (or a bug report, scripts/env.py) comes from: git commit, Python, platform,
    torch with its CUDA and GPUs, and the versions of `packages`."""
    import torch

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": package_versions(packages),
    }


def collect_run_info(
    argv: list[str], seed: int, fingerprints: dict[str, str], data_stats: dict, configuration: dict | None = None
) -> dict:
    return {
        "command": [sys.executable, *argv],
        **machine_info(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "seed": seed,
        "dataset_fingerprints": fingerprints,
        "data": data_stats,
        "configuration": configuration or {},
    }


def resolve_base_model(adapter_dir: Path, base: str) -> str:
    """Find the base model an adapter names: as given (cwd), then under each parent of the adapter, then the Hub.

    Training writes the base path exactly as the recipe gave it, often relative to the repository root, so a
    run directory moved or read from elsewhere still finds its base through the adapter's parents.
    """
    found = RunDir(adapter_dir).find_near(base)
    if found is not None and found.is_dir():
        return str(found)
    if not looks_like_path(base):
        return base  # a Hub id
    raise UserError(
        f"adapter {adapter_dir}: base model '{base}' not found (looked for it as given, "
        f"under the adapter's parent directories, and it is not a Hub id)"
    )
