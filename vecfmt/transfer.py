"""The three pipes: export (store -> dump), import (dump -> store) and copy (store -> store).

The core moves batches, shows progress, resumes and checks; store modules only map batches to and
from their store (see ``stores/base.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow as pa

from vecfmt.errors import DumpError, InvalidDataError, StoreError, VecfmtError, first_line
from vecfmt.manifest import MANIFEST_NAME, EmbeddingModel, Manifest, NamespaceEntry
from vecfmt.progress import RowProgress
from vecfmt.reader import Dump
from vecfmt.schema import ID, namespace_dir
from vecfmt.storage import redact, resolve
from vecfmt.stores.base import (
    Description,
    Exporter,
    IfExists,
    Importer,
    StoreURI,
    open_exporter,
    open_importer,
    store_identity,
    supports_resume,
    with_change_marker,
)
from vecfmt.writer import EXPORT_STATE, JOB_STATE, DumpWriter, ParquetOptions, check_batch, check_unique_ids, kept_ids

DEFAULT_BATCH_SIZE = 10_000


@dataclass
class TransferResult:
    rows: int  # rows moved by this run
    rows_skipped: int  # rows an earlier, interrupted run had already committed (resume)
    seconds: float
    namespaces: list[str]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def export(
    source: str,
    dump_uri: str,
    *,
    namespaces: list[str] | None = None,
    model: EmbeddingModel | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    resume: bool = False,
    options: ParquetOptions | None = None,
    progress: bool | None = None,
) -> Manifest:
    """Export a store (``lancedb://...``, ``pgvector://...``) to a dump at ``dump_uri``.

    With ``resume``, the export checkpoints each time a part file is finished (the store must give
    resume tokens), and a re-run with ``resume`` from the same source continues from the last one."""
    if (job := interrupted_job(dump_uri)) is not None:
        raise DumpError(job)
    exporter = open_exporter(source)
    try:
        if resume and not supports_resume(exporter):
            raise StoreError(f"the {StoreURI.parse(source).scheme} store cannot resume an export (it gives no "
                             "resume tokens to checkpoint with); export without resume")
        desc = exporter.describe()
        chosen = _choose_namespaces(list(desc.namespaces), namespaces)
        total = desc.total_rows if namespaces is None else None
        origin = _origin(exporter, desc)
        if resume:  # before the writer takes up the interrupted export's files
            _check_same_origin(dump_uri, origin)
        # The store's marker of the snapshot read, so that a first delta reads only what changed since (spec
        # 6.3). Not when resuming: the rows then come from more than one snapshot, which no one marker covers.
        extra = desc.extra if resume else with_change_marker(exporter, desc.extra)
        with (
            DumpWriter(
                dump_uri,
                vectors=desc.vectors,
                sparse_values=desc.sparse_values,
                document=desc.document,
                model=model or desc.embedding_model,
                source=desc.source,
                extra=extra,
                overwrite=overwrite,
                options=options,
                resumable=resume,
            ) as writer,
            RowProgress("export", total, progress) as bar,
        ):
            bar.advance(writer.rows_written)
            start = writer.cursor or {"namespaces": chosen, "namespace": 0, "slice": 0, "token": None}
            if start["namespaces"] != chosen:  # positions are only meaningful over the same namespaces
                raise DumpError(f"{dump_uri}: the interrupted export covered namespaces {start['namespaces']}, "
                                f"this one {chosen}; resume with the same ones, or start again with overwrite")
            for n, namespace in enumerate(chosen):
                for s, part in enumerate(exporter.slices(namespace)):
                    if (n, s) < (start["namespace"], start["slice"]):
                        continue  # finished before the interruption
                    token = start["token"] if (n, s) == (start["namespace"], start["slice"]) else None
                    finished = writer.files_finished
                    for chunk in exporter.batches(part, batch_size=batch_size, resume=token):
                        writer.write_batch(chunk.batch, namespace)
                        bar.advance(chunk.batch.num_rows)
                        if resume and chunk.resume_token is not None and writer.files_finished > finished:
                            cursor = {"namespaces": chosen, "origin": origin, "namespace": n, "slice": s,
                                      "token": chunk.resume_token}
                            writer.checkpoint(cursor)
                            finished = writer.files_finished
            _check_counts(writer.rows_by_namespace(), desc.namespaces, chosen)
        assert writer.manifest is not None
        return writer.manifest
    finally:
        exporter.close()


def _origin(exporter: Exporter, desc: Description) -> dict[str, Any]:
    """What an export reads, as its state records it: the source (no secrets), the store's resolved
    identity when it has one, and the rows it reported per namespace."""
    identity = store_identity(exporter)
    return json.loads(json.dumps({  # as it reads back from the state file (tuples become lists)
        "source": asdict(desc.source),
        "identity": None if identity is None else [redact(str(part)) for part in identity],
        "counts": desc.namespaces,
    }))


def _check_same_origin(dump_uri: str, origin: dict[str, Any]) -> None:
    """An interrupted export at ``dump_uri`` may only be continued from the very source it read."""
    location = resolve(dump_uri)
    if not location.exists(EXPORT_STATE) or location.exists(MANIFEST_NAME):
        return  # nothing to resume
    cursor = json.loads(location.read_bytes(EXPORT_STATE).to_pybytes()).get("cursor") or {}
    recorded = cursor.get("origin")
    if recorded is None:
        raise DumpError(f"{dump_uri}: the interrupted export did not record its source; start again with overwrite")
    if (recorded["source"], recorded["identity"]) != (origin["source"], origin["identity"]):
        raise DumpError(f"{dump_uri}: the interrupted export read {_label(recorded)}, this one {_label(origin)}; "
                        "resume with the same source, or start again with overwrite")
    if recorded["counts"] != origin["counts"]:
        raise DumpError(f"{dump_uri}: {_label(origin)} changed since the interrupted export (rows per "
                        f"namespace then {recorded['counts']}, now {origin['counts']}); start again with overwrite")


def _label(origin: dict[str, Any]) -> str:
    source = origin["source"]
    where = f" ({origin['identity'][1]})" if origin["identity"] and len(origin["identity"]) > 2 else ""
    return f"{source['kind']} {source['name']!r}{where}"


def import_dump(
    dump_uri: str,
    target: str,
    *,
    if_exists: IfExists | str = IfExists.FAIL,
    resume: bool = False,
    namespaces: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    on_prepared: Callable[[], None] | None = None,
) -> TransferResult:
    """Import a dump into a store. Everything is checked before the first row is written; an
    interrupted import re-run with ``resume=True`` continues where the store says it stopped.
    ``on_prepared`` is called once the target is ready and before any row is written."""
    started = time.perf_counter()
    dump = Dump.open(dump_uri)
    manifest = dump.manifest
    chosen = _choose_namespaces(manifest.namespace_names(), namespaces)
    for namespace in chosen:  # ids are cheap to read (one column) and must be unique before we write
        ids = [b.column(ID) for b in dump.batches(namespace, columns=[ID], verify=False)]
        check_unique_ids(pa.chunked_array(ids, pa.string()), namespace)
    importer = open_importer(target)
    if hasattr(importer, "source_dump"):  # optional (stores/base.py): a store that can read the dump itself
        importer.source_dump = None if namespaces is not None else dump_uri
    try:
        if namespaces is not None:  # the store sees only what it will receive
            manifest = replace(manifest, namespaces=[n for n in manifest.namespaces if n.name in chosen],
                               files=[f for f in manifest.files if f.namespace in chosen])
        try:
            done = importer.prepare(manifest, if_exists=IfExists(if_exists), resume=resume)
            if on_prepared is not None:
                on_prepared()
            total = sum(f.rows for f in manifest.files if f.namespace in chosen)
            with RowProgress("import", total, progress) as bar:
                bar.advance(done)
                moved = _write_from(dump, chosen, importer, done, batch_size, bar)
                importer.finish()
        except (DumpError, InvalidDataError) as exc:
            _abort(importer)  # a broken dump: resuming cannot help, so nothing staged is kept for it
            if isinstance(exc, _BadRows):  # say what the target holds now that the store has cleaned up
                raise InvalidDataError(exc.told(_rows_committed(importer), IfExists(if_exists))) from None
            committed = _rows_committed(importer) if isinstance(exc, DumpError) else None
            if committed:  # a later file is broken; earlier ones went in
                raise DumpError(f"{exc} (the first {committed:,} rows of the dump are in the target, which is "
                                "incomplete)") from None
            raise
        except StoreError as exc:  # the store failed (server gone, lock, ...): say how to go on
            committed = _rows_committed(importer)
            if not committed:
                raise
            raise StoreError(f"{exc}; {committed:,} rows of the dump are committed, and `vecfmt import "
                             f"{redact(dump_uri)} {StoreURI.parse(target)} --resume` continues from there") from None
    finally:
        importer.close()
    return TransferResult(moved, done, time.perf_counter() - started, chosen)


def _write_from(
    dump: Dump, namespaces: list[str], importer: Importer, done: int, batch_size: int, bar: RowProgress
) -> int:
    """Write the dump's rows after the first ``done`` (in manifest order) into ``importer``. The files
    load a few ahead on the reader's threads while the store writes."""
    position = 0
    moved = 0
    vectors = dump.manifest.vectors
    wanted = [entry for entry in dump.manifest.files if entry.namespace in namespaces]
    while wanted and position + wanted[0].rows <= done:  # committed by an earlier run: not even read
        position += wanted.pop(0).rows
    for entry, batch in dump.stream(wanted, batch_size=batch_size):
        if position + batch.num_rows <= done:
            position += batch.num_rows
            continue
        if position < done:
            batch = batch.slice(done - position)
            position = done
        try:
            batch = check_batch(batch, dump.schema, vectors)  # NaN/inf even in a hand-made dump
        except InvalidDataError as exc:
            if position == 0:
                raise
            raise _BadRows(str(exc), entry.path, position) from None
        position += batch.num_rows
        importer.write(entry.namespace, batch, rows_done=position)
        moved += batch.num_rows
        bar.advance(batch.num_rows)
    return moved


class _BadRows(InvalidDataError):
    """A bad row after ``position`` rows were written: the message is finished once the store has
    stopped and cleaned up, with what the target then holds."""

    def __init__(self, message: str, path: str, position: int) -> None:
        super().__init__(message)
        self.message, self.path, self.position = message, path, position

    def told(self, committed: int | None, if_exists: IfExists) -> str:
        if committed == 0:  # nothing of the dump is in the target (a replace's staged rows were dropped)
            kept = "the old table is as it was" if if_exists == IfExists.REPLACE else "the target is as it was"
            return f"{self.message} (in {self.path}; nothing was changed: {kept})"
        rows = self.position if committed is None else committed  # a store that cannot tell: rows sent
        return f"{self.message} (in {self.path}; the first {rows:,} rows are in the target, which is incomplete)"


def copy(
    source: str,
    target: str,
    *,
    if_exists: IfExists | str = IfExists.FAIL,
    namespaces: list[str] | None = None,
    model: EmbeddingModel | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    via: str | None = None,
    resume: bool = False,
) -> TransferResult:
    """Store to store. Without ``via``, with no dump in between: every batch is checked before it is
    written; duplicate ids are detected once a namespace has streamed (so the target may already hold
    rows by then, unless it enforces unique ids itself, as pgvector's primary key does).

    With ``via=DUMP`` the source is read once into a dump there (a backup), which is then imported: the
    target receives only rows that are safe in the backup, and an interrupted copy re-run with
    ``resume=True`` continues the export (for a store with resume tokens) or the import where it stopped."""
    if via is not None:
        return _copy_via(source, target, via, if_exists=IfExists(if_exists), namespaces=namespaces, model=model,
                         batch_size=batch_size, progress=progress, resume=resume)
    if resume:
        raise StoreError("a copy can only resume through a dump: copy with via=DUMP (--via), which keeps one")
    started = time.perf_counter()
    exporter = open_exporter(source)
    importer: Importer | None = None
    try:
        desc = exporter.describe()
        chosen = _choose_namespaces(list(desc.namespaces), namespaces)
        template = desc.manifest_template()
        if model is not None:
            template.embedding_model = model
        # What the store will receive (counts as the source reported them; no files: nothing to resume).
        template.namespaces = [NamespaceEntry(n, namespace_dir(n), desc.namespaces[n] or 0) for n in chosen]
        importer = open_importer(target)
        identity = store_identity(exporter)
        if identity is not None and identity == store_identity(importer):
            raise StoreError(f"{StoreURI.parse(source)} and {StoreURI.parse(target)} are the same table: a copy "
                             "would overwrite what it reads; copy to another table")
        schema = template.arrow_schema()
        moved = 0
        try:
            importer.prepare(template, if_exists=IfExists(if_exists))
            with RowProgress("copy", desc.total_rows, progress) as bar:
                for namespace in chosen:
                    for batch in _checked(exporter, namespace, schema, template, batch_size):
                        moved += batch.num_rows
                        importer.write(namespace, batch, rows_done=moved)
                        bar.advance(batch.num_rows)
                importer.finish()
        except BaseException:
            _abort(importer)  # a copy cannot resume: whatever it staged is of no use
            raise
        return TransferResult(moved, 0, time.perf_counter() - started, chosen)
    finally:
        exporter.close()
        if importer is not None:
            importer.close()


COPY_STATE = "vecfmt-copy.json"  # beside a finished backup until its import is done


def _copy_via(source: str, target: str, via: str, *, if_exists: IfExists, namespaces: list[str] | None,
              model: EmbeddingModel | None, batch_size: int, progress: bool | None, resume: bool) -> TransferResult:
    """Export into ``via``, then import it. Once the backup is complete a state file beside it names the
    source and the target and whether the import began, so a resumed copy imports only the backup of
    this very source into this very target, and resumes the import only if one began."""
    started = time.perf_counter()
    origin, destination = _copy_ends(source, target)
    location = resolve(via)
    if location.exists(MANIFEST_NAME):  # the backup was finished by an earlier run
        if not resume:
            raise DumpError(f"{redact(via)} holds a dump already: resume to import it into the target, or "
                            "copy via another location")
        state = _copy_state(location, via)
        if state["origin"] != origin or state["target"] != destination:
            raise DumpError(f"{redact(via)} is the backup of a copy from {_label(state['origin'])} to another "
                            f"target, not of this one (from {_label(origin)}); copy via another location")
        import_began = bool(state["import_began"])
    else:
        exporter = open_exporter(source)
        try:
            checkpoints = supports_resume(exporter)
        finally:
            exporter.close()
        if location.exists(EXPORT_STATE) and not resume:
            raise DumpError(f"{redact(via)} holds the partial dump of an interrupted copy: resume to continue it, "
                            "or remove it and copy again")
        if resume and location.exists(EXPORT_STATE) and not checkpoints:
            raise DumpError(f"{redact(via)}: the interrupted copy's export cannot be continued (this store gives "
                            "no resume tokens); remove that folder and copy again")
        export(source, via, namespaces=namespaces, model=model, batch_size=batch_size, resume=checkpoints,
               progress=progress)
        import_began = False
    def record(began: bool) -> None:
        location.write_atomic(COPY_STATE, json.dumps(
            {"origin": origin, "target": destination, "import_began": began}).encode())

    if not import_began:
        record(False)
    result = import_dump(via, target, if_exists=if_exists, resume=import_began, batch_size=batch_size,
                         progress=progress, on_prepared=None if import_began else lambda: record(True))
    location.delete(COPY_STATE)
    return TransferResult(result.rows, result.rows_skipped, time.perf_counter() - started, result.namespaces)


def _copy_ends(source: str, target: str) -> tuple[dict[str, Any], list[str] | None]:
    """What a copy reads (as an export's state records it) and the target's identity; refuses one table
    as both."""
    exporter = open_exporter(source)
    try:
        origin = _origin(exporter, exporter.describe())
        importer = open_importer(target)
        try:
            destination = store_identity(importer)
        finally:
            importer.close()
        if destination is not None and destination == store_identity(exporter):
            raise StoreError(f"{StoreURI.parse(source)} and {StoreURI.parse(target)} are the same table: a copy "
                             "would overwrite what it reads; copy to another table")
    finally:
        exporter.close()
    del origin["counts"]  # the backup, not the source as it is now, is what gets imported
    return origin, None if destination is None else [redact(str(part)) for part in destination]


def _copy_state(location: Any, via: str) -> dict[str, Any]:
    try:
        return json.loads(location.read_bytes(COPY_STATE).to_pybytes())
    except FileNotFoundError:
        raise DumpError(f"{redact(via)} is a complete dump, not the backup of an interrupted copy; import it with "
                        "`vecfmt import` (with --resume if an import of it was interrupted)") from None
    except (OSError, ValueError) as exc:
        raise DumpError(f"cannot read {redact(via)}/{COPY_STATE}: {first_line(exc)}") from None


def _checked(
    exporter: Exporter, namespace: str, schema: pa.Schema, template: Manifest, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """The exporter's batches, checked; duplicate ids are detected once the namespace is through
    (a store export rarely has any, and checking per batch would cost quadratic time)."""
    seen: list[pa.Array] = []
    for part in exporter.slices(namespace):
        for chunk in exporter.batches(part, batch_size=batch_size):
            batch = check_batch(chunk.batch, schema, template.vectors)
            seen.append(kept_ids(batch))
            yield batch
    check_unique_ids(pa.chunked_array(seen, pa.string()), namespace)


def interrupted_job(dump_uri: str) -> str | None:
    """One line for a single-process export asked to write where an interrupted partitioned export is (a
    job state and no manifest): it cannot resume nor replace that job, ``export_partitioned`` can; None
    when there is no such job (or the location cannot be read: the export then says why)."""
    try:
        location = resolve(dump_uri)
        if not location.exists(JOB_STATE) or location.exists(MANIFEST_NAME):
            return None
    except (VecfmtError, OSError):
        return None
    return (f"{location.uri} holds an interrupted partitioned export: resume it with `--workers N --resume` "
            "(any number of workers), or replace it with `--workers N --overwrite`")


def _rows_committed(importer: Importer) -> int | None:
    rows_committed = getattr(importer, "rows_committed", None)  # optional (stores/base.py)
    return rows_committed() if callable(rows_committed) else None


def _abort(importer: Importer) -> None:
    abort = getattr(importer, "abort", None)  # optional (stores/base.py)
    if callable(abort):
        abort()


def _check_counts(written: dict[str, int], reported: dict[str, int | None], chosen: list[str]) -> None:
    """Rows written per namespace must be what the store said it held (when it said)."""
    for namespace in chosen:
        expected = reported.get(namespace)
        if expected is not None and written.get(namespace, 0) != expected:
            raise InvalidDataError(f"namespace {namespace!r}: the store reported {expected:,} rows but "
                                   f"{written.get(namespace, 0):,} were exported; the dump is not written")


def _choose_namespaces(available: list[str], wanted: list[str] | None) -> list[str]:
    if wanted is None:
        return available
    missing = [n for n in wanted if n not in available]
    if missing:
        raise InvalidDataError(f"no namespace {missing[0]!r} (available: {available})")
    return wanted
