"""vecfmt's own write and read against the raw pyarrow floor, side by side in one run.

- write: vecfmt.write_dump (conform, NaN/inf and id checks, streaming SHA-256, manifest) vs
  pyarrow.parquet.write_table of the same table with the same Parquet options.
- read: Dump.matrix (every file's SHA-256 checked, batches copied into one (n, dim) NumPy matrix) vs
  pyarrow.parquet.read_table + to_numpy; and the same read with checksums off, to show their cost.
- peak RSS of a child process streaming --rss-n rows x 768 through DumpWriter (3 GB of vectors at 1M).

    .venv/bin/python benchmarks/format.py [--n 200000] [--dim 768] [--rss-n 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PEAK_RSS_SNIPPET, best_of, child_peak_rss_mb, finish, table

import vecfmt
from vecfmt.schema import vectors_array
from vecfmt.writer import ParquetOptions

STREAM_WRITER = (
    """
import sys, numpy as np, pyarrow as pa, vecfmt
from vecfmt.schema import vectors_array
n, dim, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(1)
step = 10_000
with vecfmt.DumpWriter(out, overwrite=True) as writer:
    for start in range(0, n, step):
        rows = min(step, n - start)
        writer.write_batch(pa.record_batch({
            "id": pa.array([f"doc-{i}" for i in range(start, start + rows)]),
            "values": vectors_array(rng.standard_normal((rows, dim), dtype=np.float32)),
            "metadata": pa.array(['{"source": "bench"}'] * rows),
        }))
assert writer.manifest.total_rows == n
"""
    + PEAK_RSS_SNIPPET
)


def make_table(n: int, dim: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "id": pa.array([f"doc-{i}" for i in range(n)]),
            "values": vectors_array(rng.standard_normal((n, dim), dtype=np.float32)),
            "metadata": pa.array([json.dumps({"page": i % 100, "source": "bench"}) for i in range(n)]),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rss-n", type=int, default=1_000_000, help="rows for the peak-RSS run (0: skip)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vecfmt-bench-"))
    try:
        data = make_table(args.n, args.dim)
        options = ParquetOptions()
        # The raw floor writes the same row groups with the same encodings, into one file.
        row_group_rows = max(1, options.row_group_bytes * data.num_rows // data.nbytes)
        kwargs = options.writer_kwargs(data.schema)
        raw_path = work / "raw.parquet"
        dump_uri = str(work / "dump")

        def raw_write() -> None:
            pq.write_table(data, raw_path, row_group_size=row_group_rows, **kwargs)

        def vecfmt_write() -> None:
            vecfmt.write_dump(dump_uri, data, overwrite=True)

        writes = best_of(args.runs, raw=raw_write, vecfmt=vecfmt_write)

        def raw_read() -> np.ndarray:
            column = pq.read_table(raw_path).column("values").combine_chunks()
            return column.values.to_numpy().reshape(len(column), args.dim)

        def vecfmt_read() -> np.ndarray:
            return vecfmt.open_dump(dump_uri).matrix()  # checksums verified on the way

        def unverified_read() -> np.ndarray:  # what the checksums cost, shown on its own
            return vecfmt.open_dump(dump_uri).matrix(verify=False)

        reads = best_of(args.runs, raw=raw_read, vecfmt=vecfmt_read, unverified=unverified_read)
        assert np.array_equal(raw_read(), vecfmt_read())

        write_ratio = writes["raw"] / writes["vecfmt"]
        read_ratio = reads["raw"] / reads["vecfmt"]
        unverified_ratio = reads["raw"] / reads["unverified"]
        dump_bytes = sum(f.bytes for f in vecfmt.open_dump(dump_uri).manifest.files)
        peak = None
        if args.rss_n:
            peak = child_peak_rss_mb(STREAM_WRITER, str(args.rss_n), str(args.dim), str(work / "rss"))
        vector_mb = args.n * args.dim * 4 / 1e6
        print(
            f"format benchmark: {args.n:,} x {args.dim} float32 ({vector_mb:,.0f} MB of vectors), "
            f"best of {args.runs}, side by side"
        )
        print(
            table(
                [
                    (
                        "write",
                        f"{vector_mb / writes['raw']:,.0f}",
                        f"{vector_mb / writes['vecfmt']:,.0f}",
                        f"{write_ratio:.2f}x",
                        ">= 0.9x",
                    ),
                    (
                        "read to NumPy",
                        f"{vector_mb / reads['raw']:,.0f}",
                        f"{vector_mb / reads['vecfmt']:,.0f}",
                        f"{read_ratio:.2f}x",
                        ">= 0.9x",
                    ),
                    (
                        "read, checksums off",
                        f"{vector_mb / reads['raw']:,.0f}",
                        f"{vector_mb / reads['unverified']:,.0f}",
                        f"{unverified_ratio:.2f}x",
                        "",
                    ),
                ],
                ("", "raw MB/s", "vecfmt MB/s", "vecfmt vs raw", "target"),
            )
        )
        print(f"dump size: {dump_bytes / 1e6:,.0f} MB ({dump_bytes / (vector_mb * 1e6):.2f} of the raw vectors)")
        if peak is not None:
            print(
                f"peak RSS streaming {args.rss_n:,} x {args.dim} through DumpWriter: {peak:,.0f} MB "
                f"(target < 1024 MB; {args.rss_n * args.dim * 4 / 1e9:.1f} GB of vectors)"
            )
        finish(
            {
                "n": args.n,
                "dim": args.dim,
                "write_vs_raw": round(write_ratio, 3),
                "read_vs_raw": round(read_ratio, 3),
                "read_unverified_vs_raw": round(unverified_ratio, 3),
                "peak_rss_mb_1m": None if peak is None else round(peak, 1),
                "rss_n": args.rss_n,
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
