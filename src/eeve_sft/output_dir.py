"""Output folders written whole or not at all: a dataset build or a merged model goes into a temporary folder
next to the target and is renamed into place at the end. A run that fails or is interrupted leaves the target as it
was; the temporary folder is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def check_output_dir(target: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, or a non-empty folder unless `overwrite`."""
    if target.exists() and not target.is_dir():
        raise UserError(f"output {target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise UserError(f"output directory {target} is not empty; pass --overwrite to replace it")


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextmanager
def atomic_output_dir(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh folder beside `target`; on success it replaces `target`, on failure it is deleted."""
    target = Path(target)
    check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        building.chmod(_default_mode())  # mkdtemp makes it private; the dataset should not be
        yield building
        check_output_dir(target, overwrite)  # something may have appeared there while we built
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            retired.rmdir()
            target.rename(retired)
            building.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            building.rename(target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
