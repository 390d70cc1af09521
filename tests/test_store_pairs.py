"""A copy between every ordered pair of the embedded stores (LanceDB, Qdrant local, Milvus Lite, Chroma's
persistent client), each checked with ``vecfmt verify --full`` against its source store and against the
dump the source was loaded from: every id once, every vector bit for bit, metadata and documents equal,
search answers agreeing. Euclidean vectors, so that no store normalises them (cosine in Qdrant and Chroma
does: their own tests state that bound)."""

from __future__ import annotations

import os

import pytest

import vecfmt
from tests.helpers import make_table
from vecfmt import transfer
from vecfmt.quality.verify import verify

STORES = ["lancedb", "qdrant", "milvus", "chroma"]
SDKS = {"lancedb": "lancedb", "qdrant": "qdrant_client", "milvus": "pymilvus", "chroma": "chromadb"}


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Import progress files (Qdrant, Milvus, Chroma) in the test's folder."""
    monkeypatch.setenv("VECFMT_STATE_DIR", str(tmp_path / "state"))


def store_uri(store: str, root, name: str) -> str:
    if store == "lancedb":
        return f"lancedb://{root / 'lance'}?table={name}"
    if store == "milvus":
        return f"milvus://{root / 'milvus.db'}?collection={name}"
    return f"{store}://{root / store}?collection={name}"


def _needs(*stores: str) -> None:
    for store in stores:
        try:
            __import__(SDKS[store])
        except ImportError:
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(f"{SDKS[store]} is not installed")


@pytest.mark.parametrize(("source", "target"), [(a, b) for a in STORES for b in STORES if a != b])
def test_copy_between_two_stores_verifies_exactly(tmp_path, source, target):
    _needs(source, target)
    table = make_table(300, 16, document=True)
    dump = str(tmp_path / "dump")
    vecfmt.write_dump(dump, table, metric="euclidean")
    source_uri, target_uri = store_uri(source, tmp_path, "src"), store_uri(target, tmp_path, "dst")
    transfer.import_dump(dump, source_uri, progress=False)

    result = transfer.copy(source_uri, target_uri, progress=False)

    assert result.rows == 300
    for reference in (source_uri, dump):
        report = verify(reference, target_uri, full=True, queries=20, progress=False)
        assert report.passed, report.problems
        check = report.namespaces[""]
        assert (check.rows_target, check.compared, check.complete) == (300, 300, True)
        assert report.search is not None and report.search.recall_target >= 0.9
