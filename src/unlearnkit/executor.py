"""Executors run independent jobs — retrained references, unlearning runs of an experiment grid, shadow
unlearning for U-LiRA — in-process (``LocalExecutor``), each in a fresh process of its own (``ProcessExecutor``),
or as Ray tasks on a cluster (``RayExecutor``).

A job is a module-level function of picklable arguments that returns picklable results (state dicts,
costs, dicts). Jobs seed themselves from their arguments, so the same jobs give the same results whichever
executor runs them, bit for bit when they run with the same number of torch threads (``threads``; the local and
process executors default to the process's setting, Ray to ``cpus_per_job``). A different thread count changes
the order of floating-point sums, so results then agree to rounding (~1e-7), not bitwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import torch

from .errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    name: str

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> list[R]: ...

    def imap(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> Iterator[tuple[int, R]]:
        """(index, result) pairs as jobs finish (so results can be stored one by one)."""
        ...


def in_order(pairs: Iterator[tuple[int, R]], n: int) -> list[R]:
    """The results of (index, result) pairs that arrive in any order, as a list in index order."""
    out = dict(pairs)
    return [out[i] for i in range(n)]


def run_job(fn: Callable[[T], R], item: T, threads: int | None) -> R:
    """Run one job with ``threads`` torch threads (None: leave as is), restoring the setting after."""
    if threads is None:
        return fn(item)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(item)
    finally:
        torch.set_num_threads(before)


class LocalExecutor:
    """Runs jobs one after another in this process."""

    name = "local"

    def __init__(self, threads: int | None = None, progress: bool = False) -> None:
        self.threads = threads
        self.progress = progress

    def imap(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> Iterator[tuple[int, R]]:
        from tqdm.auto import tqdm

        for i, item in enumerate(tqdm(items, desc=desc or "jobs", disable=not self.progress, leave=False)):
            yield i, run_job(fn, item, self.threads)

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> list[R]:
        return [r for _, r in self.imap(fn, items, desc=desc)]


class ProcessExecutor:
    """Runs each job in a fresh spawned process, ``workers`` at a time. Nothing carries over from job to job: a job's
    resident-memory peak is its own (in one process, memory freed by an earlier job is reused without raising the
    resident size, so later jobs look smaller than they are), and a job that crashes or is killed takes only its own
    process down. A finished job's place is filled when the caller asks for the next result, so jobs never compete
    with the caller's own work on a result (with one worker, one thing runs at a time, as with ``LocalExecutor``, and
    timings are comparable). Costs a process start and the pickling of the job's arguments per job."""

    name = "process"

    def __init__(self, workers: int = 1, threads: int | None = None, progress: bool = False) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}.")
        self.workers = workers
        self.threads = threads
        self.progress = progress

    def imap(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> Iterator[tuple[int, R]]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        from tqdm.auto import tqdm

        context = multiprocessing.get_context("spawn")
        todo = iter(enumerate(items))
        running: dict[Future[R], tuple[int, ProcessPoolExecutor]] = {}

        def start_next() -> None:
            job = next(todo, None)
            if job is not None:
                pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
                running[pool.submit(run_job, fn, job[1], self.threads)] = (job[0], pool)

        bar = tqdm(total=len(items), desc=desc or "jobs", disable=not self.progress, leave=False)
        try:
            for _ in range(self.workers):
                start_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i, pool = running.pop(future)
                    pool.shutdown(wait=True)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        raise RuntimeError(f"Job {i} ({desc or getattr(fn, '__name__', 'job')}): its process died before "
                                           "returning (killed, e.g. out of memory, or crashed).") from None
                    bar.update(1)
                    yield i, result
                    start_next()  # only now: the caller has finished with this result
        finally:
            bar.close()
            for future, (_, pool) in running.items():  # interrupted: stop what is still running
                future.cancel()
                pool.shutdown(wait=False, cancel_futures=True)

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> list[R]:
        return in_order(self.imap(fn, items, desc=desc), len(items))


class RayExecutor:
    """Runs jobs as Ray tasks: on a local Ray instance started here (``address=None``), or on a running
    cluster (``address="auto"`` after ``ray start --head``, or ``"ray://host:10001"``). Each job gets
    ``cpus_per_job`` CPUs and runs with that many torch threads."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpus_per_job: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("The Ray executor needs Ray: pip install 'unlearnkit[ray]' (or pip install ray).") from None
        if cpus_per_job < 1:
            raise ConfigError(f"cpus_per_job must be >= 1, got {cpus_per_job}.")
        self._ray = ray
        self.cpus_per_job = cpus_per_job
        self.started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                                      "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}}}
            if address is None:
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            ray.init(address=address, **kwargs)
            self.started_here = True

    def imap(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> Iterator[tuple[int, R]]:
        remote = self._ray.remote(num_cpus=self.cpus_per_job)(run_job)
        futures = [remote.remote(fn, item, self.cpus_per_job) for item in items]
        index = {f: i for i, f in enumerate(futures)}
        pending = list(futures)
        try:
            while pending:
                done, pending = self._ray.wait(pending, num_returns=1)
                yield index[done[0]], self._ray.get(done[0])
        finally:
            for f in pending:  # interrupted: do not leave work running on the cluster
                self._ray.cancel(f)

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "") -> list[R]:
        return in_order(self.imap(fn, items, desc=desc), len(items))

    def shutdown(self) -> None:
        if self.started_here:
            self._ray.shutdown()
            self.started_here = False


def _import_paths() -> list[str]:
    """The folder that holds the ``unlearnkit`` package, for Ray workers' PYTHONPATH."""
    return [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]


def get_executor(spec: str | None, *, progress: bool = False) -> Executor:
    """``local`` (default), ``process`` (each job in a fresh process; ``process:N`` for N at a time), ``ray`` (a local
    Ray instance), ``ray:auto`` (a running cluster) or ``ray://host:port``."""
    if spec in (None, "", "local"):
        return LocalExecutor(progress=progress)
    if spec == "process" or spec.startswith("process:"):
        workers = spec.partition(":")[2] or "1"
        if not workers.isdigit() or int(workers) < 1:
            raise ConfigError(f"Executor {spec!r}: process:N needs a whole number of workers N >= 1.")
        return ProcessExecutor(int(workers), progress=progress)
    if spec == "ray":
        return RayExecutor()
    if spec.startswith("ray://"):
        return RayExecutor(address=spec)
    if spec == "ray:auto":
        return RayExecutor(address="auto")
    raise ConfigError(f"Unknown executor {spec!r}: use local, process, process:N, ray, ray:auto or ray://host:port.")
