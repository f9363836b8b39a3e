"""Library output that tells a user of this project nothing they can act on, kept off their screen.

Each silenced message is named with where it comes from; every other library warning still shows.
"""

from __future__ import annotations

import logging
import os
import warnings

# bitsandbytes 0.50 logs this at import on CPUs with AVX512-BF16 when the optional `kernels` package is missing.
# It concerns a CPU 4-bit kernel that this project never uses (QLoRA trains on a GPU).
BNB_CPU_KERNEL = ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community")


def _drop_prefix(prefix: str):
    return lambda record: not record.getMessage().startswith(prefix)


def quiet_imports() -> None:
    """Filters that must be in place before the libraries are imported (cheap: logging only)."""
    name, prefix = BNB_CPU_KERNEL
    logger = logging.getLogger(name)
    if not getattr(logger, "_eeve_sft_quiet", False):
        logger.addFilter(_drop_prefix(prefix))
        logger._eeve_sft_quiet = True


def quiet_training(cuda_available: bool) -> None:
    """Notices that a training run would print for every run, whatever the recipe."""
    # TRL 1.16 reads the property that transformers 5 deprecated; nothing in a recipe changes it.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # DeepSpeed announces on stdout that it picked the CPU when it finds no GPU; name the CPU for it instead.
    if not cuda_available:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
