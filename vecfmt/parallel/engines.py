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
  not fork-safe); a dead worker breaks the pool, which is replaced: the partitions that were running in
  it run again (an attempt each), those still queued in it run as if nothing happened.
- ``ray``: each partition is a Ray task (``ray.remote`` with ``max_retries``, and ``retry_exceptions`` for
  the errors ``retryable`` says may pass, raised as ``_MayPass``): Ray places the tasks and retries them,
  also when their worker process or node dies. At most ``workers`` run at once (each holds a store
  connection), the others wait here, unsubmitted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vecfmt.errors import DumpError, InvalidDataError, StoreError, first_line
from vecfmt.process import map_large_blocks
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


# Why a store's error may pass, told by the class names of the driver errors in its chain: DB-API's
# OperationalError and InterfaceError (a lost connection, a timeout, a lock not granted, a server shutting down;
# psycopg, ADBC), and the transport errors of HTTP and gRPC clients (httpx, requests, grpc UNAVAILABLE).
_PASSING = re.compile(r"OperationalError|InterfaceError|Timeout|Connect|Transport|Unavailable|Disconnect")
# Set on an error in the worker that raised it, where its chain is still there: the chain is lost on the way
# to this process (exceptions are pickled without their __cause__ and __context__), its attributes are not.
_MAY_PASS = "vecfmt_may_pass"


def retryable(exc: BaseException) -> bool:
    """Whether running the partition again may succeed: its worker died, or the store or the object store
    failed in a way that passes (a lost connection, a timeout, a lock not granted, an ``OSError`` of the
    storage). Rows the format refuses, a corrupt or changed dump, a constraint the store enforces (a unique
    key, a column's dimension) and bugs would fail the same way again: they fail the job at once."""
    marked = getattr(exc, _MAY_PASS, None)
    if isinstance(marked, bool):
        return marked
    if isinstance(exc, (WorkerLost, OSError)):
        return True
    if not isinstance(exc, (StoreError, DumpError)) or isinstance(exc, InvalidDataError):
        return False
    return any(isinstance(cause, OSError) or any(_PASSING.search(k.__name__) for k in type(cause).__mro__)
               for cause in _chain(exc))  # fmt: skip


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The errors ``exc`` was raised from or while handling (also those hidden by ``from None``)."""
    seen: set[int] = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _classified(exc: BaseException) -> BaseException:
    """``exc`` marked with ``retryable``'s answer, taken where its chain is known (the worker)."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _MAY_PASS, retryable(exc))
    return exc


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
    """Run the tasks on ``workers`` processes. A failed task runs again (at most ``retries`` more times). A
    dead worker breaks the pool: every task in it fails with ``BrokenProcessPool``; a new pool takes them
    up, and only those that had started (running in a worker when it broke) are charged an attempt, not
    those still queued. After a task fails for good, the ones already running finish (and are recorded),
    the rest never start."""
    slots = {task.index: slot for slot, task in enumerate(tasks)}
    attempts = dict.fromkeys(slots, 0)  # attempts that started in a worker
    queue = list(tasks)
    failure: Failure | None = None
    # 'spawn': store clients (libpq, gRPC) are not fork-safe, and a fresh interpreter inherits no connection.
    context = multiprocessing.get_context("spawn")
    started = context.RawArray("b", len(tasks))  # set by a worker as it starts a task (shared memory)
    fruitless = 0  # pools in a row that broke before any task started in them
    while queue and failure is None:
        queue.sort(key=lambda task: slots[task.index])  # the planned order, also for those a broken pool gave back
        progressed = False
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_started,
                                 initargs=(started,)) as pool:  # fmt: skip
            running: dict[Future[Any], T] = {}
            while queue or running:
                while queue:  # a broken pool takes no more: they wait for the next one
                    task = queue[0]
                    started[slots[task.index]] = 0
                    try:
                        running[pool.submit(_attempt, run, slots[task.index], task)] = task
                    except BrokenProcessPool:
                        break
                    queue.pop(0)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    if future.cancelled():
                        continue
                    exc = future.exception()
                    if isinstance(exc, BrokenProcessPool):
                        if not started[slots[task.index]]:
                            if failure is None:
                                queue.append(task)  # still queued when the pool broke: it did not run
                            continue
                        exc = WorkerLost("its worker process died")
                    progressed = True
                    attempts[task.index] += 1
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
        fruitless = 0 if progressed else fruitless + 1
        if queue and failure is None and fruitless > max(1, retries):  # workers die before they run anything
            failure = queue[0], WorkerLost("worker processes die as they start"), 0
    return failure


# In a worker process: the pool's flags, one per task, set as the task starts.
_started: Any = None


def _worker_started(started: Any) -> None:
    """Keep the pool's flags; and die with the job (Linux): an orphaned worker would go on writing what no
    state lists."""
    global _started
    _started = started
    map_large_blocks()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _attempt(run: Callable[[T], Any], slot: int, task: T) -> Any:
    """One attempt of a task in a worker: flagged as started first (if the worker dies now, the attempt
    counts), its error marked with whether a retry may cure it."""
    if _started is not None:
        _started[slot] = 1
    try:
        return run(task)
    except Exception as exc:
        _classified(exc)
        raise


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
        before = _descendants()
        try:
            # No dashboard (it needs ray[default]); worker logs stay on the cluster, vecfmt reports failures.
            ray.init(address=engine.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)  # fmt: skip
        except Exception as exc:  # whatever Ray raises for a cluster it cannot join
            _end_processes(_descendants() - before)  # a cluster half started here
            shown = engine.ray_address or address or "a new local cluster"
            raise StoreError(f"cannot connect to the Ray cluster at {shown}: {first_line(exc)}") from None
        started = True
    try:
        if location.local and not _every_node_is_here(ray):
            raise DumpError(_unreachable(where, address or "this process's cluster"))
        yield
    finally:
        if started:
            # A cluster started here (a local one): its processes are this process's descendants (the
            # agents the raylet's); any that ray.shutdown() leaves running (agents were seen lingering a
            # minute or two after a run) are ended here. Joining an existing cluster starts none.
            ours = _descendants() - before
            ray.shutdown()
            _end_processes(ours)


def _descendants() -> set[tuple[int, int]]:
    """This process's descendants now, as (pid, start time) so that a pid reused later is not taken for
    one of them; empty where there is no /proc."""
    children: dict[int, list[tuple[int, int]]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[19])))
    found: set[tuple[int, int]] = set()
    stack = [os.getpid()]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child[0])
    return found


def _end_processes(processes: set[tuple[int, int]], grace: float = 5.0) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, those of ``processes`` still running (the same
    process: same pid and start time)."""
    def alive() -> list[int]:
        return [pid for pid, start in processes if _start_time(pid) == start]

    for pid in alive():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> int | None:
    """A process's start time (None: gone, or a zombie waiting for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


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


class _MayPass(Exception):
    """A partition's error that a retry may cure, as its Ray task raises it (Ray retries only these; the
    error itself is the one argument)."""


def _on_ray_worker(run: Callable[[Any], Any], release: Callable[[], None], task: Any) -> Any:
    """A Ray task: one partition, with nothing kept open after it (a Ray worker outlives the job, and an
    open store connection may hold a snapshot the store cannot vacuum past)."""
    map_large_blocks()  # a process of vecfmt's while it runs the task (vecfmt/process.py)
    try:
        return run(task)
    except Exception as exc:
        if retryable(exc):
            raise _MayPass(exc) from None
        _classified(exc)
        raise
    finally:
        release()


def _run_on_ray(tasks: list[T], run: Callable[[T], Any], release: Callable[[], None],
                finished: Callable[[Any], None], retries: int, workers: int) -> Failure | None:  # fmt: skip
    """Ray retries a task whose worker died and one that raised a retryable error (at most ``retries``
    more times); its error after that is the job's failure. At most ``workers`` tasks are submitted at
    once, so that after a failure the others are simply never submitted."""
    ray = _ray()
    remote = ray.remote(max_retries=retries, retry_exceptions=[_MayPass], num_cpus=1)(_on_ray_worker)  # fmt: skip
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
                    failure = task, cause, retries + 1 if retryable(cause) else 1  # Ray ran it that often
                    queue.clear()
                continue
            finished(report)
    return failure


def _ray_cause(ray: Any, exc: BaseException) -> BaseException:
    """The partition's own error out of Ray's wrapper; a lost worker or node as ``WorkerLost``."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, _MayPass) and cause.args and isinstance(cause.args[0], BaseException):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(cause.args[0], _MAY_PASS, True)
            return cause.args[0]
        if isinstance(cause, ImportError):  # a node without vecfmt, or without the store's client
            return StoreError(f"a Ray worker cannot import {cause.name or 'a module'}: install the same vecfmt, with "
                              "the store's extra, on every node")  # fmt: skip
        return cause if isinstance(cause, BaseException) else exc
    if isinstance(exc, ray.exceptions.RayError):
        return WorkerLost(f"its Ray worker was lost ({first_line(exc)})")
    return exc
