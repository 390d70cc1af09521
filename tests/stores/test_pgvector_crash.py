"""A PostgreSQL backend that dies mid-import (SIGKILL, as the OOM killer or a SIGILL from a vector.so built
for another CPU would end it): the CLI says so in one line with how many rows are committed, and
``--resume`` then continues exactly. Runs on both servers; PostgreSQL restarts every backend after such a
crash, so the test waits for the server to accept connections again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psycopg
import pytest

import vecfmt
from tests.helpers import make_table, vecfmt_cli
from tests.stores.test_pgvector import PASSWORD, _progress, assert_same_rows, pg, run_sql
from vecfmt import transfer


def _loading_backends(dsn: str) -> list[int]:
    rows = run_sql(dsn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND query ILIKE 'COPY%'")  # fmt: skip
    return [pid for (pid,) in rows]


def _wait_until_up(dsn: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:  # "the database system is in recovery mode", ...
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="killing a server backend needs root (or the server's user)")
def test_backend_killed_by_a_signal_is_reported_and_resumed_exactly(tmp_path, pg_db):
    table = make_table(30_000, 96)
    dump = str(tmp_path / "a")
    vecfmt.write_dump(dump, table, options=vecfmt.ParquetOptions(max_file_rows=5_000))
    uri = pg(pg_db)
    proc = subprocess.Popen([sys.executable, "-m", "vecfmt.cli", "import", dump, uri, "--batch-size", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    killed = []
    deadline = time.monotonic() + 120
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        if _progress(pg_db) >= 6_000:  # mid-way: some batches committed, more in flight
            for pid in _loading_backends(pg_db)[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.005)
    stdout, stderr = proc.communicate(timeout=120)
    assert killed, "the import finished before a loading backend could be killed"

    assert proc.returncode == 1, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    message = lines[0]
    assert PASSWORD not in message
    # Which server, that the connection died, and how far the import got, with the way on.
    assert re.search(r"pgvector \S+@127\.0\.0\.1:\d+: ", message), message
    assert "server closed the connection unexpectedly" in message or "terminat" in message, message

    _wait_until_up(pg_db)
    committed = _progress(pg_db)
    assert 6_000 <= committed < 30_000
    assert f"{committed:,} rows" in message and "--resume" in message, message
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(committed,)]  # data and progress: one transaction

    run = vecfmt_cli("import", dump, uri, "--resume", "--quiet")
    assert run.code == 0, run
    assert run_sql(pg_db, "SELECT count(*), count(DISTINCT id) FROM items") == [(30_000, 30_000)]
    transfer.export(pg(pg_db), str(tmp_path / "b"))
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "b")).table(""), table)
