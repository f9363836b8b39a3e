"""What several benchmarks share: where things are, the machine and package lines of a result, and running a
benchmark module in a child process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
RESULTS_ROOT = REPO / "benchmarks" / "results"


def machine() -> str:
    """The CPU, its cores available to this process, Python and the OS, as one line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({model}), Python {platform.python_version()}, {platform.system()}"


def versions(names: tuple[str, ...]) -> str:
    """'name version' of each installed package in `names`."""
    from eeve_sft.versions import package_versions

    return ", ".join(f"{name} {v}" for name, v in package_versions(names).items() if v)  # only what is installed


def module_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``benchmarks.<module>`` with this interpreter."""
    return [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)]


def module_env(first: tuple[str, ...] = (), env: dict | None = None) -> dict:
    """The environment of a child that runs a benchmark module: the repository (this package) importable from any
    working directory, after the folders of `first`."""
    env = dict(os.environ if env is None else env)
    paths = [*first, str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``benchmarks.<module>`` in a child process (`kwargs` go to subprocess.run; `check` defaults to true)."""
    kwargs.setdefault("check", True)
    kwargs["env"] = module_env(env=kwargs.get("env"))
    return subprocess.run(module_command(module, *args), **kwargs)


def replace_block(text: str, block: str, begin: str, end: str, before: str | None = None) -> str:
    """`text` with its part from `begin` to `end` replaced by `block` (which carries both markers); a new block goes
    in front of `before` where that is in the text, else at the end."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    if before and before in text:
        head, rest = text.split(before, 1)
        return head + block + "\n\n" + before + rest
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_block(block: str, begin: str, end: str, before: str | None = None, path: Path = RESULTS_MD) -> None:
    """Replace one generated block of RESULTS.md (see replace_block); the rest of the file stays as written."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    path.write_text(replace_block(text, block, begin, end, before), encoding="utf-8")


def newest_result(root: Path, name: str) -> Path:
    """The latest `root/<date>_<device>/<name>` (folders sort by date first; a repeat `<stem>.runN` of the same day
    after the first)."""
    stem, suffix = Path(name).stem, Path(name).suffix

    def order(path: Path) -> tuple:
        run = path.stem[len(stem) + len(".run") :]
        return path.parent.name, int(run) if run.isdigit() else 1

    found = [p for p in Path(root).glob(f"*/{stem}*{suffix}") if p.name == name or p.stem.startswith(f"{stem}.run")]
    if not found:
        raise FileNotFoundError(f"no {name} under {root}")
    return max(found, key=order)


def write_result(path: Path, document: dict) -> Path:
    """Write a result file; where one exists (the same date and device) it is kept and this one numbered after it
    (`<stem>.run2`, ...). Returns the path written."""
    path, n = Path(path), 2
    target = path
    while target.exists():
        target = path.with_name(f"{path.stem}.run{n}{path.suffix}")
        n += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
