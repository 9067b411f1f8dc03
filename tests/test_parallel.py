"""Independent jobs in worker processes (`lightfer.parallel`)."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from lightfer.parallel import map_in_workers


def _where(job: int) -> tuple[int, int, int]:
    if job < 0:
        raise ValueError(f"job {job} refused")
    return job * job, os.getpid(), torch.get_num_threads()


def test_jobs_run_in_workers_with_their_share_of_threads_and_keep_their_order():
    results = map_in_workers(_where, [3, 1, 2, 0], workers=2, threads=2)
    assert [square for square, _, _ in results] == [9, 1, 4, 0]
    pids = {pid for _, pid, _ in results}
    assert os.getpid() not in pids
    assert {threads for _, _, threads in results} == {1}


def test_one_worker_runs_the_jobs_here():
    results = map_in_workers(_where, [2, 5], workers=1, threads=2)
    assert [(square, pid) for square, pid, _ in results] == [(4, os.getpid()), (25, os.getpid())]


def test_a_failing_job_raises_its_own_error_here():
    with pytest.raises(ValueError, match="job -1 refused"):
        map_in_workers(_where, [1, -1, 2], workers=2, threads=2)


def _in_a_daemon(queue) -> None:
    queue.put(map_in_workers(_where, [2, 3], workers=2, threads=2))


def test_a_daemonic_process_runs_the_jobs_itself_at_a_workers_thread_count():
    """A daemonic process (a Dask worker) may not start children: it runs the jobs itself,
    one after another, with the thread count a worker would have had."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_in_a_daemon, args=(queue,), daemon=True)
    process.start()
    results = queue.get(timeout=120)
    process.join(timeout=60)
    assert [square for square, _, _ in results] == [4, 9]
    assert {pid for _, pid, _ in results} == {process.pid}
    assert {threads for _, _, threads in results} == {1}
