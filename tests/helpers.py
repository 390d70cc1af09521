"""Test data: realistic enough rows with exact float32 values, and hand-made (possibly broken) dumps."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.manifest import Manifest, VectorSpec
from vecfmt.schema import SPARSE_TYPE, vectors_array
from vecfmt.storage import resolve
from vecfmt.writer import DumpWriter, PartWriter, commit_manifest


def make_table(
    n: int,
    dim: int = 8,
    *,
    seed: int = 0,
    prefix: str = "id-",
    document: bool = False,
    sparse: bool = False,
    named: dict[str, int] | None = None,
) -> pa.Table:
    """``n`` rows: unicode-free ids, standard normal vectors, varied metadata (nested, null, unicode)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {
        "id": pa.array([f"{prefix}{i}" for i in range(n)], pa.string()),
        "values": vectors_array(rng.standard_normal((n, dim)).astype(np.float32)),
    }
    for name, named_dim in (named or {}).items():
        columns[f"values_{name}"] = vectors_array(rng.standard_normal((n, named_dim)).astype(np.float32))
    if sparse:
        indices = [sorted(rng.choice(1000, size=3, replace=False).tolist()) for _ in range(n)]
        values = [rng.standard_normal(3).astype(np.float32).tolist() for _ in range(n)]
        columns["sparse_values"] = pa.array(
            [{"indices": i, "values": v} for i, v in zip(indices, values, strict=True)], SPARSE_TYPE
        )
    metadata = []
    for i in range(n):
        if i % 7 == 3:
            metadata.append(None)
        else:
            metadata.append(json.dumps(
                {"i": i, "tag": ["α", "β"][i % 2], "nested": {"page": i % 5, "tags": ["x", "y"]}},
                ensure_ascii=False,
            ))
    columns["metadata"] = pa.array(metadata, pa.string())
    if document:
        columns["document"] = pa.array([f"Document number {i} über Vektoren" for i in range(n)])
    return pa.table(columns)


def write_raw_dump(uri: str, tables: dict[str, pa.Table], metric: str = "cosine") -> Manifest:
    """A dump written with no checks at all (PartWriter + commit_manifest): for data the checked
    writer refuses (NaN, duplicate ids), to test that readers, validate and importers catch it."""
    location = resolve(uri)
    location.makedirs()
    first = next(iter(tables.values()))
    dim = first.schema.field("values").type.list_size
    template = Manifest(vectors=[VectorSpec("default", "values", dim, metric)],
                        document="document" in first.schema.names,
                        sparse_values="sparse_values" in first.schema.names)
    files = []
    for namespace, table in tables.items():
        part = PartWriter(location, namespace, template.arrow_schema())
        for batch in table.select(template.arrow_schema().names).cast(template.arrow_schema()).to_batches():
            part.write(batch)
        files.extend(part.close())
    return commit_manifest(location, template, files)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def vecfmt_cli(*args: str, timeout: float = 120) -> Run:
    """Run the real ``vecfmt`` command in a subprocess (stdout/stderr are pipes, so no progress bars)."""
    done = subprocess.run(
        [sys.executable, "-m", "vecfmt.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    return Run(done.returncode, done.stdout, done.stderr)


def assert_one_clear_error(run: Run, *needles: str) -> None:
    """Exit non-zero, exactly one line on stderr, no traceback, and it says what we expect."""
    assert run.code != 0, run
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def rewrite_part(root: str, index: int, table: pa.Table) -> str:
    """Replace the ``index``-th file of the dump at ``root`` by ``table`` as plain Parquet (no checks)
    and fix its rows, size and SHA-256 in the manifest, as a careless or hostile producer would."""
    import hashlib

    import pyarrow.parquet as pq

    manifest_path = f"{root}/manifest.json"
    with open(manifest_path) as f:
        manifest = json.load(f)
    entry = manifest["files"][index]
    pq.write_table(table, f"{root}/{entry['path']}")
    with open(f"{root}/{entry['path']}", "rb") as f:
        data = f.read()
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    return entry["path"]


def assert_tables_identical(got: pa.Table, want: pa.Table) -> None:
    """Same columns and rows; ids, the float32 bits of every present vector and its validity (what sits
    under a null vector is no value), and every other column's values identical."""
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(b.type):
            assert a.is_valid().equals(b.is_valid()), name
            valid = b.is_valid().to_numpy(zero_copy_only=False)
            dim = b.type.list_size
            va = a.values.to_numpy(zero_copy_only=False).view(np.uint32).reshape(-1, dim)[valid]
            vb = b.values.to_numpy(zero_copy_only=False).view(np.uint32).reshape(-1, dim)[valid]
            np.testing.assert_array_equal(va, vb, err_msg=f"column {name}")
        else:
            assert a.to_pylist() == b.to_pylist(), name


def write_namespaced(uri: str, tables: dict[str, pa.Table], *, max_chunksize: int | None = None,
                     **kwargs: Any) -> None:
    """A dump with one namespace per table (``DumpWriter`` options in ``kwargs``)."""
    with DumpWriter(uri, **kwargs) as writer:
        for ns, table in tables.items():
            for batch in table.to_batches(max_chunksize=max_chunksize):
                writer.write_batch(batch, ns)


def assert_split_export_is_the_whole(source: str, root: Any, monkeypatch: Any) -> None:
    """An export of ``source`` read with the test's slicing patches in force is the same dump as one read with
    them undone (``monkeypatch.undo()``): how a store's slices are checked end to end."""
    from vecfmt import transfer
    from vecfmt.ops.diff import diff_dumps

    transfer.export(source, str(root / "split"))
    monkeypatch.undo()
    transfer.export(source, str(root / "whole"))
    assert diff_dumps(str(root / "whole"), str(root / "split")).identical
