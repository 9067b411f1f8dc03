"""Independent jobs in worker processes, each with its share of the CPU threads.

Small models on small crops use threads badly: EfficientFace at 48 px, batch 32, trains
8.0 steps/s as one process with two threads on this project's two-core reference machine,
and 8.4 + 8.3 steps/s as two processes with one thread each. Independent training runs
(the AU study's seeds) therefore go to `workers` processes of `threads // workers` threads.

Results depend on the thread count (reductions split differently), so `workers` is a
parameter of the runs that use it; with the same params the results are the same.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["map_in_workers"]

Job = TypeVar("Job")
Result = TypeVar("Result")


def _start_worker(threads: int) -> None:
    """Give a fresh worker its threads and the stage's log format."""
    import cv2
    import torch

    from lightfer.stage import configure_logging

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    configure_logging()


def map_in_workers(
    function: Callable[[Job], Result], jobs: Sequence[Job], *, workers: int, threads: int
) -> list[Result]:
    """`[function(job) for job in jobs]`, in `workers` spawned processes.

    Args:
        function: a module-level function (the workers import it by name).
        jobs: picklable arguments, one call each.
        workers: processes at once; 1 runs the jobs here, in order, with this process's
            threads.
        threads: the CPU threads to share: each worker gets `threads // workers` (at least 1).

    Returns:
        The results in the order of `jobs`. The first job that raises stops the map and its
        exception is raised here.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in jobs]
    context = multiprocessing.get_context("spawn")  # a forked torch can deadlock in OpenMP
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(max(1, threads // workers),),
    ) as pool:
        return list(pool.map(function, jobs))
