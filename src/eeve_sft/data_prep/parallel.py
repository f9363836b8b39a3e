"""An order-keeping map over chunks, in worker processes when there is more than one, with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def map_chunks(
    func: Callable[[T], list[R]],
    jobs: Sequence[T],
    job_sizes: Sequence[int],
    num_proc: int,
    desc: str,
    show_progress: bool,
) -> list[R]:
    """Concatenated results of `func(job)` for every job, in job order.

    `func` must be a module-level function (it is sent to worker processes); `job_sizes` says how many rows
    each job holds, for the progress bar. Results keep the order of `jobs` whatever the number of workers,
    so the build's output does not depend on `num_proc`.
    """
    results: list[R] = []
    with tqdm(total=sum(job_sizes), desc=desc, unit="row", disable=not show_progress, leave=False) as bar:
        if num_proc <= 1 or len(jobs) <= 1:
            for job, size in zip(jobs, job_sizes, strict=True):
                results.extend(func(job))
                bar.update(size)
            return results
        # fork shares the loaded modules with the workers instead of importing them again (where it exists).
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with context.Pool(processes=min(num_proc, len(jobs))) as pool:
            for part, size in zip(pool.imap(func, jobs), job_sizes, strict=True):
                results.extend(part)
                bar.update(size)
    return results
