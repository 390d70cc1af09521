"""Re-embedding: a dump's ``document`` texts through a new model, written as a new dump.

Ids, metadata, documents (and sparse vectors, which no dense model makes) are carried over
unchanged; the old dense vectors (``values`` and any ``values_<name>``) are replaced by one new
``values`` column. The manifest records the new model's name, provider and dimension and the dump it
was made from (``extra.reembedded_from``); never a key or a base URL.

Resumable with the writer's own checkpoints (``DumpWriter(resumable=True)``, the state file that
export uses): every batch of ``batch_size`` rows becomes a part file and a checkpoint as soon as its
vectors arrive, recording how many rows of the source (in manifest order) are done. A run that is
killed or fails keeps every checkpointed row, and a run with ``resume`` sends only the rows after
them: no text whose vectors were saved is paid for twice. Rows in flight when the run died (at most
``2 x concurrency`` requests) are sent again.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.embed import (
    DEFAULT_CONCURRENCY,
    Embedder,
    EmbedError,
    EmbedStats,
    InputTooLongError,
    open_embedder,
)
from vecfmt.errors import DumpError, InvalidDataError, VecfmtError
from vecfmt.manifest import MANIFEST_NAME, EmbeddingModel, FileEntry, Manifest, VectorSpec
from vecfmt.progress import RowProgress
from vecfmt.reader import Dump
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, VALUES, vectors_array
from vecfmt.storage import redact, resolve
from vecfmt.writer import EXPORT_STATE, DumpWriter, ParquetOptions, prepare_location

DEFAULT_BATCH_SIZE = 4096  # rows per part file and checkpoint: two full OpenAI requests


@dataclass
class ReembedResult:
    rows: int  # rows embedded by this run
    rows_skipped: int  # rows an interrupted run had already embedded and saved (resume)
    tokens: int  # tokens this run was billed for, from the responses' usage (0 for local models)
    tokens_total: int  # the same over every run of this re-embedding, resumed ones included
    requests: int
    retries: int
    seconds: float
    model: str
    provider: str
    dimension: int
    manifest: Manifest

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def reembed(
    dump_uri: str,
    out_uri: str,
    *,
    model: str,
    provider: str | None = None,
    dimensions: int | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    truncate: bool = False,
    max_retries: int = 6,
    metric: str = "cosine",
    resume: bool = False,
    overwrite: bool = False,
    options: ParquetOptions | None = None,
    progress: bool | None = None,
    embedder: Embedder | None = None,
) -> ReembedResult:
    """Re-embed the ``document`` texts of the dump at ``dump_uri`` with ``model`` into a new dump at
    ``out_uri``. Everything that can be checked without a request is checked first: the dump has a
    ``document`` column and no row's document is null or empty, the output is free (or ``overwrite``)
    or holds an interrupted re-embedding of the same dump with the same model (``resume``). ``embedder``
    replaces the provider opened from ``model``/``provider``/... (a library caller's own)."""
    started = time.perf_counter()
    if batch_size < 1:
        raise InvalidDataError("batch_size must be at least 1")
    source = Dump.open(dump_uri)
    target = resolve(out_uri)
    if (target.fs.type_name, target.root) == (source.location.fs.type_name, source.location.root):
        raise DumpError(f"{target.uri} is the dump being re-embedded; write the new one to another folder")
    check_documents(source)
    state = _interrupted_state(out_uri)
    if state is not None and not resume and not overwrite:
        raise DumpError(f"{target.uri} holds an interrupted re-embedding; pass resume to continue it, or "
                        "overwrite to start again")
    own = embedder is None
    if embedder is None:
        embedder = open_embedder(model, provider, dimensions=dimensions, api_key=api_key, base_url=base_url,
                                 concurrency=concurrency, max_retries=max_retries, truncate=truncate)
    try:
        dims = embedder.dims
        origin = {"dump": source.manifest.identity(), "model": embedder.model, "provider": embedder.provider,
                  "dimension": dims}
        if state is not None and resume:
            _check_same_job(out_uri, state, origin)
        elif state is not None:  # overwrite: start again, deleting only what the state lists
            prepare_location(target, overwrite=True)
        return _run(source, out_uri, embedder, origin, metric, batch_size, resume, overwrite, options, progress,
                    started)
    finally:
        if own:
            embedder.close()


def check_documents(source: Dump) -> None:
    """Refuse, before any request, a dump without texts: no ``document`` column, or a row whose
    document is null or empty (the API refuses an empty input; a null has nothing to embed). One
    column pass over the files, each checked against its SHA-256 as usual."""
    if not source.manifest.document:
        raise InvalidDataError(f"{source.uri} has no 'document' column: there are no texts to re-embed "
                               "(export the store with its texts, or re-embed from the original documents)")
    for entry in source.manifest.files:
        table = source.load_file(entry, columns=[ID, DOCUMENT])
        documents = table.column(DOCUMENT)
        bad = pc.or_(pc.is_null(documents), pc.equal(pc.utf8_length(pc.fill_null(documents, "")), 0))
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            what = "null" if documents[row].as_py() is None else "empty"
            raise InvalidDataError(f"the document of id {table.column(ID)[row].as_py()!r} is {what} "
                                   f"({entry.path}, row {row}): every row needs a text to be re-embedded")


def _interrupted_state(out_uri: str) -> dict[str, Any] | None:
    location = resolve(out_uri)
    if not location.exists(EXPORT_STATE) or location.exists(MANIFEST_NAME):
        return None
    try:
        return json.loads(location.read_bytes(EXPORT_STATE).to_pybytes())
    except ValueError:
        raise DumpError(f"{location.uri}/{EXPORT_STATE} is unreadable: start again with overwrite") from None


def _check_same_job(out_uri: str, state: dict[str, Any], origin: dict[str, Any]) -> None:
    recorded = (state.get("cursor") or {}).get("origin")
    if not isinstance(recorded, dict) or "dump" not in recorded:
        raise DumpError(f"{redact(out_uri)} holds an interrupted export, not a re-embedding; choose another "
                        "output or start again with overwrite")
    if recorded["dump"] != origin["dump"]:
        raise DumpError(f"{redact(out_uri)}: the interrupted re-embedding read another dump (or this one changed "
                        "since); resume from the same dump, or start again with overwrite")
    then = (recorded["model"], recorded["provider"], recorded["dimension"])
    now = (origin["model"], origin["provider"], origin["dimension"])
    if then != now:
        raise DumpError(f"{redact(out_uri)}: the interrupted re-embedding used {_model_label(*then)}, this run "
                        f"{_model_label(*now)}; resume with the same model, or start again with overwrite")


def _model_label(model: str, provider: str, dimension: int) -> str:
    return f"{provider} {model} ({dimension} dimensions)"


def _run(
    source: Dump, out_uri: str, embedder: Embedder, origin: dict[str, Any], metric: str, batch_size: int,
    resume: bool, overwrite: bool, options: ParquetOptions | None, progress: bool | None, started: float,
) -> ReembedResult:
    old = source.manifest
    dims = origin["dimension"]
    extra = dict(old.extra)
    extra["reembedded_from"] = {
        "dump": source.uri,  # as Location shows it: redacted
        "identity": origin["dump"],
        "embedding_model": asdict(old.embedding_model) if old.embedding_model else None,
    }
    before = EmbedStats(**asdict(embedder.stats))
    writer = DumpWriter(
        out_uri,
        vectors=[VectorSpec("default", VALUES, dims, metric)],
        metric=metric,
        model=EmbeddingModel(name=embedder.model, provider=embedder.provider, dimension=dims),
        source=old.source,
        sparse_values=old.sparse_values,
        document=True,
        extra=extra,
        overwrite=overwrite,
        options=options,
        resumable=True,  # always: a failed or killed run keeps what it paid for
    )
    cursor = writer.cursor or {"origin": origin, "rows": 0, "tokens": 0}
    done, tokens_before = int(cursor["rows"]), int(cursor.get("tokens", 0))
    pending: deque[tuple[int, str, pa.RecordBatch]] = deque()
    rows = 0

    def texts() -> Iterator[list[str]]:
        for number, (namespace, batch) in enumerate(_rows_after(source, done, batch_size)):
            pending.append((number, namespace, batch))
            # the client API takes a list of str: this per-row conversion is forced by it
            yield batch.column(DOCUMENT).to_pylist()

    try:
        with writer, RowProgress("reembed", old.total_rows, progress) as bar:
            bar.advance(done)
            try:
                for vectors in embedder.embed_batches(texts()):
                    _, namespace, batch = pending.popleft()
                    writer.write_batch(_with_vectors(batch, vectors, old.sparse_values), namespace)
                    rows += batch.num_rows
                    tokens = tokens_before + embedder.stats.tokens - before.tokens
                    writer.checkpoint({"origin": origin, "rows": done + rows, "tokens": tokens})
                    bar.advance(batch.num_rows)
            except InputTooLongError as exc:
                row_id = next(b.column(ID)[exc.position].as_py() for n, _, b in pending if n == exc.batch)
                rule = "pass truncate to cut such texts to the limit, or shorten it"
                raise InvalidDataError(f"the document of id {row_id!r} {exc.detail}; {rule}") from None
    except VecfmtError as exc:
        saved = done + rows
        if saved and not isinstance(exc, DumpError):
            cls = type(exc) if type(exc) in (EmbedError, InvalidDataError, VecfmtError) else VecfmtError
            raise cls(f"{exc}; {saved:,} rows are re-embedded and saved in {redact(out_uri)}: run again with "
                      "resume to continue from there") from None
        raise
    assert writer.manifest is not None
    stats = embedder.stats
    return ReembedResult(
        rows=rows, rows_skipped=done, tokens=stats.tokens - before.tokens,
        tokens_total=tokens_before + stats.tokens - before.tokens, requests=stats.requests - before.requests,
        retries=stats.retries - before.retries, seconds=time.perf_counter() - started, model=embedder.model,
        provider=embedder.provider, dimension=dims, manifest=writer.manifest,
    )


def _rows_after(source: Dump, done: int, batch_size: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The source's rows after the first ``done`` (manifest order), in batches of at most
    ``batch_size`` rows that never cross a file (so never a namespace)."""
    position = 0
    columns = [ID, METADATA, DOCUMENT, *([SPARSE_VALUES] if source.manifest.sparse_values else [])]
    entries: list[FileEntry] = []
    for entry in source.manifest.files:
        if position + entry.rows <= done:  # saved by an earlier run: not even read
            position += entry.rows
            continue
        entries.append(entry)
    for entry in entries:
        table = source.load_file(entry, columns=columns)
        if position < done:
            table = table.slice(done - position)
        position += entry.rows
        for batch in table.to_batches(max_chunksize=batch_size):
            if batch.num_rows:
                yield entry.namespace, batch


def _with_vectors(batch: pa.RecordBatch, vectors: Any, sparse: bool) -> pa.RecordBatch:
    columns = {ID: batch.column(ID), VALUES: vectors_array(vectors)}
    if sparse:
        columns[SPARSE_VALUES] = batch.column(SPARSE_VALUES)
    columns[METADATA] = batch.column(METADATA)
    columns[DOCUMENT] = batch.column(DOCUMENT)
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))
