"""Library output that tells a user of this project nothing they can act on, kept off their screen.

Each silenced message is named by the logger or warning category it comes from and by its own text; every other
message of the same libraries still shows. The CLIs install the filters at their entry (:func:`eeve_sft.errors.run_cli`);
importing the package changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# (logger name, pattern its message must match from the start) for each silenced log record.
LOG_NOISE = (
    # bitsandbytes 0.50 logs this at import on CPUs with AVX512-BF16 when the optional `kernels` package is missing.
    # It concerns a CPU 4-bit kernel that this project never uses (QLoRA trains on a GPU).
    ("bitsandbytes.backends.cpu.ops", re.escape("Failed to load CPU gemm_4bit_forward from kernels-community")),
    # torchao (imported by peft) tries to load its optional MX-format and Hopper CUTLASS kernel libraries at import and
    # logs each one that does not fit the installed torch or Python; nothing here uses those kernels. A failure to
    # load any other torchao library still shows.
    ("torchao", r"Failed to load \S*[/\\]torchao[/\\]_C_(mxfp8|cutlass_90a)[.\w-]*\.so: "),
    # torch deprecates registering an Enum as a pytree constant, which torchao does for its own enums at import.
    ("torch.utils._pytree", r"<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile"),
)

# (category, pattern of the message) for each silenced warning.
WARNING_NOISE = (
    # TRL reads the property that transformers 5 deprecated in favour of is_activation_checkpointing; no recipe
    # or flag changes that.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_libraries() -> None:
    """Install the filters for :data:`LOG_NOISE` and :data:`WARNING_NOISE`; cheap (no library is imported) and
    safe to call again. Must run before the libraries are imported, as some log at import."""
    for name, pattern in LOG_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
    for category, pattern in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def quiet_training(cuda_available: bool) -> None:
    """Notices that a training run would print for every run, whatever the recipe."""
    # DeepSpeed announces on stdout that it picked the CPU when it finds no GPU; name the CPU for it instead.
    if not cuda_available:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
