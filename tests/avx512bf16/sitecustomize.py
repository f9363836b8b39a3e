"""Make this Python behave like an AVX512-BF16 CPU for bitsandbytes: its CPU backend then tries to load the
kernels-community gemm kernel and, without the `kernels` package, logs the warning that such CI machines see at
every import. Put this folder on PYTHONPATH (tests/conftest.py does, for every CLI the tests run)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys


class _ReportAvx512Bf16(importlib.abc.MetaPathFinder):
    """Patch ``bitsandbytes.functional.has_avx512bf16`` to return True as soon as that module has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            module.has_avx512bf16 = lambda: True

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if not any(isinstance(finder, _ReportAvx512Bf16) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ReportAvx512Bf16())


install()
