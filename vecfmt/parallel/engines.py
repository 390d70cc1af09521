"""Running a job's partitions: in this process, on local worker processes, or as tasks on a Ray cluster.

A job (``export.py``, ``importing.py``) plans its partitions as picklable tasks and hands them here with
``run`` (a module-level function a worker calls on one task and whose result is the task's report),
``release`` (closes what ``run`` keeps open between tasks in one worker: store connections) and
``finished`` (called in this process with each report, as it comes, to record it). The engines retry a
partition that failed for a reason that may pass (``retryable``), and after a partition fails for good
they let the running ones finish (and be recorded) and start no other. No engine records anything: the
job does, from the reports, so that its state never depends on the engine.

- ``local``, one worker: the tasks run one after the other in this process.
- ``local``, several: a ``ProcessPoolExecutor`` of ``spawn`` processes (store clients such as libpq are
  not fork-safe); a dead worker breaks the pool, which is replaced, and its partitions run again.
- ``ray``: each partition is a Ray task (``ray.remote`` with ``max_retries`` and ``retry_exceptions``):
  Ray places the tasks and retries them, also when their worker process or node dies. At most
  ``workers`` run at once (each holds a store connection), the others wait here, unsubmitted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vecfmt.errors import DumpError, StoreError, first_line
from vecfmt.storage import Location

log = logging.getLogger("vecfmt.parallel")
ENGINES = ("local", "ray")
DEFAULT_RETRIES = 2  # a failed partition runs at most 1 + DEFAULT_RETRIES times


class Task(Protocol):
    """One partition as a worker receives it."""

    @property
    def index(self) -> int: ...

    def describe(self) -> str:
        """What the partition reads, for log lines and errors: 'partition 3 (namespace '', {...})'."""
        ...


class WorkerLost(Exception):
    """The process (or Ray node) running a partition died: killed, out of memory, a crashed client."""


T = TypeVar("T", bound=Task)
Failure = tuple[Any, BaseException, int]  # the task, why it failed for good, after how many attempts


@dataclass(frozen=True)
class Engine:
    """Where partitions run: ``local`` processes, or ``ray`` (at ``ray_address``; None: the cluster
    ``RAY_ADDRESS`` names, else a new one on this machine)."""

    name: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.name!r}")
        if self.ray_address is not None and self.name != "ray":
            raise ValueError("ray_address is for engine='ray'")

    @property
    def cli_options(self) -> str:
        """The CLI options that choose this engine again (for the resume command an error shows)."""
        if self.name != "ray":
            return ""
        return " --engine ray" + (f" --ray-address {self.ray_address}" if self.ray_address else "")


def retryable(exc: BaseException) -> bool:
    """A store or storage failure (server gone, timeout, a worker killed) may pass; bad rows and bugs do not."""
    return isinstance(exc, (StoreError, DumpError, OSError, WorkerLost))


def _retrying(task: Task, exc: BaseException, attempt: int, retries: int) -> None:
    log.warning("%s failed (%s); running it again (%d of %d retries)", task.describe(), first_line(exc),
                attempt, retries)  # fmt: skip


def run_tasks(
    engine: Engine,
    tasks: list[T],
    run: Callable[[T], Any],
    release: Callable[[], None],
    finished: Callable[[Any], None],
    *,
    workers: int,
    retries: int,
) -> Failure | None:
    """Run every task; ``finished`` gets each report. Returns the failure that ended the job, or None."""
    if engine.name == "ray":
        return _run_on_ray(tasks, run, release, finished, retries, workers)
    if workers == 1:
        return _run_in_process(tasks, run, release, finished, retries)
    return _run_in_pool(tasks, run, finished, retries, workers)


# --- local -------------------------------------------------------------------------------------------


def _run_in_process(tasks: list[T], run: Callable[[T], Any], release: Callable[[], None],
                    finished: Callable[[Any], None], retries: int) -> Failure | None:  # fmt: skip
    try:
        for task in tasks:
            for attempt in range(1, retries + 2):
                try:
                    finished(run(task))
                    break
                except Exception as exc:
                    if not retryable(exc) or attempt > retries:
                        return task, exc, attempt
                    _retrying(task, exc, attempt, retries)
        return None
    finally:
        release()


def _run_in_pool(tasks: list[T], run: Callable[[T], Any], finished: Callable[[Any], None], retries: int,
                 workers: int) -> Failure | None:  # fmt: skip
    """Run the tasks on ``workers`` processes. A failed task runs again (at most ``retries`` more times); a
    dead worker breaks the pool, which is replaced, and its tasks run again. After a task fails for good,
    the ones already running finish (and are recorded), the rest never start."""
    attempts = {task.index: 0 for task in tasks}
    queue = list(tasks)
    failure: Failure | None = None
    # 'spawn': store clients (libpq, gRPC) are not fork-safe, and a fresh interpreter inherits no connection.
    context = multiprocessing.get_context("spawn")
    while queue and failure is None:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_started) as pool:
            running: dict[Future[Any], T] = {}
            while queue or running:
                while queue:  # a broken pool takes no more: they wait for the next one
                    task = queue.pop(0)
                    attempts[task.index] += 1
                    try:
                        running[pool.submit(run, task)] = task
                    except BrokenProcessPool:
                        queue.insert(0, task)
                        attempts[task.index] -= 1
                        break
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    if future.cancelled():
                        continue
                    exc = future.exception()
                    if isinstance(exc, BrokenProcessPool):
                        exc = WorkerLost("its worker process died")
                    if exc is None:
                        finished(future.result())
                    elif failure is None and retryable(exc) and attempts[task.index] <= retries:
                        _retrying(task, exc, attempts[task.index], retries)
                        queue.append(task)
                    elif failure is None:
                        failure = task, exc, attempts[task.index]
                        queue.clear()
                        for other in running:
                            other.cancel()  # not started yet: never will
    return failure


def _worker_started() -> None:
    """Die with the job (Linux): an orphaned worker would go on writing what no state lists."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


# --- Ray ---------------------------------------------------------------------------------------------


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise StoreError("engine ray needs the ray package, which is not installed: pip install 'vecfmt[ray]'") \
            from None  # fmt: skip
    return ray


@contextmanager
def ray_session(engine: Engine, location: Location, where: str) -> Iterator[None]:
    """Connected to the Ray cluster for the job (a cluster this process connected to already is used as it
    is; one connected to here is disconnected after). The dump at ``location`` must be one every node
    reaches: a local path only while every node of the cluster is this machine."""
    if engine.name != "ray":
        yield
        return
    ray = _ray()
    address = engine.ray_address or os.environ.get("RAY_ADDRESS")
    if location.local and not ray.is_initialized() and address and not _may_be_here(address):
        raise DumpError(_unreachable(where, address))  # said before connecting (an address may not answer)
    started = False
    if not ray.is_initialized():
        try:
            # No dashboard (it needs ray[default]); worker logs stay on the cluster, vecfmt reports failures.
            ray.init(address=engine.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)  # fmt: skip
        except Exception as exc:  # whatever Ray raises for a cluster it cannot join
            shown = engine.ray_address or address or "a new local cluster"
            raise StoreError(f"cannot connect to the Ray cluster at {shown}: {first_line(exc)}") from None
        started = True
    try:
        if location.local and not _every_node_is_here(ray):
            raise DumpError(_unreachable(where, address or "this process's cluster"))
        yield
    finally:
        if started:
            ray.shutdown()


def _unreachable(where: str, address: str) -> str:
    return (f"{where} is a local path, which the workers of the Ray cluster at {address} do not reach; put the "
            "dump on object storage every node reaches (s3://, gs://, abfs://)")


def _may_be_here(address: str) -> bool:
    """Whether the cluster at ``address`` may be this machine alone (then its nodes are checked once
    connected): a new local one, ``auto``, or a head on this machine; not a Ray Client (``ray://``) address,
    whose driver runs on the cluster, nor another host's."""
    if address in ("local", "auto"):
        return True
    if address.startswith("ray://"):
        return False
    host = address.rpartition(":")[0].strip("[]") or address
    try:
        theirs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    ours = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        ours |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    return bool(theirs & ours) or all(ip.startswith("127.") for ip in theirs)


def _every_node_is_here(ray: Any) -> bool:
    here = ray.util.get_node_ip_address()
    return all(node["NodeManagerAddress"] == here for node in ray.nodes() if node.get("Alive"))


def ray_cpus() -> int:
    """The CPUs of the connected cluster: the default number of partitions running at once."""
    return max(1, int(_ray().cluster_resources().get("CPU", 1)))


def _on_ray_worker(run: Callable[[Any], Any], release: Callable[[], None], task: Any) -> Any:
    """A Ray task: one partition, with nothing kept open after it (a Ray worker outlives the job, and an
    open store connection may hold a snapshot the store cannot vacuum past)."""
    try:
        return run(task)
    finally:
        release()


def _run_on_ray(tasks: list[T], run: Callable[[T], Any], release: Callable[[], None],
                finished: Callable[[Any], None], retries: int, workers: int) -> Failure | None:  # fmt: skip
    """Ray retries a task whose worker died and one that raised a retryable error (at most ``retries``
    more times); its error after that is the job's failure. At most ``workers`` tasks are submitted at
    once, so that after a failure the others are simply never submitted."""
    ray = _ray()
    remote = ray.remote(_on_ray_worker).options(
        max_retries=retries, retry_exceptions=[StoreError, DumpError, OSError], num_cpus=1)
    queue = list(tasks)
    running: dict[Any, T] = {}
    failure: Failure | None = None
    while queue or running:
        while queue and failure is None and len(running) < workers:
            task = queue.pop(0)
            running[remote.remote(run, release, task)] = task
        if not running:
            break
        done, _ = ray.wait(list(running), num_returns=1)
        for ref in done:
            task = running.pop(ref)
            try:
                report = ray.get(ref)
            except Exception as exc:
                if failure is None:
                    cause = _ray_cause(ray, exc)
                    failure = task, cause, retries + 1 if retryable(cause) else 1
                    queue.clear()
                continue
            finished(report)
    return failure


def _ray_cause(ray: Any, exc: BaseException) -> BaseException:
    """The partition's own error out of Ray's wrapper; a lost worker or node as ``WorkerLost``."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ImportError):  # a node without vecfmt, or without the store's client
            return StoreError(f"a Ray worker cannot import {cause.name or 'a module'}: install the same vecfmt, with "
                              "the store's extra, on every node")  # fmt: skip
        return cause if isinstance(cause, BaseException) else exc
    if isinstance(exc, ray.exceptions.RayError):
        return WorkerLost(f"its Ray worker was lost ({first_line(exc)})")
    return exc
