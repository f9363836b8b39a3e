"""One recipe over several processes or machines: what a process does when another process of the run is lost."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

# gloo reports a vanished peer as a plain RuntimeError raised from its TCP transport; NCCL as DistBackendError.
GLOO_TRANSPORT = "/gloo/transport/"


def is_lost_process(err: BaseException) -> bool:
    """True for the errors a collective raises when another process of the run died or became unreachable."""
    import torch.distributed as dist

    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and GLOO_TRANSPORT in str(err))


@contextmanager
def stop_when_a_process_is_lost(output_dir: Path) -> Iterator[None]:
    """Turn a collective's failure into one line on every surviving process: what happened and how to resume."""
    try:
        yield
    except Exception as err:
        if not is_lost_process(err):
            raise
        from transformers.trainer_utils import get_last_checkpoint

        print(file=sys.stderr)  # the trainer's progress bar stops mid-line; the error gets a line of its own
        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        resume = (
            f"resume from {last} by relaunching every machine with --resume_from_checkpoint true"
            if last
            else "no checkpoint was written yet, so start the run again"
        )
        raise UserError(
            f"another process of this run stopped (a machine died or was stopped, or the network failed), so this "
            f"one stopped too; {resume}. What the collective reported: {' '.join(str(err).split())}"
        ) from None
