"""The test Pinecone server, driven by the real ``pinecone`` SDK (10.2): endpoints, limits, faults, bulk import."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pinecone = pytest.importorskip("pinecone")
from pinecone.errors.exceptions import (  # noqa: E402
    ApiError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PineconeConnectionError,
    RateLimitError,
    ServiceError,
    UnauthorizedError,
)

from tests.servers.pinecone import PineconeIndex, PineconeServer  # noqa: E402
from tests.servers.s3 import S3Server  # noqa: E402

DIM = 8


def _vecs(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _raw(server: PineconeServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request past the SDK's own client-side checks, with the headers the SDK sends."""
    headers = {"Api-Key": server.api_key, "X-Pinecone-Api-Version": "2026-07", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)


@pytest.fixture
def idx(pinecone_index: PineconeIndex) -> Any:
    return pinecone_index.server.index(pinecone_index.name)


# --- control plane ---


def test_control_plane_create_describe_list_delete(pinecone_server: PineconeServer) -> None:
    pc = pinecone_server.client()
    name = "cp-" + str(time.monotonic_ns())[-8:]
    model = pc.indexes.create(name=name, dimension=16, metric="dotproduct",
                              spec={"serverless": {"cloud": "aws", "region": "us-east-1"}})  # fmt: skip
    assert (model.dimension, model.metric, model.status.ready) == (16, "dotproduct", True)
    assert model.host == f"{pinecone_server.url}/index/{name}"
    assert name in [i.name for i in pc.indexes.list()]
    with pytest.raises(ConflictError):
        pc.indexes.create(name=name, dimension=16, spec={"serverless": {"cloud": "aws", "region": "us-east-1"}})
    with pytest.raises(ApiError, match="dimension"):  # 20,000 at most
        pc.indexes.create(
            name=name + "x", dimension=20001, spec={"serverless": {"cloud": "aws", "region": "us-east-1"}}
        )
    pc.indexes.delete(name)
    with pytest.raises(NotFoundError):
        pc.indexes.describe(name)


def test_auth_and_version_header(pinecone_server: PineconeServer, pinecone_index: PineconeIndex) -> None:
    with pytest.raises(UnauthorizedError):
        list(pinecone_server.client(api_key="wrong").indexes.list())
    with pytest.raises(UnauthorizedError):
        pinecone.Pinecone(api_key="wrong").index(host=pinecone_index.host).describe_index_stats()
    assert _raw(pinecone_server, "GET", "/indexes", headers={"Api-Key": ""}).status_code == 401
    missing = httpx.get(f"{pinecone_server.url}/indexes", headers={"Api-Key": pinecone_server.api_key})
    assert missing.status_code == 400 and "X-Pinecone-Api-Version" in missing.json()["error"]["message"]
    wrong = _raw(pinecone_server, "GET", "/indexes", headers={"X-Pinecone-Api-Version": "2019-01"})
    assert wrong.status_code == 400


# --- data plane, vector index ---


def test_upsert_fetch_bit_exact_with_sparse_and_metadata(make_pinecone_index: Any) -> None:
    info = make_pinecone_index(dimension=DIM, metric="dotproduct")
    idx = info.server.index(info.name)
    vecs = _vecs(3)
    vecs[0, 0] = np.float32(1) / np.float32(3)  # a value whose float64 repr differs from its float32 one
    sparse = {"indices": [1, 7, 4000000000], "values": [0.5, np.float32(0.1).item(), -2.0]}
    meta = {"genre": "doc", "year": 2019, "tags": ["a", "b"], "ok": True, "score": 0.25}
    idx.upsert(vectors=[{"id": "a", "values": vecs[0].tolist(), "sparse_values": sparse, "metadata": meta},
                        ("b", vecs[1].tolist()), ("c", vecs[2].tolist(), {"k": "v"})], namespace="ns1")  # fmt: skip
    stored = info.server.records(info.name, "ns1")
    assert stored["a"].values.dtype == np.float32
    np.testing.assert_array_equal(np.stack([stored[k].values for k in "abc"]).view(np.uint32), vecs.view(np.uint32))
    fetched = idx.fetch(ids=["a", "b", "c", "missing"], namespace="ns1")
    assert sorted(fetched.vectors) == ["a", "b", "c"]
    back = np.array([fetched.vectors[k].values for k in "abc"], dtype=np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), vecs.view(np.uint32))
    assert fetched.vectors["a"].metadata == meta and fetched.vectors["b"].metadata is None
    assert fetched.vectors["a"].sparse_values.indices == [1, 7, 4000000000]
    assert (
        np.array(fetched.vectors["a"].sparse_values.values, dtype=np.float32).tolist()
        == np.array(sparse["values"], dtype=np.float32).tolist()
    )


def test_default_namespace_stats_and_list_namespaces(idx: Any, pinecone_index: PineconeIndex) -> None:
    vecs = _vecs(5)
    idx.upsert(vectors=[(f"d{i}", v.tolist()) for i, v in enumerate(vecs[:2])])
    idx.upsert(vectors=[(f"x{i}", v.tolist()) for i, v in enumerate(vecs[2:])], namespace="tenant/7")
    stats = idx.describe_index_stats()
    assert stats.total_vector_count == 5 and stats.dimension == DIM and stats.metric == "cosine"
    assert {k: v.vector_count for k, v in stats.namespaces.items()} == {"__default__": 2, "tenant/7": 3}
    names = {ns.name: ns.record_count for page in idx.list_namespaces() for ns in page.namespaces}
    assert names == {"__default__": 2, "tenant/7": 3}
    assert idx.describe_namespace(name="tenant/7").record_count == 3
    assert sorted(pinecone_index.server.records(pinecone_index.name)) == ["d0", "d1"]
    assert idx.fetch(ids=["d0"], namespace="__default__").vectors["d0"].id == "d0"  # the alias
    idx.delete_namespace(name="tenant/7")
    assert pinecone_index.server.namespaces(pinecone_index.name) == [""]


def test_list_bytewise_order_prefix_and_pagination(idx: Any) -> None:
    ids = ["b", "a", "B", "~", "a10", "a2", "Z", "_", "a1"] + [f"p{i:03d}" for i in range(250)]
    vecs = _vecs(len(ids))
    idx.upsert(vectors=list(zip(ids, vecs.tolist(), strict=True)), namespace="n", batch_size=100)
    listed = [item.id for page in idx.list(namespace="n") for item in page.vectors]
    assert listed == sorted(ids, key=lambda s: s.encode())
    page = idx.list_paginated(namespace="n")
    assert len(page.vectors) == 100 and page.pagination and page.pagination.next
    page2 = idx.list_paginated(namespace="n", pagination_token=page.pagination.next, limit=7)
    assert [v.id for v in page2.vectors] == listed[100:107]
    assert [v.id for p in idx.list(namespace="n", prefix="a1") for v in p.vectors] == ["a1", "a10"]
    last = idx.list_paginated(namespace="n", prefix="p2", limit=50)
    assert len(last.vectors) == 50 and last.pagination is None


@pytest.mark.parametrize("metric", ["cosine", "dotproduct", "euclidean"])
def test_query_exact_by_vector_and_id(make_pinecone_index: Any, metric: str) -> None:
    info = make_pinecone_index(dimension=DIM, metric=metric)
    idx = info.server.index(info.name)
    vecs = _vecs(50, seed=3)
    idx.upsert(vectors=[(f"v{i}", v.tolist(), {"i": i}) for i, v in enumerate(vecs)])
    q = vecs[7] + 0.01
    m, qq = vecs.astype(np.float64), q.astype(np.float64)
    expected = {"cosine": -(m @ qq) / (np.linalg.norm(m, axis=1) * np.linalg.norm(qq)),
                "dotproduct": -(m @ qq), "euclidean": ((m - qq) ** 2).sum(axis=1)}[metric]  # fmt: skip
    res = idx.query(vector=q.tolist(), top_k=5, include_metadata=True)
    assert [x.id for x in res.matches] == [f"v{i}" for i in np.argsort(expected)[:5]]
    assert res.matches[0].metadata == {"i": int(np.argsort(expected)[0])} and res.matches[0].values == []
    by_id = idx.query(id="v7", top_k=1, include_values=True)
    assert by_id.matches[0].id == "v7"
    np.testing.assert_array_equal(np.array(by_id.matches[0].values, dtype=np.float32), vecs[7])
    assert [x.id for x in idx.query(vector=q.tolist(), top_k=3, filter={"i": {"$lt": 3}}).matches] != []


def test_delete_by_ids_all_and_filter(idx: Any, pinecone_index: PineconeIndex) -> None:
    vecs = _vecs(6)
    idx.upsert(vectors=[(f"v{i}", v.tolist(), {"even": i % 2 == 0}) for i, v in enumerate(vecs)], namespace="n")
    idx.delete(ids=["v0", "nope"], namespace="n")
    idx.delete(filter={"even": True}, namespace="n")
    assert sorted(pinecone_index.server.records(pinecone_index.name, "n")) == ["v1", "v3", "v5"]
    idx.delete(delete_all=True, namespace="n")
    assert pinecone_index.server.namespaces(pinecone_index.name) == []


# --- limits, refused with the service's status codes and the SDK's exceptions ---


def test_limits(idx: Any, pinecone_server: PineconeServer, pinecone_index: PineconeIndex) -> None:
    path = f"/index/{pinecone_index.name}/vectors/upsert"
    with pytest.raises(ApiError, match="Vector dimension 3 does not match the dimension of the index 8"):
        idx.upsert(vectors=[("a", [0.1, 0.2, 0.3])])
    with pytest.raises(ApiError, match="exceeds the limit of 40960 bytes"):
        idx.upsert(vectors=[("a", [0.1] * DIM, {"text": "x" * 41000})])
    nested = _raw(pinecone_server, "POST", path, json={"vectors": [{"id": "a", "values": [0.1] * DIM,
                                                                     "metadata": {"nested": {"no": 1}}}]})  # fmt: skip
    assert nested.status_code == 400 and "string, number, boolean or list of strings" in nested.json()["message"]
    too_long = _raw(pinecone_server, "POST", path, json={"vectors": [{"id": "x" * 513, "values": [0.1] * DIM}]})
    assert too_long.status_code == 400 and "too long" in too_long.json()["message"]
    many = [{"id": str(i), "values": [0.0] * 2} for i in range(1001)]
    over = _raw(pinecone_server, "POST", path, json={"vectors": many})
    assert over.status_code == 400 and "exceeds the limit of 1000" in over.json()["message"]
    big = [{"id": str(i), "values": [0.123456789] * DIM, "metadata": {"t": "y" * 3000}} for i in range(800)]
    with pytest.raises(PayloadTooLargeError, match="2MB"):
        idx.upsert(vectors=big)
    bad_type = _raw(pinecone_server, "POST", path, json={"vectors": [{"id": "a", "values": ["x"] * DIM}]})
    assert bad_type.status_code == 400 and bad_type.json()["code"] == 3
    bad_schema = _raw(pinecone_server, "POST", f"/index/{pinecone_index.name}/query", json={"topK": 0, "id": "a"})
    assert bad_schema.status_code == 400 and "topK" in bad_schema.json()["message"]
    assert pinecone_server.records(pinecone_index.name) == {}  # nothing half-written


def test_wrong_api_for_index_kind(make_pinecone_index: Any) -> None:
    vec_ix = make_pinecone_index(dimension=DIM)
    doc_ix = make_pinecone_index(kind="document", schema={"fields": {"emb": {"type": "dense_vector", "dimension": 4,
                                                                             "metric": "cosine"}}})  # fmt: skip
    with pytest.raises(ApiError, match="document index"):
        vec_ix.server.index(doc_ix.name).upsert(vectors=[("a", [0.1] * 4)])
    with pytest.raises(ApiError, match="vector index"):
        vec_ix.server.index(vec_ix.name).documents.upsert(namespace="n", documents=[{"_id": "a"}])


# --- document indexes ---


def test_documents_round_trip(make_pinecone_index: Any) -> None:
    schema = {"fields": {"emb": {"type": "dense_vector", "dimension": 4, "metric": "dotproduct"},
                         "sp": {"type": "sparse_vector"}, "title": {"type": "string", "full_text_search": {}},
                         "year": {"type": "integer", "filterable": True}}}  # fmt: skip
    info = make_pinecone_index(kind="document", schema=schema)
    pc = info.server.client()
    desc = pc.indexes.describe(info.name)
    assert set(desc.schema.fields) == {"emb", "sp", "title", "year"}
    docs = pc.index(host=info.host).documents
    vecs = _vecs(30, 4)
    res = docs.upsert(namespace="ns", documents=[
        {"_id": f"d{i:02d}", "emb": v.tolist(), "title": f"t{i}", "year": 2000 + i, "lang": "en",
         **({"sp": {"indices": [i], "values": [1.0]}} if i % 2 else {})} for i, v in enumerate(vecs)])  # fmt: skip
    assert res.upserted_count == 30
    stored = info.server.documents(info.name, "ns")
    np.testing.assert_array_equal(stored["d03"]["emb"], vecs[3])
    listed = [d.id for d in docs.list(namespace="ns", limit=7)]
    assert listed == [f"d{i:02d}" for i in range(30)]
    fetched = docs.fetch(namespace="ns", ids=["d03", "zz"])
    assert list(fetched.documents) == ["d03"]
    d3 = fetched.documents["d03"].to_dict()
    assert d3["title"] == "t3" and d3["lang"] == "en" and d3["sp"] == {"indices": [3], "values": [1.0]}
    np.testing.assert_array_equal(np.array(d3["emb"], dtype=np.float32), vecs[3])
    by_filter = docs.fetch(namespace="ns", filter={"year": {"$gte": 2025}}, limit=3)
    assert list(by_filter.documents) == ["d25", "d26", "d27"] and by_filter.pagination is not None
    clause = {"type": "dense_vector", "field": "emb", "values": vecs[5].tolist()}
    hits = docs.search(namespace="ns", top_k=3, score_by=[clause], include_fields=["title"])
    assert hits.matches[0].id in {f"d{i:02d}" for i in range(30)} and hits.matches[0].get("title")
    expected = np.argsort(-(vecs.astype(np.float64) @ vecs[5].astype(np.float64)))[:3]
    assert [m.id for m in hits.matches] == [f"d{i:02d}" for i in expected]
    with pytest.raises(ApiError, match="dimension"):
        docs.upsert(namespace="ns", documents=[{"_id": "bad", "emb": [0.1, 0.2]}])
    with pytest.raises(ApiError, match="integer"):
        docs.upsert(namespace="ns", documents=[{"_id": "bad", "emb": [0.1] * 4, "year": "x"}])
    docs.delete(namespace="ns", ids=["d00", "d01"])
    docs.delete(namespace="ns", filter={"year": {"$gte": 2010}})
    assert sorted(info.server.documents(info.name, "ns")) == [f"d{i:02d}" for i in range(2, 10)]


# --- faults ---


def test_429_with_retry_after_is_retried_by_the_sdk(idx: Any, pinecone_server: PineconeServer) -> None:
    fault = pinecone_server.inject(429, times=2, path_contains="/vectors/upsert", retry_after=0.05)
    assert idx.upsert(vectors=[("a", [0.1] * DIM)]).upserted_count == 1
    statuses = [r.status for r in pinecone_server.request_log if r.path.endswith("/vectors/upsert")]
    assert statuses == [429, 429, 200] and fault.hits == 2


def test_429_after_retries_raises_rate_limit(idx: Any, pinecone_server: PineconeServer) -> None:
    pinecone_server.inject(429, times=None, path_contains="describe_index_stats", retry_after=0)
    with pytest.raises(RateLimitError):
        idx.describe_index_stats()
    pinecone_server.clear_faults()
    assert idx.describe_index_stats().total_vector_count == 0


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_retried_then_service_error(idx: Any, pinecone_server: PineconeServer, status: int) -> None:
    pinecone_server.inject(status, times=1, path_contains="/query")
    assert idx.query(vector=[0.1] * DIM, top_k=1).matches == []
    pinecone_server.inject(status, times=None, path_contains="/query")
    with pytest.raises(ServiceError) as err:
        idx.query(vector=[0.1] * DIM, top_k=1)
    assert err.value.status_code == status


def test_reset_connection_is_retried_by_the_sdk(
    idx: Any, pinecone_server: PineconeServer, pinecone_index: PineconeIndex
) -> None:
    pinecone_server.inject("reset", times=1, path_contains="/vectors/upsert")
    idx.upsert(vectors=[("a", [0.1] * DIM), ("b", [0.2] * DIM)])
    assert [r.status for r in pinecone_server.request_log] == [0, 200]
    assert sorted(pinecone_server.records(pinecone_index.name)) == ["a", "b"]


def test_dropped_mid_response_raises_after_the_write_happened(
    idx: Any, pinecone_server: PineconeServer, pinecone_index: PineconeIndex
) -> None:
    pinecone_server.inject("drop", times=1, path_contains="/vectors/upsert")
    with pytest.raises(PineconeConnectionError):
        idx.upsert(vectors=[("a", [0.1] * DIM)])
    assert list(pinecone_server.records(pinecone_index.name)) == ["a"]  # processed before the drop
    idx.upsert(vectors=[("a", [0.1] * DIM)])  # a caller's retry: idempotent by id
    assert [r.status for r in pinecone_server.request_log] == [0, 200]
    assert len(pinecone_server.records(pinecone_index.name)) == 1


def test_slow_response_and_fraction(idx: Any, pinecone_server: PineconeServer) -> None:
    pinecone_server.inject("slow", delay=0.4, path_contains="/vectors/list")
    start = time.monotonic()
    idx.list_paginated()
    assert time.monotonic() - start >= 0.4
    fault = pinecone_server.inject(503, times=None, fraction=0.3, seed=1, path_contains="/vectors/fetch", method="GET")
    for _ in range(20):
        idx.fetch(ids=["a"])  # the SDK's retries absorb a 30 % failure rate
    assert 0 < fault.hits < 20


def test_timeout_on_slow_answer(pinecone_server: PineconeServer, pinecone_index: PineconeIndex) -> None:
    pinecone_server.inject("slow", delay=1.5, times=None, path_contains="describe_index_stats")
    fast = pinecone_server.client(timeout=0.3).index(host=pinecone_index.host)
    with pytest.raises(pinecone.errors.exceptions.PineconeError):
        fast.describe_index_stats()


def test_lagging_stats(idx: Any, pinecone_server: PineconeServer) -> None:
    idx.upsert(vectors=[("a", [0.1] * DIM)])
    pinecone_server.lag_stats()
    idx.upsert(vectors=[("b", [0.1] * DIM), ("c", [0.2] * DIM)])
    assert idx.describe_index_stats().total_vector_count == 1
    assert [ns.record_count for page in idx.list_namespaces() for ns in page.namespaces] == [1]
    pinecone_server.settle()
    assert idx.describe_index_stats().total_vector_count == 3
    pinecone_server.lag_stats(requests=2)
    idx.upsert(vectors=[("d", [0.1] * DIM)])
    assert idx.describe_index_stats().total_vector_count == 3  # stats miss the last 2 data requests
    idx.fetch(ids=["a"])
    assert idx.describe_index_stats().total_vector_count == 3  # the upsert is one of the last two requests
    idx.fetch(ids=["a"])
    assert idx.describe_index_stats().total_vector_count == 4
    pinecone_server.lag_stats(False)
    assert idx.describe_index_stats().total_vector_count == 4


# --- bulk import ---


def _write_dump(fs: Any, root: str, *, dim: int = DIM) -> dict[str, int]:
    rows = {"__default__": 3, "alpha": 5}
    for ns, n in rows.items():
        vecs = _vecs(n, dim, seed=n)
        table = pa.table({
            "id": [f"{ns}-{i}" for i in range(n)],
            "values": pa.array(list(vecs), type=pa.list_(pa.float32())),
            "metadata": [json.dumps({"i": i}) if i else None for i in range(n)],
            "extra": list(range(n)),
        })  # fmt: skip
        fs.create_dir(f"{root}/{ns}")
        pq.write_table(table, f"{root}/{ns}/part-00000.parquet", filesystem=fs)
        with fs.open_output_stream(f"{root}/{ns}/notes.txt") as out:  # ignored: not .parquet
            out.write(b"not parquet")
    return {"": 3, "alpha": 5}


def _wait(idx: Any, import_id: str) -> Any:
    seen = set()
    for _ in range(100):
        job = idx.describe_import(import_id)
        seen.add(job.status)
        if job.status in ("Completed", "Failed", "Cancelled"):
            return job, seen
        time.sleep(0.05)
    raise AssertionError("import never finished")


def test_bulk_import_local_folder(idx: Any, pinecone_server: PineconeServer, pinecone_index: PineconeIndex,
                                  tmp_path: Any) -> None:  # fmt: skip
    import pyarrow.fs as pafs

    expected = _write_dump(pafs.LocalFileSystem(), str(tmp_path))
    started = idx.start_import(uri=tmp_path.as_uri(), error_mode="continue")
    job, seen = _wait(idx, started.id)
    assert job.status == "Completed" and job.records_imported == 8 and job.percent_complete == 100.0
    assert seen & {"Pending", "InProgress"}  # polling saw it running
    for ns, n in expected.items():
        assert len(pinecone_server.records(pinecone_index.name, ns)) == n
    assert pinecone_server.records(pinecone_index.name, "alpha")["alpha-2"].metadata == {"i": 2}
    assert [j.id for j in idx.list_imports()] == [started.id]
    again = idx.start_import(uri=str(tmp_path))  # namespaces exist now: refused
    job, _ = _wait(idx, again.id)
    assert job.status == "Failed" and "already exists" in job.error


def test_bulk_import_error_modes_and_cancel(make_pinecone_index: Any, tmp_path: Any) -> None:
    import pyarrow.fs as pafs

    _write_dump(pafs.LocalFileSystem(), str(tmp_path), dim=4)  # wrong dimension for an 8-dim index
    info = make_pinecone_index(dimension=DIM)
    idx = info.server.index(info.name)
    job, _ = _wait(idx, idx.start_import(uri=str(tmp_path), error_mode="abort").id)
    assert job.status == "Failed" and "dimension" in job.error and info.server.namespaces(info.name) == []
    job, _ = _wait(idx, idx.start_import(uri=str(tmp_path), error_mode="continue").id)
    assert job.status == "Completed" and job.records_imported == 0
    info.server.import_delay = 5
    pending = idx.start_import(uri=str(tmp_path))
    idx.cancel_import(pending.id)
    assert idx.describe_import(pending.id).status == "Cancelled"
    with pytest.raises(NotFoundError):
        idx.describe_import("999")


def test_bulk_import_from_moto_s3(idx: Any, pinecone_server: PineconeServer, pinecone_index: PineconeIndex,
                                  s3_server: S3Server, s3_uri: str) -> None:  # fmt: skip
    fs = s3_server.filesystem()
    expected = _write_dump(fs, s3_uri.removeprefix("s3://"))
    job, _ = _wait(idx, idx.start_import(uri=s3_uri).id)
    assert job.status == "Completed", job.error
    assert {ns: len(pinecone_server.records(pinecone_index.name, ns)) for ns in expected} == expected
