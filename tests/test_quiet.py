"""The console carries what the project says: the libraries' known noise is filtered at each CLI's entry, precisely
(every other message of the same loggers and warning categories still shows), and importing the package changes no
logging or warning setting."""

from __future__ import annotations

import sys

from helpers import ACCELERATE, ACCELERATE_CPU, BNB_NOISE, run_script

NOISE = (
    BNB_NOISE,
    "torchao/_C_mxfp8",
    "torchao/_C_cutlass_90a",
    "is an Enum subclass and is now natively supported",
    "is_gradient_checkpointing",
)

# Each noisy message as its library emits it, next to a real message of the same logger or warning category.
PROBE = """
import logging, warnings
from eeve_sft.errors import run_cli

def main():
    torchao, pytree = logging.getLogger("torchao"), logging.getLogger("torch.utils._pytree")
    so = "/venv/site-packages/torchao/_C_{}.so"
    torchao.warning(f"Failed to load {so.format('mxfp8.cpython-310-x86_64-linux-gnu')}: Could not load this library")
    torchao.warning(f"Failed to load {so.format('cutlass_90a.abi3')}: Could not load this library")
    torchao.warning(f"Failed to load {so.format('quant_kernels')}: REAL-1")
    pytree.warning("%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type.",
                   "<enum 'KernelPreference'>")
    pytree.warning("REAL-2")
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community: no module")
    warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
    warnings.warn("REAL-3 is deprecated", FutureWarning)
    raise RuntimeError("REAL-4")

run_cli(main)
"""


def test_known_noise_is_filtered_and_real_messages_still_show():
    result = run_script(sys.executable, "-c", PROBE)
    assert result.returncode == 1 and "RuntimeError: REAL-4" in result.stderr  # a crash keeps its traceback
    for real in ("REAL-1", "REAL-2", "REAL-3"):
        assert real in result.stderr
    for noise in NOISE:
        assert noise not in result.stderr, noise


def test_importing_the_package_changes_no_logging_or_warnings():
    # The libraries add warning filters of their own at import; none of the project's may be among them.
    code = (
        "import logging, warnings\n"
        "import eeve_sft, eeve_sft.errors, eeve_sft.hub, eeve_sft.training.recipe\n"
        "from eeve_sft.quiet import LOG_NOISE, WARNING_NOISE\n"
        "assert not [n for n, _ in LOG_NOISE if logging.getLogger(n).filters]\n"
        "ours = {p for _, p in WARNING_NOISE}\n"
        "assert not [f for f in warnings.filters if f[1] is not None and f[1].pattern in ours]\n"
    )
    result = run_script(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_cli_that_imports_the_libraries_prints_none_of_their_noise():
    # peft imports torchao, which logs at import when its optional kernels do not fit this torch or Python.
    code = "from eeve_sft.errors import run_cli; run_cli(lambda: __import__('peft'))"
    result = run_script(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [noise for noise in NOISE if noise in result.stderr], result.stderr


def test_accelerate_launch_with_the_readme_flags_prints_no_block_of_defaults(tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("print('ran')\n", encoding="utf-8")
    result = run_script(*ACCELERATE, *ACCELERATE_CPU, str(script))
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr[-2000:]
    assert "were not passed to `accelerate launch`" not in result.stderr, result.stderr
