"""Partitioned import: a dump's files loaded by several workers into one target.

This process coordinates: it checks the dump as ``transfer.import_dump`` does (ids unique per namespace),
prepares the target once (``prepare_partitioned``), asks it which files an interrupted run of this import
already loaded (``files_loaded``), and runs one partition per file missing, on the engine chosen
(``engines.py``). A worker opens its own importer, attaches to the prepared target (``attach``), reads the
file (size and SHA-256 checked, every batch checked with ``writer.check_batch``) and hands its batches to
``load_file``, which the store commits together with the record that the file is in: a file is in the
target once or not at all, and that record, kept by the store, is what a resumed import skips. When every
file is in, this process finishes the target once (keys, indexes, a replace's swap).

A store takes part through the optional importer members ``prepare_partitioned``, ``files_loaded``,
``attach`` and ``load_file`` (stores/README.md); one without them imports with one worker only.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from vecfmt.errors import DumpError, InvalidDataError, StoreError, VecfmtError, first_line
from vecfmt.manifest import FileEntry, Manifest
from vecfmt.parallel.engines import (
    DEFAULT_RETRIES,
    Engine,
    WorkerLost,
    ray_cpus,
    ray_session,
    retryable,
    run_tasks,
)
from vecfmt.parallel.export import default_workers
from vecfmt.progress import RowProgress
from vecfmt.reader import Dump
from vecfmt.schema import ID
from vecfmt.storage import redact
from vecfmt.stores.base import IfExists, Importer, PartitionedImporter, StoreURI, open_importer
from vecfmt.transfer import DEFAULT_BATCH_SIZE, TransferResult, _choose_namespaces, import_dump
from vecfmt.writer import check_batch, check_unique_ids


@dataclass(frozen=True)
class _FileTask:
    """One file of the dump, as a worker receives it."""

    index: int
    dump_uri: str
    target: str
    identity: str  # the dump's (restricted to the namespaces chosen): a worker checks it reads the same
    namespaces: list[str] | None
    entry: FileEntry
    first_row: int  # the dump's row number of the file's first row (for messages)
    batch_size: int

    def describe(self) -> str:
        return f"file {self.entry.path}"


@dataclass(frozen=True)
class _FileReport:
    index: int
    rows: int


def takes_workers(importer: Importer) -> bool:
    """Whether a store's importer can load one dump with several workers (stores/base.py)."""
    return isinstance(importer, PartitionedImporter)


def import_partitioned(
    dump_uri: str,
    target: str,
    *,
    workers: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    if_exists: IfExists | str = IfExists.FAIL,
    resume: bool = False,
    namespaces: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    retries: int = DEFAULT_RETRIES,
    progress: bool | None = None,
) -> TransferResult:
    """Import a dump into a store with ``workers`` workers, one file each at a time (default: as many as
    the machine has cores, at most 8; with Ray, the cluster's CPUs). ``engine="ray"`` runs them as Ray
    tasks (see ``export_partitioned``). With ``resume``, an interrupted import of this dump into this
    target loads only the files it had not. A store whose importer takes one writer refuses more than one
    worker (and Ray); with one worker it imports as ``transfer.import_dump`` does."""
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    runner = Engine(engine, ray_address)
    started = time.perf_counter()
    dump = Dump.open(dump_uri)
    chosen = _choose_namespaces(dump.manifest.namespace_names(), namespaces)
    importer = open_importer(target)
    try:
        if not takes_workers(importer):
            if (workers or 1) > 1 or runner.name != "local":
                raise StoreError(f"the {StoreURI.parse(target).scheme} store cannot import with several workers "
                                 "(its importer takes one writer at a time); import without --workers")  # fmt: skip
            importer.close()
            return import_dump(dump_uri, target, if_exists=if_exists, resume=resume, namespaces=namespaces,
                               batch_size=batch_size, progress=progress)  # fmt: skip
        for namespace in chosen:  # ids are cheap to read (one column) and must be unique before we write
            ids = [b.column(ID) for b in dump.batches(namespace, columns=[ID], verify=False)]
            check_unique_ids(pa.chunked_array(ids, pa.string()), namespace)
        manifest = restricted(dump.manifest, namespaces)
        with ray_session(runner, dump.location, redact(dump_uri)):
            moved, skipped = _run(importer, manifest, dump_uri, target, runner, workers, IfExists(if_exists),
                                  resume, namespaces, batch_size, retries, progress)  # fmt: skip
    finally:
        importer.close()
    return TransferResult(moved, skipped, time.perf_counter() - started, chosen)


def restricted(manifest: Manifest, namespaces: list[str] | None) -> Manifest:
    """What the store sees of the dump: only the namespaces chosen (as ``import_dump`` restricts it)."""
    if namespaces is None:
        return manifest
    return replace(manifest, namespaces=[n for n in manifest.namespaces if n.name in namespaces],
                   files=[f for f in manifest.files if f.namespace in namespaces])  # fmt: skip


def _run(importer: Any, manifest: Manifest, dump_uri: str, target: str, runner: Engine, workers: int | None,
         if_exists: IfExists, resume: bool, namespaces: list[str] | None, batch_size: int, retries: int,
         progress: bool | None) -> tuple[int, int]:  # fmt: skip
    """Prepare, load the files not in yet, finish: (rows loaded now, rows an interrupted run had loaded)."""
    importer.prepare_partitioned(manifest, if_exists=if_exists, resume=resume)
    loaded = importer.files_loaded()
    identity = manifest.identity()
    tasks, first_row = [], 0
    for index, entry in enumerate(manifest.files):
        if entry.path not in loaded:
            tasks.append(_FileTask(index, dump_uri, target, identity, namespaces, entry, first_row, batch_size))
        first_row += entry.rows
    if workers is None:
        workers = ray_cpus() if runner.name == "ray" else default_workers(len(tasks), 1,
                                                                          sum(t.entry.bytes for t in tasks))
    workers = max(1, min(workers, len(tasks) or 1))
    skipped = sum(loaded.values())
    moved = 0
    with RowProgress("import", sum(f.rows for f in manifest.files), progress) as bar:
        bar.advance(skipped)

        def finished(report: _FileReport) -> None:
            nonlocal moved
            moved += report.rows
            bar.advance(report.rows)

        failure = run_tasks(runner, tasks, load_file, close_importers, finished, workers=workers, retries=retries)
    if failure is not None:
        raise _failed(importer, *failure, dump_uri, target, workers, runner, len(manifest.files))
    loaded = importer.files_loaded()
    for entry in manifest.files:  # every file in, with its rows: only then are keys and indexes built
        if loaded.get(entry.path) != entry.rows:
            held = loaded.get(entry.path, 0)
            raise StoreError(f"{entry.path} is not in the target as the workers reported (the store holds {held:,} "
                             f"of its {entry.rows:,} rows); resume the import")  # fmt: skip
    importer.finish()
    return moved, skipped


def _failed(importer: Any, task: _FileTask, exc: BaseException, attempts: int, dump_uri: str, target: str,
            workers: int, runner: Engine, files: int) -> BaseException:  # fmt: skip
    """One line naming the file and what the target holds now; for a failure that may pass (retried, and
    still failing), the command that resumes the import."""
    if not isinstance(exc, (VecfmtError, OSError, WorkerLost)):
        return exc  # a bug: shown as one, with its traceback
    what = f"{exc} (killed, or out of memory)" if isinstance(exc, WorkerLost) else first_line(exc)
    if isinstance(exc, (InvalidDataError, DumpError)) and not retryable(exc):  # a broken dump: nothing mends it
        with contextlib.suppress(Exception):
            importer.abort()  # what a replace staged goes; a plain import keeps what it committed
        committed = _rows_committed(importer)
        holds = "nothing was changed" if committed == 0 else (
            "the target is incomplete" if committed is None else
            f"{committed:,} of the dump's rows are in the target, which is incomplete")  # fmt: skip
        return type(exc)(f"{task.describe()}: {what} ({holds})")
    if not retryable(exc):  # the store refuses the rows (a unique key, a column's dimension): every time
        committed = _rows_committed(importer)
        holds = "" if committed is None else f"; {committed:,} of the dump's rows are in the target"
        return type(exc)(f"{task.describe()}: {what} (not retried: it would fail the same way){holds}")
    times = f" {attempts} times" if attempts > 1 else ""
    try:
        loaded: dict[str, int] | None = importer.files_loaded()
    except VecfmtError:  # the store is gone: what it holds is for the resume to find out
        loaded = None
    done = "" if loaded is None else f"{sum(loaded.values()):,} rows of the dump are committed, and "
    left = None if loaded is None else files - len(loaded)
    rest = "the files not done" if left is None else f"the {left} file{'s' if left != 1 else ''} not done"
    command = (f"vecfmt import {redact(dump_uri)} {StoreURI.parse(target)} --workers {workers}{runner.cli_options} "
               "--resume")
    return StoreError(f"{task.describe()} failed{times}: {what}; {done}`{command}` loads {rest}")


def _rows_committed(importer: Any) -> int | None:
    rows_committed = getattr(importer, "rows_committed", None)  # optional (stores/base.py)
    try:
        return rows_committed() if callable(rows_committed) else None
    except VecfmtError:
        return None


# --- on a worker -------------------------------------------------------------------------------------

# A worker's open dumps and attached importers, reused by its next files (one connection per worker).
_dumps: dict[tuple[str, str], tuple[Dump, Manifest]] = {}
_importers: dict[tuple[str, str], Importer] = {}


def _dump(task: _FileTask) -> tuple[Dump, Manifest]:
    key = (task.dump_uri, task.identity)
    if key not in _dumps:
        dump = Dump.open(task.dump_uri)
        manifest = restricted(dump.manifest, task.namespaces)
        if manifest.identity() != task.identity:
            raise DumpError(f"{redact(task.dump_uri)} changed since the import began (its manifest is another's); "
                            "import it again")  # fmt: skip
        _dumps[key] = dump, manifest
    return _dumps[key]


def _importer(task: _FileTask, manifest: Manifest) -> Importer:
    key = (task.target, task.identity)
    importer = _importers.get(key)
    if importer is None:
        importer = open_importer(task.target)
        try:
            importer.attach(manifest)  # type: ignore[attr-defined]  # takes_workers() said it has it
        except BaseException:
            importer.close()
            raise
        _importers[key] = importer
    return importer


def close_importers() -> None:
    """Close this worker's importers (the engine calls it once a worker is done with the job's files)."""
    _dumps.clear()
    while _importers:
        _, importer = _importers.popitem()
        with contextlib.suppress(Exception):  # closing after an error: nothing left to save
            importer.close()


def load_file(task: _FileTask) -> _FileReport:
    """Load one file of the dump into the target (its rows checked on the way); a file another attempt
    of it loaded already (a retry of a worker that died while it committed) is not loaded again. On
    failure the importer is dropped (its connection may be broken), so that a retry attaches anew."""
    dump, manifest = _dump(task)
    importer = _importer(task, manifest)

    def checked() -> Any:
        for batch in dump.file_batches(task.entry, batch_size=task.batch_size):
            yield check_batch(batch, dump.schema, manifest.vectors)  # NaN/inf even in a hand-made dump

    try:
        importer.load_file(task.entry, checked(), task.first_row)  # type: ignore[attr-defined]
    except BaseException:
        with contextlib.suppress(Exception):
            _importers.pop((task.target, task.identity)).close()
        raise
    return _FileReport(task.index, task.entry.rows)
