"""What every training script does around its own data and trainer, so that SFT and DPO runs give the same
guarantees: where a run starts (a fresh folder, or the latest whole checkpoint with a note for each incomplete one
passed over), the checks a resume passes (the checkpoint's adapter and the data match the recipe), the start-of-run
record, training that a lost process or Ctrl-C stops with the command that resumes it, final/ written whole, and
the closing message.

A script builds a :class:`Launch` with :meth:`Launch.prepare` before anything heavy loads, then calls, in order,
:meth:`~Launch.check_data`, :meth:`~Launch.write_start`, :meth:`~Launch.train`, :meth:`~Launch.save_final` and
:meth:`~Launch.finish`.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .run_dir import RunDir

logger = logging.getLogger(__name__)


def resume_target(run: RunDir, resume) -> tuple[str | None, list[str]]:
    """The checkpoint `--resume_from_checkpoint` names (true: the latest whole one), checked before anything
    loads, and a note for each incomplete checkpoint passed over."""
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume is True:
        latest, passed_over = run.resumable_checkpoint()
        if latest is None:
            found = f" ({'; '.join(passed_over)})" if passed_over else ""
            raise UserError(f"--resume_from_checkpoint true, but {run.path} holds no complete checkpoint-N{found}")
        return str(latest), [f"{note}; resuming from {latest.name} instead" for note in passed_over]
    if isinstance(resume, str):
        if not Path(resume).is_dir():
            raise UserError(f"checkpoint to resume from not found: {resume}")
        problem = run.checkpoint_problem(resume)
        if problem:
            raise UserError(f"checkpoint {resume} is incomplete ({problem}: its save was stopped part-way)")
    return resume or None, []


def resume_command(resume_arg: str = "true") -> str:
    """The command line that resumes this run: how it was started (the `accelerate launch` around it too), with
    --resume_from_checkpoint set."""
    import os
    import shlex

    import psutil

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--resume_from_checkpoint":
            skip = not skip
            continue
        if not arg.startswith("--resume_from_checkpoint="):
            args.append(arg)
    command = ["python", sys.argv[0], *args, "--resume_from_checkpoint", resume_arg]
    if "LOCAL_RANK" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ:
        for parent in psutil.Process().parents():  # accelerate's launcher, above torchrun where it starts one
            line = parent.cmdline()
            script = next((i for i, part in enumerate(line) if part.endswith(Path(sys.argv[0]).name)), len(line))
            # `accelerate launch FLAGS scripts/sft.py ...` or `python -m accelerate.commands.launch FLAGS ...`
            at = next((i for i, p in enumerate(line[:script]) if p in ("launch", "accelerate.commands.launch")), None)
            if at is not None and any("accelerate" in part for part in line[: at + 1]):
                command = ["accelerate", "launch", *line[at + 1 : script], *command[1:]]
                break
    return shlex.join(command)


def run_training_cli(main) -> None:
    """Run a training script's `main(argv)` as a CLI (:func:`~eeve_sft.errors.run_cli`). Ctrl-C during training
    is answered by :meth:`Launch.train` with the resume command; before training starts or after it ends there is
    nothing to resume, so it is one line and exit status 130."""
    from ..errors import run_cli

    try:
        run_cli(lambda: main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


def close_progress_bar(trainer) -> None:
    """Close the trainer's progress bar, which otherwise redraws itself under a last message as the process ends."""
    for callback in trainer.callback_handler.callbacks:
        if getattr(callback, "training_bar", None) is not None:
            callback.training_bar.close()
            callback.training_bar = None


@dataclass
class Launch:
    """A recipe's run folder and where training starts in it, decided before anything heavy loads."""

    recipe: object  # eeve_sft.training.recipe.Recipe
    run: RunDir
    resume: str | None = None  # the checkpoint training continues from
    passed_over: list[str] = field(default_factory=list)  # a note per incomplete checkpoint skipped
    digests: dict[str, str] = field(default_factory=dict)  # split -> digest of the rows trained on

    @classmethod
    def prepare(cls, recipe) -> Launch | None:
        """Decide what happens to output_dir, writing nothing there: the checkpoint to resume from, checked
        against the recipe, or a fresh start where the folder allows one. None (with a line saying so) when the
        run resumed is already complete."""
        training = recipe.training
        run = RunDir(training.output_dir)
        resume, passed_over = resume_target(run, training.resume_from_checkpoint)
        if resume:
            run.check_checkpoint_matches(resume, recipe.model)
        if resume and run.is_complete(training, resume):
            print(
                f"{run.path} is already complete (step {run.summary().get('global_step')}): nothing to resume; "
                f"left as it was"
            )
            return None
        run.check_can_train(recipe.project.overwrite_output_dir, resuming=bool(resume))
        return cls(recipe, run, resume, passed_over)

    def process_state(self):
        """This process's accelerate state, with the recipe's notes (what the hardware lacks or changes) printed by
        the main process only, before any data loads."""
        from accelerate import PartialState

        state = PartialState()
        if state.is_main_process:
            for note in self.recipe.notes:
                print(note, file=sys.stderr)
        return state

    def check_data(self, splits: dict, dataset_name: str, columns: tuple[str, ...], record: bool = True) -> None:
        """Digest each split's rows (`columns` of them), kept for the start record when `record`; on a resume,
        refuse rows other than those the run started with."""
        from .data import conversations_digest

        if not (record or self.resume):
            return
        self.digests = {name: conversations_digest(split, columns) for name, split in splits.items() if split}
        if self.resume:
            self.run.check_same_data(self.digests, dataset_name)

    def write_start(self, state, fingerprints: dict, stats: dict, **info) -> None:
        """Start the run's record on the main process: the folder (replaced when asked), train.log, the notes,
        recipe.yaml and run_info.json (with the data digests a resume is checked against and `info`)."""
        from .run_dir import collect_run_info, full_configuration

        recipe, run = self.recipe, self.run
        if state.is_main_process:
            if recipe.project.overwrite_output_dir and not self.resume and run.path.is_dir():
                shutil.rmtree(run.path)
            run.log_to_file()
            for note in recipe.notes:
                logger.info(note)
            run.clear_staging()  # what a stopped save left
            for note in self.passed_over:
                print(note, file=sys.stderr)
                logger.warning(note)
            if self.resume:
                message = f"resuming from {self.resume} (step {Path(self.resume).name.rsplit('-', 1)[-1]})"
                print(message, file=sys.stderr)
                logger.info(message)
            record = collect_run_info(sys.argv, recipe.training.seed, fingerprints, stats, full_configuration(recipe))
            run.write_start(recipe.resolved, {**record, **info, "data_digests": self.digests})
        state.wait_for_everyone()

    def train(self, trainer, state) -> None:
        """trainer.train from the resume point. A lost process of the run becomes one line on the survivors;
        Ctrl-C stops with the last checkpoint and the command that resumes from it (exit 130)."""
        from .distributed import stop_when_a_process_is_lost

        try:
            with stop_when_a_process_is_lost(self.run.path):
                trainer.train(resume_from_checkpoint=self.resume)
        except UserError:
            close_progress_bar(trainer)
            raise
        except KeyboardInterrupt:
            close_progress_bar(trainer)
            if state.is_main_process:
                last, _ = self.run.resumable_checkpoint()
                where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
                again = resume_command() if last else "the same command"
                print(
                    f"\nstopped at step {trainer.state.global_step} (Ctrl-C); {where}. Resume: {again}",
                    file=sys.stderr,
                )
            sys.exit(130)

    def save_final(self, trainer, tokenizer, state) -> None:
        """The trained adapter with the tokenizer and generation settings, written into .partial/ and renamed to
        final/ whole: a kill or a full disk meanwhile leaves no half-written final/."""
        from .checkpoints import saving_whole
        from .modeling import generation_config_for

        run, main = self.run, state.is_main_process
        staged = run.staged(run.final_dir.name) if main else None
        state.wait_for_everyone()
        with saving_whole(run, run.final_dir.name, main):
            trainer.save_model(str(run.staging_dir / run.final_dir.name))
            if main:
                tokenizer.save_pretrained(staged)
                generation_config_for(tokenizer).save_pretrained(staged)
                run.publish(staged, run.final_dir.name)
        if main:
            logger.info("final adapter, tokenizer and template saved to %s", run.final_dir)

    def finish(self, trainer, state, message: str) -> None:
        """Print the run's closing `message` once, then end the trainer on every process."""
        if state.is_main_process:
            print(message)
        state.wait_for_everyone()
        trainer.end()
