"""Checkpoints written whole: transformers' Trainer saves each checkpoint-N into the run's .partial/ folder, and
the main process renames it into place once every process has written its part. A kill at any moment of a save
leaves the earlier checkpoints and no half-written checkpoint-N (:class:`~eeve_sft.training.run_dir.RunDir`).

The Trainer's own save runs unchanged (model, optimizer, scheduler, every process's RNG state, trainer state);
only the folder it writes into moves. What belongs in every checkpoint besides (tokenizer, template, training
time) is added by callbacks with a ``fill_checkpoint(folder, trainer)`` method, before the rename.

A resumed run also continues TRL's count of trained tokens (``num_tokens``), which TRL keeps on the trainer and
does not save (the checkpoint's run_progress.json holds it), and finds its best checkpoint in its own folder.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from ..errors import UserError, one_line
from .run_dir import TRAINER_STATE, RunDir

logger = logging.getLogger(__name__)
FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken for a full disk


def whole_checkpoints(trainer) -> None:
    """Make `trainer` (a transformers Trainer) write each checkpoint beside the run and rename it in whole."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

    run = RunDir(trainer.args.output_dir)
    save_checkpoint, output_dir_for = trainer._save_checkpoint, trainer._get_output_dir
    staging = {"on": False}

    def get_output_dir(trial):
        # The Trainer builds the checkpoint's path, finds the best checkpoint and rotates old ones in this folder.
        return str(run.staging_dir) if staging["on"] else output_dir_for(trial)

    def whole_save_checkpoint(model, trial):
        name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
        main = trainer.args.should_save
        if main:
            staged = run.staged(name)
        trainer.accelerator.wait_for_everyone()
        staging["on"] = True
        try:
            with saving_whole(run, name, main):
                save_checkpoint(model, trial)
                trainer.accelerator.wait_for_everyone()  # every process's RNG state (and shards) written
                state = trainer.state
                best = state.best_model_checkpoint
                if best and Path(best).parent == run.staging_dir:
                    state.best_model_checkpoint = str(run.path / Path(best).name)
                if main:
                    state.save_to_json(str(staged / TRAINER_STATE))  # with the best checkpoint where it will be
                    for callback in trainer.callback_handler.callbacks:
                        if hasattr(callback, "fill_checkpoint"):
                            callback.fill_checkpoint(staged, trainer)
                    run.publish(staged, name)
        finally:
            staging["on"] = False
        if main:
            # The Trainer rotated only the staging folder: keep save_total_limit among the published checkpoints.
            rotate_checkpoints(
                output_dir=str(run.path),
                save_total_limit=trainer.args.save_total_limit,
                best_model_checkpoint=trainer.state.best_model_checkpoint,
                use_mtime=True,
            )
        trainer.accelerator.wait_for_everyone()

    trainer._get_output_dir = get_output_dir
    trainer._save_checkpoint = whole_save_checkpoint
    trainer.add_callback(_ResumeHere(trainer, run))


@contextmanager
def saving_whole(run: RunDir, name: str, main: bool = True) -> Iterator[None]:
    """Around writing `name` (checkpoint-N, final) into .partial/: on failure the unfinished folder is removed, and
    a full disk becomes one line saying what was lost and where to resume."""
    try:
        yield
    except Exception as err:
        if main:
            run.clear_staging()
        if not out_of_space(err, run.path):
            raise
        last, _ = run.resumable_checkpoint()
        resume = f"resume from {last.name} with --resume_from_checkpoint true" if last else "start the run again"
        raise UserError(
            f"no space left on the device of {run.path} while saving {name} ({one_line(err)}); the unfinished "
            f"{name} was removed. Free space, then {resume}"
        ) from None


def out_of_space(err: BaseException, path: Path) -> bool:
    """True when `err` came from a full disk or quota: an OSError saying so anywhere in its chain, or (torch and
    safetensors report a failed write without the OS's reason) almost no space left where `path` lies."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(path).free < FULL_BELOW
    except OSError:
        return False


class _ResumeHere(TrainerCallback):
    """On resuming: TRL's trained-token counter continues from the checkpoint's count instead of 0, and the best
    checkpoint is looked for in this run folder (trainer_state.json records an absolute path, which names another
    folder once the run was moved or copied)."""

    def __init__(self, trainer, run: RunDir):
        self.trainer, self.run = trainer, run

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.global_step:
            return
        checkpoint = self.run.path / f"checkpoint-{state.global_step}"
        recorded = self.run.trainer_state(checkpoint).get("best_model_checkpoint")
        if recorded and (self.run.path / Path(recorded).name).is_dir():
            state.best_model_checkpoint = str(self.run.path / Path(recorded).name)
        if not hasattr(self.trainer, "_total_train_tokens"):
            return
        tokens = self.run.progress_at(checkpoint).get("num_tokens")
        if tokens is None:  # a checkpoint from before the count was recorded: the last logged count
            logged = [
                h["num_tokens"] for h in state.log_history if "num_tokens" in h and h["step"] <= state.global_step
            ]
            tokens = logged[-1] if logged else None
        if tokens is not None:
            self.trainer._total_train_tokens = int(tokens)
