"""``tune`` on real pgvector indexes (PostgreSQL 18 + pgvector 0.8.6 and 15 + 0.8.0, each in a fresh database).

The data: 4,000 standard normal vectors of 32 dimensions (fixed seed), searched by cosine, under an HNSW
index built with m=4, ef_construction=16. Unstructured data and a sparse graph make the index miss true
neighbours at small ef_search (recall@10 about 0.55 at ef_search 20) and find nearly all at 1000 (about
0.99), so the sweep has something to find. The graph itself is not reproducible (pgvector draws each
node's level at random), so the assertions hold with wide margins rather than on exact figures."""

from __future__ import annotations

import itertools
import json
from urllib.parse import urlencode

import numpy as np
import psycopg
import pyarrow as pa
import pytest

import vecfmt
from vecfmt import transfer
from vecfmt.errors import StoreError, VecfmtError
from vecfmt.quality.tune import TuneError, _knobs, tune
from vecfmt.schema import vectors_array
from vecfmt.stores.base import KnobInfo, Tunable, open_exporter
from vecfmt.writer import DumpWriter

ROWS, DIM = 4000, 32


def pg(dsn: str, table: str = "items", **options: object) -> str:
    params = {"table": table, **options}
    return f"pgvector://{dsn.split('://', 1)[1]}?{urlencode({k: str(v) for k, v in params.items()})}"


def vectors(rows: int = ROWS, dim: int = DIM, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def load(tmp_path, dsn: str, matrix: np.ndarray, table: str = "items", **options: object) -> str:
    """Import ``matrix`` (ids r0, r1, ...) into ``table`` through vecfmt, with the index ``options`` ask."""
    rows = len(matrix)
    data = pa.table({"id": pa.array([f"r{i}" for i in range(rows)]), "values": vectors_array(matrix),
                     "metadata": pa.array([None] * rows, pa.string())})  # fmt: skip
    dump = str(tmp_path / f"dump-{table}")
    vecfmt.write_dump(dump, data, metric="cosine")
    transfer.import_dump(dump, pg(dsn, table, **options))
    return pg(dsn, table)


def indexes(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname NOT IN "
                            "('pg_catalog', 'information_schema') ORDER BY 1").fetchall()  # fmt: skip


@pytest.fixture
def hnsw(tmp_path, pg_db) -> str:
    return load(tmp_path, pg_db, vectors(), index="hnsw", m=4, ef_construction=16)


def test_tune_finds_the_smallest_ef_search_meeting_the_target(hnsw, tmp_path):
    plot = tmp_path / "tune.png"
    report = tune(hnsw, k=10, queries=100, target_recall=0.9, plot=str(plot))

    assert (report.knob, report.setting, report.k, report.queries, report.metric) == (
        "ef_search", "hnsw.ef_search", 10, 100, "cosine")  # fmt: skip
    values = [r.value for r in report.rows]
    recalls = [r.recall for r in report.rows]
    # The store's candidates above k (a search for k+1 rows needs ef_search > k).
    assert values == [20, 40, 80, 160, 320, 640, 1000]
    # Recall rises with ef_search: clearly from the smallest to the largest, and never falls by more than
    # a query's worth of noise on the way.
    assert recalls[0] < 0.8, recalls
    assert recalls[-1] >= 0.95, recalls
    assert all(b >= a - 0.02 for a, b in itertools.pairwise(recalls)), recalls
    assert all(0 <= r.recall_min <= r.recall <= 1 and 0 < r.p50_ms <= r.p95_ms for r in report.rows)
    # The recommendation: the smallest value meeting the target, and every smaller one misses it.
    assert report.recommended is not None
    chosen = values.index(report.recommended)
    assert recalls[chosen] >= 0.9 and all(r < 0.9 for r in recalls[:chosen]), (report.recommended, recalls)
    assert report.recommended > 20
    assert f"hnsw.ef_search = {report.recommended}" in report.message
    table = report.table()
    assert len(table) == len(values) and table[chosen][2] == f"{report.recommended} *"

    data = report.to_dict()
    json.dumps(data)  # --json
    assert data["recommended"] == report.recommended and len(data["rows"]) == len(values)
    assert data["message"] == report.message and data["plot"] == str(plot)
    assert "s3cret-pw" not in str(data)  # the URI's password is redacted

    head = plot.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(plot) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_no_value_meets_an_unreachable_target(hnsw):
    report = tune(hnsw, k=10, queries=30, target_recall=1.0, values=[11, 20])
    assert [r.value for r in report.rows] == [11, 20]
    assert report.recommended is None
    assert "no value of hnsw.ef_search reaches recall@10 1.0" in report.message


def test_the_search_goes_through_the_hnsw_index(tmp_path, pg_db):
    """With a knob set, the search must use the index it tunes. On a small table the planner prefers an
    exact scan (which would show recall 1 at every ef_search): a knob turns sequential scans off for the
    search's transaction, and only for it."""
    matrix = vectors(300)
    uri = load(tmp_path, pg_db, matrix, index="hnsw", m=4, ef_construction=16)
    exporter = open_exporter(uri)
    try:
        assert isinstance(exporter, Tunable)
        knobs = exporter.search_knobs()
        assert list(knobs) == ["ef_search"] and isinstance(knobs["ef_search"], KnobInfo)
        assert (knobs["ef_search"].low, knobs["ef_search"].high, knobs["ef_search"].default) == (1, 1000, 40)
        assert "Seq Scan" in exporter.explain_search(matrix[0], 10)  # the planner's own choice here
        plan = exporter.explain_search(matrix[0], 10, ef_search=20)
        assert "Index Scan using items_embedding_hnsw_idx" in plan and "Seq Scan" not in plan
        assert exporter.uses_index(matrix[0], 10, ef_search=20)
        hits = exporter.search(matrix[5], 3, ef_search=20)
        assert hits[0][0] == "r5" and len(hits) == 3
        conn = exporter._search_connection()  # the settings ended with the search's transaction
        assert conn.execute("SELECT current_setting('enable_seqscan')").fetchone()[0] == "on"
        for bad, message in [({"ef_search": 0}, "between 1 and 1000"), ({"ef_search": 1001}, "between 1 and 1000"),
                             ({"ef_search": "40; DROP TABLE items"}, "whole number"), ({"ef_search": True}, "whole"),
                             ({"probes": 3}, "no search setting 'probes'")]:  # fmt: skip
            with pytest.raises(StoreError, match=message):
                exporter.search(matrix[0], 3, **bad)
    finally:
        exporter.close()


def test_ivfflat_probes(tmp_path, pg_db):
    uri = load(tmp_path, pg_db, vectors(), index="ivfflat", lists=64)
    report = tune(uri, k=10, queries=60, values=[1, 4, 64], target_recall=0.9)
    assert (report.knob, report.setting) == ("probes", "ivfflat.probes")
    recalls = [r.recall for r in report.rows]
    # Random data spreads every query's neighbours over many lists (about 0.24 at 1 probe, 0.46 at 4);
    # probing all 64 lists is an exact search.
    assert recalls[0] < recalls[1] < 0.9 and recalls[2] == pytest.approx(1.0), recalls
    assert report.recommended == 64


def test_rebuild_compares_on_a_copy_and_leaves_nothing_behind(hnsw, pg_db):
    before = indexes(pg_db)
    report = tune(hnsw, k=10, queries=40, values=[20, 1000], rebuild=[(4, 16), (16, 64)], target_recall=0.9)
    assert [r.index for r in report.rows] == ["current index"] * 2 + ["m=4 ef_construction=16"] * 2 + \
        ["m=16 ef_construction=64"] * 2  # fmt: skip
    by_index = {(r.index, r.value): r.recall for r in report.rows}
    # A denser graph finds more at the same ef_search; the copy of the same build is in the same range.
    assert by_index[("m=16 ef_construction=64", 20)] > by_index[("m=4 ef_construction=16", 20)] + 0.1
    assert abs(by_index[("m=4 ef_construction=16", 20)] - by_index[("current index", 20)]) < 0.2
    assert set(report.trials) == {"m=4 ef_construction=16", "m=16 ef_construction=64"}
    assert report.trials["m=16 ef_construction=64"] in (20, 1000)
    # The table's indexes are as they were, and the copy went with its session.
    assert indexes(pg_db) == before
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'vecfmt_tune%'").fetchone()[0] == 0


def test_a_namespace_is_tuned_on_its_own_rows_and_one_the_index_does_not_serve_is_refused(tmp_path, pg_db):
    """Namespaces are a column (part of the primary key). A large one is searched through the HNSW index
    (filtered); a small one PostgreSQL reads through the primary key and sorts exactly, whatever ef_search
    says: tune refuses it rather than report perfect recall for every value."""
    matrix = vectors()

    def rows(part: np.ndarray, prefix: str) -> pa.Table:
        return pa.table({"id": pa.array([f"{prefix}{i}" for i in range(len(part))]), "values": vectors_array(part),
                         "metadata": pa.array([None] * len(part), pa.string())})  # fmt: skip

    dump = str(tmp_path / "namespaced")
    with DumpWriter(dump, metric="cosine") as writer:
        writer.write(rows(matrix[:3900], "b"), "big")
        writer.write(rows(matrix[3900:], "s"), "small")
    transfer.import_dump(dump, pg(pg_db, index="hnsw", m=4, ef_construction=16))
    uri = pg(pg_db)
    with pytest.raises(TuneError, match=r"has several namespaces \('big', 'small'\); pick one"):
        tune(uri)
    report = tune(uri, namespace="big", queries=50, values=[20, 80, 320, 1000], target_recall=0.9)
    assert report.namespace == "big" and report.queries == 50
    values, recalls = [r.value for r in report.rows], [r.recall for r in report.rows]
    # Filtered by namespace, PostgreSQL prices ef_search=1000 above reading 'big' through the primary key
    # and sorting it (on both servers here): that value measures no index, and is left out, saying so.
    assert values[:3] == [20, 80, 320]
    assert values == [20, 80, 320, 1000] or any("ef_search 1000 left out" in note for note in report.notes)
    assert recalls[0] < 0.8 and recalls[-1] >= 0.9, recalls
    with pytest.raises(TuneError, match="searches of namespace 'small' do not read the index ef_search tunes"):
        tune(uri, namespace="small", queries=20, values=[20, 1000])


def test_a_table_without_a_vector_index_has_nothing_to_tune(tmp_path, pg_db):
    uri = load(tmp_path, pg_db, vectors(200), index="none")
    with pytest.raises(TuneError, match="has no search-time knob to tune: its vector column has no index") as caught:
        tune(uri)
    assert "\n" not in str(caught.value) and "s3cret-pw" not in str(caught.value)


def test_lancedb_ivf_pq_nprobes_and_refine_factor(tmp_path):
    """LanceDB's IVF_PQ: probing every partition finds more than one, and re-ranking with exact distances
    undoes the loss of a coarse product quantisation (4 sub-vectors of 32 dimensions)."""
    data = pa.table({"id": pa.array([f"r{i}" for i in range(ROWS)]), "values": vectors_array(vectors()),
                     "metadata": pa.array([None] * ROWS, pa.string())})  # fmt: skip
    vecfmt.write_dump(str(tmp_path / "d"), data, metric="cosine")
    lance = f"lancedb://{tmp_path}/lance?table=items"
    transfer.import_dump(str(tmp_path / "d"), f"{lance}&index=ivf_pq&num_partitions=16&num_sub_vectors=4")
    probes = tune(lance, knob="nprobes", values=[1, 16], queries=50, target_recall=0.5)
    assert (probes.setting, [r.value for r in probes.rows]) == ("nprobes", [1, 16])
    assert probes.rows[0].recall < probes.rows[1].recall, probes.rows
    refined = tune(lance, knob="refine_factor", values=[1, 50], queries=50, target_recall=0.9)
    assert refined.rows[0].recall < 0.8 and refined.rows[1].recall > refined.rows[0].recall + 0.1, refined.rows
    exporter = open_exporter(lance)
    try:
        assert set(exporter.search_knobs()) == {"nprobes", "refine_factor"}
        with pytest.raises(StoreError, match="no search setting 'ef'"):
            exporter.search(vectors(1)[0], 3, ef=40)
        with pytest.raises(StoreError, match="between 1 and 65536"):
            exporter.search(vectors(1)[0], 3, nprobes=0)
    finally:
        exporter.close()


def test_a_store_without_a_knob_is_told_so(tmp_path):
    """LanceDB without a vector index searches exactly: nothing to set. A store module without knobs
    at all (no ``search_knobs``) and one that cannot search are told so too."""
    data = pa.table({"id": pa.array(["a", "b"]), "values": vectors_array(vectors(2, 4)),
                     "metadata": pa.array([None, None], pa.string())})  # fmt: skip
    vecfmt.write_dump(str(tmp_path / "d"), data)
    lance = f"lancedb://{tmp_path}/lance?table=items"
    transfer.import_dump(str(tmp_path / "d"), lance)
    with pytest.raises(TuneError) as caught:
        tune(lance)
    assert str(caught.value) == (f"{lance} has no search-time knob to tune: its vector column has no index that "
                                 "takes one (for its metric), so its searches are exact")  # fmt: skip

    class Plain:
        def search(self, vector, k, *, namespace=""):
            return []

    with pytest.raises(TuneError, match=r"^lancedb://x: this store has no search-time knob to tune$"):
        _knobs(Plain(), "lancedb://x")
    with pytest.raises(TuneError, match=r"^lancedb://x: this store cannot search, so there is nothing to tune$"):
        _knobs(object(), "lancedb://x")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0}, "k must be a whole number between 1 and 1000, not 0"),
    ({"queries": 0}, "queries must be"),
    ({"target_recall": 1.5}, "target recall"),
    ({"values": []}, "values must be"),
    ({"rebuild": [(16,)]}, "pair of whole numbers"),
    ({"plot": "/nonexistent-folder/x.png"}, "does not exist"),
])  # fmt: skip
def test_bad_arguments_are_one_clear_error_before_any_work(kwargs, message):
    # Refused before connecting: the URI points nowhere.
    with pytest.raises(TuneError, match=message) as caught:
        tune("pgvector://nobody@127.0.0.1:1/none?table=items", **kwargs)
    assert "\n" not in str(caught.value)


def test_bad_knob_values_and_rebuilds_are_one_clear_error(hnsw):
    with pytest.raises(TuneError, match=r"has no search-time knob 'nprobes' \(it has: ef_search\)"):
        tune(hnsw, knob="nprobes")
    with pytest.raises(TuneError, match=r"hnsw\.ef_search must be between 1 and 1000, not 5000"):
        tune(hnsw, values=[40, 5000])
    with pytest.raises(VecfmtError, match="ef_construction must be at least twice m"):
        tune(hnsw, queries=5, values=[40], rebuild=[(32, 40)])
    with pytest.raises(TuneError, match="has no namespace 'other'"):
        tune(hnsw, namespace="other")
