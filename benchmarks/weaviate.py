r"""Weaviate import/export: vecfmt against the v4 client's documented paths, on a real server on loopback.

    python benchmarks/weaviate.py [--n 100000] [--dim 768] [--rss/--no-rss] [--list-first]

Needs the server that ``scripts/setup-weaviate.sh`` builds (``make test`` runs it); the benchmark starts
its own on free ports in a temp dir and stops it at the end. One run of each, side by side on that server:

* import: ``vecfmt.transfer.import_dump`` of a dump (reading and checking the Parquet files included) into
  a new collection, vs the client's batch path fed Python lists: ``collection.batch.fixed_size(...)`` with
  ``add_object(properties=..., uuid=..., vector=list)``, the lists made before the clock starts. Both
  collections: one named vector, HNSW, cosine, the same properties. Wall time and this process's CPU
  seconds (all threads): the server's HNSW inserts may bound both on two cores; the CPU is what the client
  side costs, which is what vecfmt controls.
* export: ``vecfmt.transfer.export`` of the collection into a dump (Parquet, zstd, SHA-256) vs a plain
  ``collection.iterator(include_vector=True)`` loop collecting (uuid, vector, properties) rows.
* peak RSS: the vecfmt import and export again in child processes (VmHWM).

The last line printed is one JSON object: ``import_vs_list_batch`` (the list path's wall time over
vecfmt's), ``import_client_cpu_vs_list_batch`` (vecfmt's CPU over the list path's), ``export_vs_iterator``
(the iterator's wall time over vecfmt's), ``peak_rss_mb`` (the larger child), and the raw figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
# The script's own folder goes: this file, weaviate.py, would shadow the weaviate client package.
sys.path[:1] = [str(ROOT)]

import vecfmt  # noqa: E402
from benchmarks._common import PEAK_RSS_SNIPPET, child_peak_rss_mb, finish, table  # noqa: E402
from tests.servers.weaviate import WeaviateServer  # noqa: E402
from vecfmt import transfer  # noqa: E402
from vecfmt.schema import vectors_array  # noqa: E402
from vecfmt.stores.weaviate.connect import sdk  # noqa: E402

RSS_CODE = """
import sys
from vecfmt import transfer
kind, dump, uri, out = sys.argv[1:5]
if kind == "import":
    transfer.import_dump(dump, uri, progress=False)
else:
    transfer.export(uri, out, progress=False)
""" + PEAK_RSS_SNIPPET


def make_dump(path: str, n: int, dim: int) -> None:
    rng = np.random.default_rng(7)
    chunk = 20_000
    with vecfmt.DumpWriter(path, vectors=[vecfmt.VectorSpec("default", "values", dim, "cosine")]) as writer:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            ids = [str(uuid.UUID(int=start + i + 1)) for i in range(m)]  # UUIDs: both paths send them as they are
            meta = [json.dumps({"i": start + i, "tag": f"t{(start + i) % 10}"}) for i in range(m)]
            writer.write_batch(pa.record_batch({
                "id": pa.array(ids, pa.string()),
                "values": vectors_array(rng.standard_normal((m, dim)).astype(np.float32)),
                "metadata": pa.array(meta, pa.string()),
            }))  # fmt: skip


def list_batch_import(server: WeaviateServer, name: str, dump: str) -> tuple[float, float]:
    """The client's documented batch path, fed Python lists (made before the clock starts)."""
    weaviate = sdk()  # first: it keeps authlib's import-time warning off stderr
    from weaviate.classes.config import Configure, DataType, Property, VectorDistances

    d = vecfmt.open_dump(dump)
    rows = []
    for batch in d.batches(""):
        vectors = d.vectors(batch).tolist()
        for i, (record_id, meta) in enumerate(zip(batch.column("id").to_pylist(), batch.column("metadata").to_pylist(),
                                                  strict=True)):  # fmt: skip
            rows.append((record_id, json.loads(meta), vectors[i]))
    client = weaviate.connect_to_local(port=server.http, grpc_port=server.grpc, skip_init_checks=True)
    try:
        collection = client.collections.create(
            name,
            properties=[Property(name="i", data_type=DataType.INT), Property(name="tag", data_type=DataType.TEXT)],
            vector_config=Configure.Vectors.self_provided(
                name="default", vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)),
        )  # fmt: skip
        wall, cpu = time.perf_counter(), time.process_time()
        with collection.batch.fixed_size(batch_size=500, concurrent_requests=2) as batch:
            for record_id, props, vector in rows:
                batch.add_object(properties=props, uuid=record_id, vector={"default": vector})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        failed = len(collection.batch.failed_objects)
        if failed:
            raise SystemExit(f"the list-fed batch path lost {failed} objects")
        return wall, cpu
    finally:
        client.close()


def iterator_export(server: WeaviateServer, name: str) -> tuple[float, int]:
    weaviate = sdk()
    client = weaviate.connect_to_local(port=server.http, grpc_port=server.grpc, skip_init_checks=True)
    try:
        collection = client.collections.use(name)
        started = time.perf_counter()
        rows = [(o.uuid, o.vector, o.properties) for o in collection.iterator(include_vector=True)]
        return time.perf_counter() - started, len(rows)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rss", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--list-first", action="store_true",
                        help="run the list-fed import first (the server's insert rate drifts during a run)")
    args = parser.parse_args()
    n, dim = args.n, args.dim
    work = Path(tempfile.mkdtemp(prefix="vecfmt-bench-weaviate-"))
    server = WeaviateServer()
    try:
        server.start()
        dump = str(work / "dump")
        print(f"writing the dump ({n:,} x {dim}) ...", flush=True)
        make_dump(dump, n, dim)
        uri = server.uri("BenchVecfmt")

        if args.list_first:
            print("import: client batch fed lists ...", flush=True)
            list_import, list_cpu = list_batch_import(server, "BenchLists", dump)
        print("import: vecfmt ...", flush=True)
        wall, cpu = time.perf_counter(), time.process_time()
        transfer.import_dump(dump, uri, progress=False)
        vec_import, vec_cpu = time.perf_counter() - wall, time.process_time() - cpu
        if not args.list_first:
            print("import: client batch fed lists ...", flush=True)
            list_import, list_cpu = list_batch_import(server, "BenchLists", dump)

        print("export: vecfmt ...", flush=True)
        started = time.perf_counter()
        transfer.export(uri, str(work / "out"), progress=False)
        vec_export = time.perf_counter() - started
        print("export: client iterator ...", flush=True)
        it_export, it_rows = iterator_export(server, "BenchVecfmt")
        assert it_rows == n, it_rows

        rss = {}
        if args.rss:
            print("peak RSS (child processes) ...", flush=True)
            rss["import"] = child_peak_rss_mb(RSS_CODE, "import", dump, server.uri("BenchRss"), "")
            rss["export"] = child_peak_rss_mb(RSS_CODE, "export", "", uri, str(work / "rss-out"))

        rows = [
            ("import: vecfmt", f"{vec_import:.1f}", f"{n / vec_import:,.0f}", f"{vec_cpu:.1f}"),
            ("import: client batch, lists", f"{list_import:.1f}", f"{n / list_import:,.0f}", f"{list_cpu:.1f}"),
            ("export: vecfmt (to a dump)", f"{vec_export:.1f}", f"{n / vec_export:,.0f}", ""),
            ("export: client iterator", f"{it_export:.1f}", f"{n / it_export:,.0f}", ""),
        ]
        print()
        print(table(rows, ("what", "seconds", "vectors/s", "client CPU s")))
        result = {
            "n": n, "dim": dim,
            "import_vs_list_batch": round(list_import / vec_import, 2),
            "import_client_cpu_vs_list_batch": round(vec_cpu / list_cpu, 2),
            "export_vs_iterator": round(it_export / vec_export, 2),
            "peak_rss_mb": round(max(rss.values())) if rss else None,
            "peak_rss_mb_import": round(rss["import"]) if rss else None,
            "peak_rss_mb_export": round(rss["export"]) if rss else None,
            "import_vectors_per_s": round(n / vec_import), "list_batch_vectors_per_s": round(n / list_import),
            "export_vectors_per_s": round(n / vec_export), "iterator_vectors_per_s": round(n / it_export),
            "import_client_cpu_s": round(vec_cpu, 1), "list_batch_client_cpu_s": round(list_cpu, 1),
        }  # fmt: skip
        print(f"\nimport {result['import_vs_list_batch']}x the list-fed batch path (target >= 1.2), client CPU "
              f"{result['import_client_cpu_vs_list_batch']}x (target <= 0.5); export {result['export_vs_iterator']}x "
              f"the iterator (target >= 1); peak RSS {result['peak_rss_mb']} MB (target < 1000)")
        finish(result)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
