r"""Pinecone import/export: vecfmt against the migration guide's loop and the SDK's own best upsert path.

    python benchmarks/pinecone.py [--n 100000] [--dim 768] [--runs 3] [--rss-n 1000000]
                                  [--sdk-batch 93] [--sdk-concurrency 2,4,8,16] [--as-is-server]

Against the local Pinecone API server of the tests (tests/servers/pinecone, real ``pinecone`` SDK 10.2),
started in its OWN process, so that the client's CPU seconds are the client's alone; the server's are
read from its /proc entry and shown beside them. The server is Python (one GIL: about one core of
the two) and costs more CPU per vector than the client, so it bounds both directions; what vecfmt
controls is its client CPU and keeping the server busy. The test server's ``list`` scans the namespace
for every page (O(n) a page, correct under any writes); the benchmark's server process keeps a sorted
copy and bisects it instead (``--as-is-server`` does not), so 1,000,000-id exports measure the client.

Every measured run is a fresh child process that reports its wall seconds, its CPU seconds (user +
system, every thread) and its peak RSS (VmHWM); the variants run interleaved, each the best of
``--runs``:

* export: ``vecfmt.transfer.export`` of the index into a dump (list pages, several fetches in flight,
  Arrow batches from NumPy, Parquet + SHA-256 written) vs the migration guide's loop
  (/work/shared/reference/migration-guide.md, "Exporting from Pinecone"): ``for page in index.list()``,
  one ``fetch`` per page, one at a time, every record appended to one Python list of dicts. SDK 10.2's
  ``list`` yields pages (``ListResponse``), so the ids are ``[v.id for v in page.vectors]``; otherwise
  the guide's code as written.
* import: ``vecfmt.transfer.import_dump`` of a dump (checked, decoded, every record checked against
  Pinecone's limits, upserts split by 1,000 records / 2 MB, several in flight) vs the SDK's best path:
  ``index.upsert(vectors=..., batch_size=B, max_concurrency=C)`` fed Python lists (``{"id", "values":
  list, "metadata": dict}``, built before the clock starts, so the SDK is not charged for them). B is
  the most records a 2 MB request holds at this dimension (``--sdk-batch``); C is the best of
  ``--sdk-concurrency`` (measured first, at N/4).
* exact and complete: every import leaves exactly N records in the server (counted there); the guide's
  loop returns N distinct ids; vecfmt's export of vecfmt's import equals the source dump bit for bit
  (ids, float32 bits, metadata objects).
* peak RSS at ``--rss-n`` (0 to skip): vecfmt both ways in a child process. The two baselines cannot
  run at 1,000,000 x 768 here: they hold every vector as Python floats (about 25 GB at 1M; this machine
  has 24 GB), so their RSS is shown at N.

The last line printed is one JSON object: ``export_vs_sequential``, ``import_vs_sdk``, ``peak_rss_mb_1m``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is called pinecone.py: its own folder must not shadow the SDK's package of that name.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
import vecfmt  # noqa: E402
from benchmarks._common import finish, table  # noqa: E402
from vecfmt.schema import vectors_array, vectors_numpy  # noqa: E402

# The server in a process of its own: the test server's Python API over stdin, one command a line.
SERVER_CODE = """
import bisect, sys
sys.path.insert(0, sys.argv[1])
from tests.servers.pinecone import PineconeServer, app, store
if sys.argv[2] == "tuned":
    # list: the server sorts every id of the namespace for every page (O(n log n) a page, so O(n^2 log n)
    # an export: 1,000,000 ids would take it most of an hour). Same answers from a sorted copy kept
    # while the namespace's size stays the same (nothing here deletes and adds between pages).
    sorted_ids = {}
    def list_ids(self, ix, query, body):
        limit = self._int_param(query, "limit", 100, 1, 1000)
        prefix = query.get("prefix", [""])[0]
        ns = self._ns(query.get("namespace", [""])[0])
        token = query["paginationToken"][0] if "paginationToken" in query else None
        rows = ix.namespaces.get(ns, {})
        key = (ix.name, ns, prefix)
        if key not in sorted_ids or sorted_ids[key][0] != len(rows):
            sorted_ids[key] = (len(rows), sorted(r.encode() for r in rows if r.startswith(prefix)))
        ordered = sorted_ids[key][1]
        start = bisect.bisect_right(ordered, store._untoken(token).encode()) if token is not None else 0
        page = [i.decode() for i in ordered[start:start + limit]]
        out = {"vectors": [{"id": rid} for rid in page], "namespace": ns, "usage": {"readUnits": 1}}
        if start + limit < len(ordered):
            out["pagination"] = {"next": store._token(page[-1])}
        return 200, out
    app.PineconeState.list_ids = list_ids
server = PineconeServer()
print(server.url, server.api_key, flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "create":
        print(server.create_index(args[0], int(args[1]), "cosine"), flush=True)
    elif command == "delete":
        server.delete_index(args[0])
        print("ok", flush=True)
    elif command == "count":
        print(len(server.records(args[0])), flush=True)
"""


# --- data ------------------------------------------------------------------------------------------


def batch(start: int, size: int, dim: int) -> pa.RecordBatch:
    """Rows ``start .. start+size``: unit-length float32 vectors, short ids, small JSON metadata (the
    pgvector benchmark's rows: metadata Pinecone takes as it is)."""
    rng = np.random.default_rng(start)
    matrix = rng.standard_normal((size, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    numbers = range(start, start + size)
    ids = pa.array([f"doc-{i:09d}" for i in numbers])
    metadata = pa.array([f'{{"source": "bench", "chunk": {i % 50}, "lang": "en"}}' for i in numbers])
    return pa.record_batch({"id": ids, "values": vectors_array(matrix), "metadata": metadata})


def write_dump(path: str, n: int, dim: int) -> None:
    with vecfmt.DumpWriter(path, overwrite=True) as writer:
        for start in range(0, n, 50_000):  # bounded memory at 1M
            writer.write_batch(batch(start, min(50_000, n - start), dim))


def assert_same_records(got_path: str, want_path: str) -> None:
    """The export of an import equals its source: ids, float32 bits, metadata (as JSON objects)."""
    got = vecfmt.open_dump(got_path).table("").sort_by("id")
    want = vecfmt.open_dump(want_path).table("").sort_by("id")
    assert got.num_rows == want.num_rows, (got.num_rows, want.num_rows)
    assert got.column("id").equals(want.column("id")), "ids differ"
    a = vectors_numpy(got.column("values").combine_chunks()).view(np.uint32)
    b = vectors_numpy(want.column("values").combine_chunks()).view(np.uint32)
    assert np.array_equal(a, b), "vector bits differ"
    loads = [json.loads(t) for t in got.column("metadata").to_pylist()]
    assert loads == [json.loads(t) for t in want.column("metadata").to_pylist()], "metadata differs"


# --- the server ------------------------------------------------------------------------------------


class Server:
    """The test server in a child process; its CPU seconds from /proc (utime + stime, every thread)."""

    def __init__(self, mode: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(ROOT), mode], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        self.url, self.api_key = self._line().split()
        self.tick = os.sysconf("SC_CLK_TCK")

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the Pinecone test server did not start (are ../shared/reference's API files there?)")
        return line.strip()

    def command(self, *words: object) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(map(str, words)) + "\n")
        return self._line()

    def create(self, dim: int) -> tuple[str, str]:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        return name, self.command("create", name, dim)

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


# --- the measured runs, each in a fresh child process ----------------------------------------------


def child(variant: str, args: list[str]) -> None:
    """Runs in the child: set up (untimed: imports, input lists), run one variant, print its figures."""
    import pinecone  # noqa: F401

    import vecfmt.stores.pinecone
    from vecfmt import transfer  # noqa: F401

    setup: Any = None
    if variant == "sdk-import":  # the SDK's input: Python lists, as an application would hold them
        dump_path = args[0]
        setup = []
        for b in vecfmt.open_dump(dump_path).batches(""):
            values = vectors_numpy(b.column("values")).tolist()
            for i, (record_id, meta) in enumerate(zip(b.column("id").to_pylist(), b.column("metadata").to_pylist(),
                                                      strict=True)):  # fmt: skip
                setup.append({"id": record_id, "values": values[i], "metadata": json.loads(meta)})
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    count = run_variant(variant, args, setup)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_mb": rss, "count": count}))


def run_variant(variant: str, args: list[str], setup: Any) -> int:
    from vecfmt import transfer

    if variant == "vecfmt-export":
        uri, out = args
        transfer.export(uri, out, overwrite=True)
        return vecfmt.open_dump(out).manifest.total_rows
    if variant == "vecfmt-import":
        dump_path, uri = args
        transfer.import_dump(dump_path, uri)
        return vecfmt.open_dump(dump_path).manifest.total_rows
    from pinecone import Pinecone

    pc = Pinecone(api_key=os.environ["PINECONE_API_KEY"])
    if variant == "sequential-export":  # the guide's export_from_pinecone, SDK 10.2's list pages
        (host,) = args
        index = pc.index(host=host)
        namespace = ""
        stats = index.describe_index_stats()
        total = stats.total_vector_count
        print(f"Exporting {total} vectors from Pinecone", file=sys.stderr)
        all_vectors = []
        for page in index.list(namespace=namespace):
            ids_batch = [v.id for v in page.vectors]
            fetch_result = index.fetch(ids=ids_batch, namespace=namespace)
            for vec_id, vec_data in fetch_result.vectors.items():
                all_vectors.append({"id": vec_id, "values": vec_data.values, "metadata": vec_data.metadata})
        print(f"Exported {len(all_vectors)} vectors", file=sys.stderr)
        assert all(len(v["values"]) == len(all_vectors[0]["values"]) for v in all_vectors)
        return len({v["id"] for v in all_vectors})
    if variant == "sdk-import":
        host, batch_size, concurrency = args[1], int(args[2]), int(args[3])
        index = pc.index(host=host)
        response = index.upsert(vectors=setup, batch_size=batch_size, max_concurrency=concurrency,
                                show_progress=False)  # fmt: skip
        assert not response.has_errors, response.errors[:1]
        return int(response.upserted_count)
    raise SystemExit(f"unknown variant {variant}")


def measure(server: Server, variant: str, *args: str) -> dict[str, float]:
    """One run in a fresh child; its figures, the server's CPU seconds meanwhile."""
    env = {**os.environ, "PINECONE_API_KEY": server.api_key, "PINECONE_CONTROLLER_HOST": server.url,
           "VECFMT_STATE_DIR": tempfile.gettempdir() + "/vecfmt-bench-pinecone-state"}  # fmt: skip
    server_cpu = server.cpu()
    done = subprocess.run([sys.executable, __file__, "--child", variant, *args], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed: {done.stderr.strip()[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["server_cpu"] = server.cpu() - server_cpu
    return figures


def uri(name: str, host: str) -> str:
    return f"pinecone://{name}?host={host}"


def vecfmt_import(server: Server, dump: str, n: int, dim: int) -> tuple[dict[str, float], str, str]:
    name, host = server.create(dim)
    figures = measure(server, "vecfmt-import", dump, uri(name, host))
    assert figures["count"] == n and int(server.command("count", name)) == n, "vecfmt import incomplete"
    return figures, name, host


def sdk_import(server: Server, dump: str, n: int, dim: int, batch_size: int, concurrency: int) -> dict[str, float]:
    name, host = server.create(dim)
    figures = measure(server, "sdk-import", dump, host, str(batch_size), str(concurrency))
    assert figures["count"] == n and int(server.command("count", name)) == n, "SDK import incomplete"
    server.command("delete", name)
    return figures


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rss-n", type=int, default=1_000_000, help="rows for the peak-RSS runs (0: skip)")
    parser.add_argument("--sdk-batch", type=int, default=0, help="the SDK's batch_size (0: the most a 2 MB "
                        "request holds at --dim)")  # fmt: skip
    parser.add_argument("--sdk-concurrency", default="2,4,8,16", help="max_concurrency values to try")
    parser.add_argument("--as-is-server", action="store_true", help="the test server without the benchmark's two "
                        "fixes (TCP_NODELAY, a list that does not sort every id for every page)")  # fmt: skip
    parser.add_argument("--workdir", help="keep dumps here (default: a temp dir, removed)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecfmt-bench-pc-"))
    work.mkdir(parents=True, exist_ok=True)
    server = Server("as-is" if args.as_is_server else "tuned")
    try:
        run(args, server, work)
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, server: Server, work: Path) -> None:
    n, dim = args.n, args.dim
    # A float32 goes out as the JSON text of a double (up to ~24 characters and a comma): at 768 dims
    # about 90 records fill 2 MB, the SDK's per-request cap too.
    sdk_batch = args.sdk_batch or max(1, int(2_000_000 * 0.9) // (dim * 25 + 120))
    print(f"local Pinecone test server (own process, {server.url}); pinecone SDK {_sdk_version()}; "
          f"N = {n:,} x {dim}; best of {args.runs}; {os.cpu_count()} cores")  # fmt: skip
    dump, out = str(work / "dump"), str(work / "export")
    print(f"writing the dump ({n:,} rows) ...", flush=True)
    write_dump(dump, n, dim)

    # The SDK's best max_concurrency, on a quarter of the rows (one run each, interleaved twice).
    small = str(work / "small")
    write_dump(small, max(1, n // 4), dim)
    concurrencies = [int(c) for c in args.sdk_concurrency.split(",")]
    tried: dict[int, float] = {}
    for _ in range(2):
        for c in concurrencies:
            seconds = sdk_import(server, small, max(1, n // 4), dim, sdk_batch, c)["seconds"]
            tried[c] = min(tried.get(c, float("inf")), seconds)
    sdk_concurrency = min(tried, key=lambda c: tried[c])
    shutil.rmtree(small, ignore_errors=True)
    print("SDK upsert max_concurrency at N/4: " + ", ".join(f"{c}: {s:.1f}s" for c, s in tried.items())
          + f" -> {sdk_concurrency} (batch_size {sdk_batch})", flush=True)  # fmt: skip

    runs: dict[str, list[dict[str, float]]] = {k: [] for k in ("vecfmt-import", "sdk-import", "vecfmt-export",
                                                               "sequential-export")}  # fmt: skip
    source = None  # the index the exports read: one of vecfmt's imports
    for r in range(args.runs):  # interleaved, so every variant sees the same machine
        figures, name, host = vecfmt_import(server, dump, n, dim)
        runs["vecfmt-import"].append(figures)
        if source is None:
            source = (name, host)
        else:
            server.command("delete", name)
        runs["sdk-import"].append(sdk_import(server, dump, n, dim, sdk_batch, sdk_concurrency))
        assert source is not None
        runs["vecfmt-export"].append(measure(server, "vecfmt-export", uri(*source), out))
        if r == 0:
            assert_same_records(out, dump)  # vecfmt's round trip: bit-exact
        sequential = measure(server, "sequential-export", source[1])
        assert sequential["count"] == n, "the guide's loop missed records"
        runs["sequential-export"].append(sequential)
        print(f"run {r + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f}s" for k, v in runs.items()), flush=True)
    assert source is not None
    server.command("delete", source[0])

    best = {k: min(v, key=lambda f: f["seconds"]) for k, v in runs.items()}
    labels = {
        "vecfmt-import": "import: vecfmt import_dump (dump -> index)",
        "sdk-import": f"import: SDK upsert(batch_size={sdk_batch}, max_concurrency={sdk_concurrency})",
        "vecfmt-export": "export: vecfmt export (index -> dump)",
        "sequential-export": "export: guide's sequential list+fetch loop",
    }
    rows = []
    for key, label in labels.items():
        f = best[key]
        rows.append((label, f"{n / f['seconds']:,.0f}", f"{f['seconds']:.1f}", f"{f['cpu'] * 100_000 / n:.1f}",
                     f"{f['server_cpu'] * 100_000 / n:.1f}", f"{f['rss_mb']:,.0f}",
                     " ".join(f"{x['seconds']:.1f}" for x in runs[key])))  # fmt: skip
    print()
    print(table(rows, ("what", "vectors/s", "seconds", "client CPU s/100k", "server CPU s/100k",
                       f"peak RSS MB (N={n:,})", "all runs (s)")))  # fmt: skip

    export_ratio = best["sequential-export"]["seconds"] / best["vecfmt-export"]["seconds"]
    import_ratio = best["sdk-import"]["seconds"] / best["vecfmt-import"]["seconds"]
    print(f"\nexport vs the sequential loop {export_ratio:.2f}x (target >= 3); import vs the SDK's best path "
          f"{import_ratio:.2f}x (target >= 1)")  # fmt: skip

    result: dict[str, object] = {"export_vs_sequential": round(export_ratio, 2),
                                 "import_vs_sdk": round(import_ratio, 2), "peak_rss_mb_1m": None}  # fmt: skip
    if args.rss_n:
        rss_dump, rss_out = str(work / "rss-dump"), str(work / "rss-export")
        print(f"\nwriting the {args.rss_n:,}-row dump for the peak-RSS runs ...", flush=True)
        shutil.rmtree(dump, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        write_dump(rss_dump, args.rss_n, dim)
        imported, name, host = vecfmt_import(server, rss_dump, args.rss_n, dim)
        exported = measure(server, "vecfmt-export", uri(name, host), rss_out)
        assert exported["count"] == args.rss_n
        server.command("delete", name)
        shutil.rmtree(rss_dump, ignore_errors=True)
        shutil.rmtree(rss_out, ignore_errors=True)
        peak = max(imported["rss_mb"], exported["rss_mb"])
        result["peak_rss_mb_1m"] = round(peak)
        result["peak_rss_mb_1m_import"] = round(imported["rss_mb"])
        result["peak_rss_mb_1m_export"] = round(exported["rss_mb"])
        for what, f in (("import", imported), ("export", exported)):
            print(f"{what} {args.rss_n:,} x {dim}: peak RSS {f['rss_mb']:,.0f} MB (target < 1024), "
                  f"{args.rss_n / f['seconds']:,.0f} vectors/s, client CPU {f['cpu'] * 100_000 / args.rss_n:.1f} "
                  f"s/100k, server CPU {f['server_cpu'] * 100_000 / args.rss_n:.1f} s/100k")  # fmt: skip
    result.update({"export_vectors_per_s": round(n / best["vecfmt-export"]["seconds"]),
                   "import_vectors_per_s": round(n / best["vecfmt-import"]["seconds"]),
                   "sdk_batch_size": sdk_batch, "sdk_max_concurrency": sdk_concurrency})  # fmt: skip
    finish(result)


def _sdk_version() -> str:
    from importlib.metadata import version

    return version("pinecone")


if __name__ == "__main__":
    main()
