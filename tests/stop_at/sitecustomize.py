"""Let a test stop a CLI it runs at an exact moment of its work: the process sends itself SIGSTOP, the test sees it
stopped, looks at what is on disk and kills it (as a power loss or `kill -9` would). Put this folder first on
PYTHONPATH; it also applies tests/avx512bf16 (only one sitecustomize module is imported).

EEVE_TEST_STOP_BEFORE_OPEN=TEXT  stop before the first file opened for writing whose path ends with TEXT
EEVE_TEST_STOP_AFTER_RENAME=TEXT stop after the first os.replace/os.rename onto a path ending with TEXT
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import signal
from pathlib import Path

_avx = Path(__file__).resolve().parent.parent / "avx512bf16" / "sitecustomize.py"
_spec = importlib.util.spec_from_file_location("avx512bf16_sitecustomize", _avx)
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

_before_open = os.environ.get("EEVE_TEST_STOP_BEFORE_OPEN")
_after_rename = os.environ.get("EEVE_TEST_STOP_AFTER_RENAME")


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


if _before_open:
    _open = builtins.open

    def _stopping_open(file, mode="r", *args, **kwargs):
        global _before_open
        writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax")
        if _before_open and writing and os.fspath(file).endswith(_before_open):
            _before_open = None
            _stop()
        return _open(file, mode, *args, **kwargs)

    builtins.open = _stopping_open


def _stopping_after(rename):
    def renamed(src, dst, *args, **kwargs):
        global _after_rename
        rename(src, dst, *args, **kwargs)
        if _after_rename and isinstance(dst, (str, os.PathLike)) and os.fspath(dst).endswith(_after_rename):
            _after_rename = None
            _stop()

    return renamed


if _after_rename:
    os.replace, os.rename = _stopping_after(os.replace), _stopping_after(os.rename)
