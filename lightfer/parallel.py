"""Independent jobs in worker processes, each with its share of the CPU threads.

Small models on small crops use threads badly: EfficientFace at 48 px, batch 32, trains
8.0 steps/s as one process with two threads on this project's two-core reference machine,
and 8.4 + 8.3 steps/s as two processes with one thread each. Independent training runs
(the AU study's seeds) therefore go to `workers` processes of `threads // workers` threads.

Results depend on the thread count (reductions split differently), so `workers` is a
parameter of the runs that use it; with the same params the results are the same.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["map_in_workers"]

logger = logging.getLogger(__name__)

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


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def map_in_workers(
    function: Callable[[Job], Result], jobs: Sequence[Job], *, workers: int, threads: int
) -> list[Result]:
    """`[function(job) for job in jobs]`, in `workers` spawned processes.

    Args:
        function: a module-level function (the workers import it by name).
        jobs: picklable arguments, one call each.
        workers: processes at once; 1 runs the jobs here, in order, with this process's
            threads. In a daemonic process, which may not start children, the jobs run here
            in order with `threads // workers` threads each, as in a worker.
        threads: the CPU threads to share: each worker gets `threads // workers` (at least 1).

    Returns:
        The results in the order of `jobs`. The first job that raises stops the map and its
        exception is raised here.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in jobs]
    share = max(1, threads // workers)
    if multiprocessing.current_process().daemon:
        # A daemonic process (a worker of a Dask cluster started elsewhere) may not start
        # children: the jobs run here, one after another, at a worker's thread count, so
        # their results are the workers' results.
        logger.info("in a daemonic process: %d jobs run here, one at a time", len(jobs))
        with _torch_threads(share):
            return [function(job) for job in jobs]
    context = multiprocessing.get_context("spawn")  # a forked torch can deadlock in OpenMP
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(share,),
    ) as pool:
        return list(pool.map(function, jobs))
