"""The loading threads of an import: batches COPY on several connections at once and commit in dump order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import psycopg

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.stores.pgvector.connect import Target


class _Aborted(Exception):
    """Another batch failed: this one must not commit (commits stay in dump order)."""


Job = Callable[[psycopg.Connection, Callable[[], None]], None]


class Loader:
    """Loads batches on worker threads, one connection each, so the next batches are read and encoded
    while PostgreSQL loads these, and several backends load at once. Batches may COPY concurrently but
    commit strictly in dump order (each waits for its predecessor before writing its progress row), so
    what is committed is always a prefix of the dump: an import killed at any point resumes exactly.

    The dump reader decodes a row group (~64 MB) at a time, in bursts, so up to ``max_bytes`` of encoded
    batches may wait: enough to keep PostgreSQL busy through a burst (64 MB loaded as fast as 96 and
    160 MB did), and a bound on memory."""

    def __init__(self, connections: list[psycopg.Connection], target: Target, max_bytes: int = 64 << 20) -> None:
        self.target = target
        self.max_bytes = max_bytes
        self._jobs: list[tuple[int, Job, int, int]] = []  # (sequence, job, bytes, rows_done), oldest first
        self._queued_bytes = 0  # waiting or running
        self._submitted = 0
        self._committed = 0  # jobs committed, in order
        self._rows_done = 0  # the dump's rows committed once the last committed job was
        self._closing = False
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, args=(conn,), name=f"vecfmt-pgvector-copy-{i}", daemon=True)
                         for i, conn in enumerate(connections)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _run(self, conn: psycopg.Connection) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closing:
                    self._changed.wait()
                if not self._jobs:
                    return
                sequence, job, size, rows_done = self._jobs.pop(0)

            def my_turn(sequence: int = sequence) -> None:
                with self._changed:
                    while self._committed < sequence and self._error is None:
                        self._changed.wait()
                    if self._error is not None:
                        raise _Aborted

            committed = False  # a job that returns has committed, even after another failed (then counted)
            try:
                if self._error is not None:
                    raise _Aborted
                with self.target.errors("cannot load a batch"):
                    job(conn, my_turn)
                committed = True
            except _Aborted:
                pass
            except BaseException as exc:  # handed to the caller
                with self._changed:
                    self._error = self._error or exc
            with self._changed:
                if committed:
                    self._committed = sequence + 1
                    self._rows_done = rows_done
                self._queued_bytes -= size
                self._changed.notify_all()

    @property
    def committed(self) -> int:
        return self._committed

    @property
    def rows_done(self) -> int:
        """``rows_done`` of the last committed job (0 before the first)."""
        return self._rows_done

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Job, size: int, rows_done: int = 0) -> None:
        with self._changed:
            while self._queued_bytes and self._queued_bytes + size > self.max_bytes and self._error is None:
                self._changed.wait()
            self._raise()
            self._jobs.append((self._submitted, job, size, rows_done))
            self._submitted += 1
            self._queued_bytes += size
            self._changed.notify_all()

    def close(self) -> None:
        """Wait for every batch; raise the first error."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()
        self._raise()

    def abort(self) -> None:
        with self._changed:
            self._error = self._error or StoreError("import aborted")
            self._jobs.clear()
        with suppress(BaseException):
            self.close()


@contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT on an autocommit connection, like ``conn.transaction()`` except on a connection
    that broke (the server died): no ROLLBACK is tried there, which would fail again and which psycopg
    would log as "error ignored in rollback" on stderr before vecfmt's own one-line error."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        if not conn.broken:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def refused_rows(target: Target) -> Iterator[None]:
    """Rows the server refuses as data (jsonb and its \\u0000, out-of-range values) are bad data, not a
    server problem: the import stops as for a broken dump (a replace drops what it staged)."""
    try:
        yield
    except psycopg.errors.DataError as exc:
        raise InvalidDataError(str(target.fail("cannot load a batch", exc))) from None
