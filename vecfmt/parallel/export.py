"""Partitioned export: one store read by several workers into one dump (spec 7.3).

The job is planned as partitions, one per slice the exporter gives (``Exporter.slices``). Each partition
runs on a worker (``engines.py``: local processes or Ray tasks) with its own exporter and writes its own
part files (a distinct prefix) through ``PartWriter``; every batch is checked with ``writer.check_batch``.
A job state file beside the dump records the plan and each finished partition's files (path, rows,
bytes, SHA-256), replaced atomically as partitions finish, so a killed job re-run with ``resume`` runs
only the partitions not done. Once all are done, ids are checked unique per namespace across partitions,
rows per namespace against what the store reported, and the manifest is committed once
(``commit_manifest``), by this process: workers only write part files and report them.

Exporters may offer optional members, read here with ``getattr``: ``shared_snapshot() -> str | None``
on the planning exporter (which stays open for the whole job) and ``use_snapshot(snapshot)`` on each
worker's, so that every partition reads the same snapshot of the store (pgvector: ``pg_export_snapshot``);
and ``change_counts()`` on the planning exporter: a JSON value that differs once the source's rows changed
(pgvector: ``plan.table_changes``), recorded with the plan, so that a resume refuses a source changed
since (a row updated in between may move from a partition not done to one done). Without it, such a
change is found when the rows are counted at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from vecfmt.errors import DumpError, InvalidDataError, StoreError, VecfmtError, first_line
from vecfmt.manifest import MANIFEST_NAME, EmbeddingModel, FileEntry, Manifest
from vecfmt.parallel.engines import (
    DEFAULT_RETRIES,
    Engine,
    WorkerLost,
    ray_cpus,
    ray_session,
    retryable,
    run_tasks,
)
from vecfmt.progress import RowProgress
from vecfmt.storage import Location, lock_for_writing, redact, resolve
from vecfmt.stores.base import Exporter, Slice, StoreURI, open_exporter, with_change_marker
from vecfmt.transfer import DEFAULT_BATCH_SIZE, _check_counts, _choose_namespaces, _label, _origin
from vecfmt.writer import (
    EXPORT_STATE,
    JOB_STATE,
    ParquetOptions,
    PartWriter,
    check_batch,
    commit_manifest,
    prepare_location,
    sync_folders,
)

# Beside the manifest while a partitioned export runs; removed once the manifest is written.
JOB_STATE_FORMAT = 1
# What a partition names its files: p<partition>-<run>-<file>.parquet. The run (random, one per job run)
# keeps a resumed job from ever writing a file under a name an earlier run's worker might still hold.
_JOB_PART = re.compile(r"^[^/.][^/]*/p\d{5}-[0-9a-f]{6}-\d{5}\.parquet$")
# What the atomic write of the job state (``Location.write_atomic``) leaves when killed mid-write.
_JOB_STATE_TEMP = re.compile(rf"^{re.escape(JOB_STATE)}\.tmp-[0-9a-f]{{32}}$")
MAX_DEFAULT_WORKERS = 8
# A worker process costs 1-2 s to start (an interpreter importing pyarrow and the store's client), about
# what one process takes to export 50-100 MiB: each worker the default starts gets at least this much of
# the job, so a small job runs in this process (at 100,000 x 768, 300 MB, two workers took 2-4x as long).
BYTES_PER_WORKER = 512 << 20


@dataclass(frozen=True)
class _Task:
    """One partition, as a worker process receives it."""

    source: str
    dump_uri: str
    index: int
    namespace: str
    key: Any
    template: Manifest
    options: ParquetOptions
    batch_size: int
    snapshot: str | None
    prefix: str

    def describe(self) -> str:
        return f"partition {self.index + 1} (namespace {self.namespace!r}, {json.dumps(self.key)})"


@dataclass(frozen=True)
class _Report:
    index: int
    rows: int
    files: list[FileEntry]


def export_partitioned(
    source: str,
    dump_uri: str,
    *,
    workers: int | None = None,
    namespaces: list[str] | None = None,
    model: EmbeddingModel | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    resume: bool = False,
    options: ParquetOptions | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: bool | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> Manifest:
    """Export a store to a dump at ``dump_uri`` with ``workers`` workers, one partition (slice) each at a
    time. ``workers`` defaults to ``default_workers`` (with Ray: the cluster's CPUs); 1 runs the
    partitions in this process. ``engine="ray"`` runs them as tasks on the Ray cluster at ``ray_address``
    (None: ``RAY_ADDRESS``, else a new local one), which must reach the dump (object storage, unless every
    node is this machine). With ``resume``, an interrupted job at ``dump_uri`` continues with the
    partitions it had not finished (the same source, namespaces and columns required); a complete dump
    there is refused unless ``overwrite``."""
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    runner = Engine(engine, ray_address)
    location = resolve(dump_uri)
    lock = lock_for_writing(location)  # one job per dump folder (two resumes would delete each other's files)
    try:
        with ray_session(runner, location, redact(dump_uri)):
            return _export(source, dump_uri, location, runner, workers, namespaces, model, batch_size, overwrite,
                           resume, options or ParquetOptions(), retries, progress)  # fmt: skip
    finally:
        if lock is not None:
            lock.close()


def _export(source: str, dump_uri: str, location: Location, runner: Engine, workers: int | None,
            namespaces: list[str] | None, model: EmbeddingModel | None, batch_size: int, overwrite: bool,
            resume: bool, options: ParquetOptions, retries: int, progress: bool | None) -> Manifest:  # fmt: skip
    exporter = open_exporter(source)  # open for the whole job: it holds the snapshot the workers share
    try:
        desc = exporter.describe()
        chosen = _choose_namespaces(list(desc.namespaces), namespaces)
        template = desc.manifest_template()
        template.embedding_model = model or desc.embedding_model
        # The coordinator's snapshot marker (spec 6.3): workers read in its snapshot (shared_snapshot), so it
        # covers every row they read; none on a resume (the partitions were read in more than one snapshot).
        if not resume:
            template.extra = with_change_marker(exporter, template.extra)
        job = _Job(location, dump_uri, source, template, _origin(exporter, desc), chosen, _changes(exporter))
        _remove_stray_temps(location)  # a killed run's half-written job state (the lock is ours: no run writes)
        resumed = resume and job.load()
        if not resumed:
            _prepare(location, overwrite, resume)
            job.plan([Slice(ns, part.key) for ns in chosen for part in exporter.slices(ns)])
        if workers is None and runner.name == "ray":
            workers = ray_cpus()
        elif workers is None:
            left = len(job.partitions) - len(job.done)
            planned = _planned_bytes(desc, template, chosen)
            workers = default_workers(left, len(chosen), None if planned is None else
                                      planned * left // max(1, len(job.partitions)))  # fmt: skip
        workers = max(1, min(workers, len(job.partitions) - len(job.done) or 1))
        run = secrets.token_hex(3)
        snapshot = _shared_snapshot(exporter)
        tasks = [_Task(source, dump_uri, i, part.namespace, part.key, template, options, batch_size, snapshot,
                       f"p{i:05d}-{run}")
                 for i, part in enumerate(job.partitions) if i not in job.done]  # fmt: skip
        total = desc.total_rows if namespaces is None else None
        with RowProgress("export", total, progress) as bar:
            bar.advance(sum(report.rows for report in job.done.values()))

            def finished(report: _Report) -> None:
                job.record(report)
                bar.advance(report.rows)

            failure = run_tasks(runner, tasks, run_partition, close_exporters, finished, workers=workers,
                                retries=retries)  # fmt: skip
        if failure is not None:
            raise job.failed(*failure, workers, runner)
        return job.commit(desc.namespaces, resumed)
    finally:
        exporter.close()


def default_workers(partitions: int, namespaces: int, planned_bytes: int | None = None) -> int:
    """The workers a job runs on when not told: one per ``BYTES_PER_WORKER`` (512 MiB) of data planned
    (``planned_bytes``: rows x bytes a row takes as vectors; unknown, None: not limited by it), so that a
    small job runs in this process, where a worker's start-up (1-2 s) would cost more than it gains; at
    most as many as the machine has cores and ``MAX_DEFAULT_WORKERS`` (each holds a store connection and a
    row group in memory); 1 when the store gives one slice per namespace (nothing to split); never more
    than there are partitions."""
    if partitions <= namespaces:
        return 1
    by_size = partitions if planned_bytes is None else planned_bytes // BYTES_PER_WORKER
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS, partitions, by_size))


def _planned_bytes(desc: Any, template: Manifest, chosen: list[str]) -> int | None:
    """About how many bytes the chosen namespaces' rows take as vectors (None: a count is unknown)."""
    counts = [desc.namespaces.get(namespace) for namespace in chosen]
    if any(count is None for count in counts):
        return None
    row_bytes = 64 + sum(4 + spec.dimension * 4 for spec in template.vectors)  # ids, metadata: a little
    return sum(counts) * row_bytes


def _remove_stray_temps(location: Location) -> None:
    """Delete the temp files a run killed while it replaced the job state left (``{JOB_STATE}.tmp-<uuid>``,
    local disks only: object storage writes in one PUT); nothing else."""
    if not location.local:
        return
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(location.root):
            if _JOB_STATE_TEMP.match(name):
                location.delete(name)


def _changes(exporter: Exporter) -> Any:
    changes = getattr(exporter, "change_counts", None)  # optional (module docstring)
    return changes() if callable(changes) else None


# --- the job state ------------------------------------------------------------------------------------


class _Job:
    """The plan and the partitions done, kept in ``JOB_STATE`` beside the dump."""

    def __init__(self, location: Location, dump_uri: str, source: str, template: Manifest,
                 origin: dict[str, Any], namespaces: list[str], changes: Any = None) -> None:  # fmt: skip
        self.location, self.dump_uri, self.source = location, dump_uri, source
        self.template, self.origin, self.namespaces = template, origin, namespaces
        self.changes = json.loads(json.dumps(changes))  # as the state file reads it back
        self.partitions: list[Slice] = []
        self.done: dict[int, _Report] = {}

    def _definition(self) -> dict[str, Any]:
        t = self.template
        return {"vectors": [asdict(v) for v in t.vectors], "sparse_values": t.sparse_values, "document": t.document}

    def load(self) -> bool:
        """Take up an interrupted job at this location: False when there is none."""
        if not self.location.exists(JOB_STATE) or self.location.exists(MANIFEST_NAME):
            return False
        where = redact(self.dump_uri)
        try:
            state = json.loads(self.location.read_bytes(JOB_STATE).to_pybytes())
            recorded = state["origin"]
            partitions = [Slice(p["namespace"], p["key"]) for p in state["partitions"]]
            done = {int(i): _Report(int(i), r["rows"], [FileEntry(**f) for f in r["files"]])
                    for i, r in state["done"].items()}  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DumpError(f"{where}/{JOB_STATE} is unreadable ({first_line(exc)}); start again with "
                            "overwrite") from None
        if state.get("format") != JOB_STATE_FORMAT:
            raise DumpError(f"{where}: the interrupted job was written by another vecfmt; start again with overwrite")
        if (recorded["source"], recorded["identity"]) != (self.origin["source"], self.origin["identity"]):
            raise DumpError(f"{where}: the interrupted export read {_label(recorded)}, this one {_label(self.origin)}; "
                            "resume with the same source, or start again with overwrite")
        if recorded["counts"] != self.origin["counts"]:
            raise DumpError(f"{where}: {_label(self.origin)} changed since the interrupted export (rows per namespace "
                            f"then {recorded['counts']}, now {self.origin['counts']}); start again with overwrite")
        recorded_changes = state.get("changes")
        if recorded_changes is not None and self.changes is not None and recorded_changes != self.changes:
            raise DumpError(f"{where}: {_label(self.origin)} changed since the interrupted export (rows were inserted, "
                            "updated or deleted: an updated row may have moved from a partition not done to one "
                            "done, or back); start again with overwrite")  # fmt: skip
        if state["definition"] != self._definition():
            raise DumpError(f"{where}: the source's vectors or columns changed since the interrupted export; start "
                            "again with overwrite")
        if state["namespaces"] != self.namespaces:
            raise DumpError(f"{where}: the interrupted export covered namespaces {state['namespaces']}, this one "
                            f"{self.namespaces}; resume with the same ones, or start again with overwrite")
        sizes = self.location.sizes()
        for report in done.values():
            for f in report.files:
                if sizes.get(f.path) != f.bytes or self.location.sha256(f.path) != f.sha256:
                    raise DumpError(f"cannot resume: {f.path} is missing or changed since its partition finished; "
                                    "start again with overwrite")
        self.partitions, self.done = partitions, done
        # Files of partitions that did not finish (a killed run's): never listed, so removed now.
        _remove_unlisted(self.location, sizes, self._listed())
        return True

    def plan(self, partitions: list[Slice]) -> None:
        # As the state file will read them back (tuples become lists), so a resumed run reads the same slices.
        self.partitions = [Slice(p.namespace, json.loads(json.dumps(p.key))) for p in partitions]
        self.done = {}
        self._save()

    def record(self, report: _Report) -> None:
        sync_folders(self.location, report.files)  # on disk before the state vouches for them
        self.done[report.index] = report
        self._save()

    def _save(self) -> None:
        state = {
            "format": JOB_STATE_FORMAT,
            "origin": self.origin,
            "changes": self.changes,
            "definition": self._definition(),
            "namespaces": self.namespaces,
            "partitions": [{"namespace": p.namespace, "key": p.key} for p in self.partitions],
            "done": {str(i): {"rows": r.rows, "files": [asdict(f) for f in r.files]} for i, r in self.done.items()},
        }
        self.location.write_atomic(JOB_STATE, json.dumps(state).encode())

    def _listed(self) -> set[str]:
        return {f.path for report in self.done.values() for f in report.files}

    def _files(self) -> list[FileEntry]:
        return [f for i in sorted(self.done) for f in self.done[i].files]

    def commit(self, reported: dict[str, int | None], resumed: bool) -> Manifest:
        """All partitions are done: check rows and ids, remove strays, and commit the manifest once. On a
        resumed job, rows that do not add up are the source's changes since the interrupted run (the
        partitions done read it then, the others now), and said so."""
        rows: dict[str, int] = {}
        for report in self.done.values():
            namespace = self.partitions[report.index].namespace
            rows[namespace] = rows.get(namespace, 0) + report.rows
        moved = [ns for ns in self.namespaces if resumed and reported.get(ns) not in (None, rows.get(ns, 0))]
        if moved:
            self.discard()
            namespace = moved[0]
            raise DumpError(f"{redact(self.dump_uri)}: {_label(self.origin)} changed since the interrupted export: "
                            f"namespace {namespace!r} holds {reported[namespace]:,} rows, but the partitions read by "
                            f"the interrupted run (then) and by this one (now) hold {rows.get(namespace, 0):,} (rows "
                            "moved between them: updated, or deleted and inserted); the job's files are removed: "
                            "export it again")  # fmt: skip
        try:
            _check_counts(rows, reported, self.namespaces)
            _remove_unlisted(self.location, self.location.sizes(), self._listed())
            # Sizes confirmed, and ids read back from every part: unique per namespace across partitions.
            manifest = commit_manifest(self.location, self.template, self._files(), check_ids=True)
        except InvalidDataError as exc:
            self.discard()  # the store's rows themselves are wrong: no resume can mend them
            if resumed and first_line(exc).startswith("duplicate ids"):
                raise InvalidDataError(f"{first_line(exc)} (the interrupted export's partitions read the source "
                                       "then, the others now: an id in both moved with an update in between, "
                                       "unless the source holds it twice); the job's files are removed: export it "
                                       "again") from None  # fmt: skip
            raise
        self.location.delete(JOB_STATE)
        return manifest

    def discard(self) -> None:
        """Remove every file of this job, the state last."""
        for f in self._files():
            with contextlib.suppress(OSError):
                self.location.delete(f.path)
        _remove_unlisted(self.location, self.location.sizes(), set())
        self.location.delete(JOB_STATE)

    def failed(self, task: _Task, exc: BaseException, attempts: int, workers: int, runner: Engine) -> BaseException:
        """One line naming the partition and the command that continues the job."""
        if not isinstance(exc, (VecfmtError, OSError, WorkerLost)):
            return exc  # a bug: shown as one, with its traceback
        what = f"{exc} (killed, or out of memory)" if isinstance(exc, WorkerLost) else first_line(exc)
        left = len(self.partitions) - len(self.done)
        command = (f"vecfmt export {StoreURI.parse(self.source)} {redact(self.dump_uri)} --workers {workers}"
                   f"{runner.cli_options} --resume")
        rest = f"`{command}` runs the {left} partition{'s' if left != 1 else ''} not done"
        partition = (f"partition {task.index + 1} of {len(self.partitions)} (namespace {task.namespace!r}, "
                     f"{json.dumps(task.key)})")  # fmt: skip
        if retryable(exc):  # it may pass: it ran 1 + retries times, and may pass by the time of a resume
            times = f" {attempts} times" if attempts > 1 else ""
            message = f"{partition} failed{times}: {what}; {rest}"
        elif isinstance(exc, InvalidDataError):
            # The source's rows stay wrong until mended there, and mending them changes the source, which a
            # resume must not mix with the partitions done (pgvector refuses it; LanceDB would read the
            # planned version again): the whole export again.
            again = command.replace(" --resume", " --overwrite")
            message = f"{partition}: {what} (not retried); once the source's rows are mended, export again: `{again}`"
        else:  # the store refuses the same way each time (not retried): what it said is what to fix
            message = f"{partition}: {what} (not retried: it would fail the same way)"
        # The kind of the failure (a worker's death is the store's: its client crashed, or memory ran out).
        kinds = (InvalidDataError, StoreError, DumpError)
        kind = next((k for k in kinds if isinstance(exc, k)), StoreError if isinstance(exc, WorkerLost) else
                    DumpError)  # fmt: skip
        return kind(message)


def _prepare(location: Location, overwrite: bool, resume: bool) -> None:
    """A fresh start: refuse what is there unless ``overwrite``. A complete dump goes as ``prepare_location``
    removes one (its manifest first); an interrupted job's files (named as partitions name theirs) go
    before its state."""
    existing = location.listdir()
    if MANIFEST_NAME in existing or JOB_STATE not in existing:
        if resume and EXPORT_STATE in existing and not overwrite:
            raise DumpError(f"{location.uri} holds an interrupted single-process export, not a partitioned one: "
                            "resume it without workers, or pass overwrite to replace it")
        prepare_location(location, overwrite)
        if JOB_STATE in existing:  # a job killed right after its commit: the state is stale
            location.delete(JOB_STATE)
        return
    if not overwrite:
        raise DumpError(f"{location.uri} already holds an interrupted partitioned export (pass resume to continue "
                        "it); pass overwrite to replace it")
    _remove_unlisted(location, location.sizes(), set())  # every file named as partitions name theirs
    location.delete(JOB_STATE)
    prepare_location(location, overwrite)


def _remove_unlisted(location: Location, sizes: dict[str, int], listed: set[str]) -> None:
    """Delete the part files partitions wrote that no finished partition lists (a killed run's)."""
    for path in sorted(sizes):
        if _JOB_PART.match(path) and path not in listed:
            location.delete(path)


def _shared_snapshot(exporter: Exporter) -> str | None:
    share = getattr(exporter, "shared_snapshot", None)  # optional (module docstring)
    return share() if callable(share) else None


# --- running partitions ------------------------------------------------------------------------------

# A worker's exporters, opened on its first partition and reused by the next ones (one connection per
# worker, not per partition); keyed by source and snapshot.
_exporters: dict[tuple[str, str | None], Exporter] = {}


def _exporter(source: str, snapshot: str | None) -> Exporter:
    exporter = _exporters.get((source, snapshot))
    if exporter is None:
        exporter = open_exporter(source)
        try:
            if snapshot is not None:
                exporter.use_snapshot(snapshot)  # type: ignore[attr-defined]  # it gave shared_snapshot()
        except BaseException:
            exporter.close()
            raise
        _exporters[(source, snapshot)] = exporter
    return exporter


def close_exporters() -> None:
    """Close this worker's exporters (the engine calls it once a worker is done with the job's partitions)."""
    while _exporters:
        _, exporter = _exporters.popitem()
        with contextlib.suppress(Exception):  # closing after an error: nothing left to save
            exporter.close()


def run_partition(task: _Task) -> _Report:
    """Read one slice and write it as part files; on failure remove them (and drop the exporter, whose
    connection may be broken, so that a retry opens a new one)."""
    exporter = _exporter(task.source, task.snapshot)
    schema = task.template.arrow_schema()
    writer = PartWriter(resolve(task.dump_uri), task.namespace, schema, task.options, prefix=task.prefix)
    rows = 0
    try:
        for chunk in exporter.batches(Slice(task.namespace, task.key), batch_size=task.batch_size):
            unknown = [name for name in chunk.batch.schema.names if name not in schema.names]
            if unknown:  # conform() would drop them: refused, as DumpWriter refuses them
                raise InvalidDataError(f"the store gave columns this dump has no place for: {', '.join(unknown)}")
            batch = check_batch(chunk.batch, schema, task.template.vectors)
            writer.write(batch)
            rows += batch.num_rows
        files = writer.close()
    except BaseException:
        writer.abort()
        with contextlib.suppress(Exception):
            _exporters.pop((task.source, task.snapshot)).close()
        raise
    return _Report(task.index, rows, files)
