"""``vecfmt verify``: each defect a migration can leave is caught, a clean migration passes, against dumps,
LanceDB and real PostgreSQL + pgvector; and the exact ground truth is exact."""

from __future__ import annotations

import json

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli, write_raw_dump
from tests.stores.test_pgvector import pg
from vecfmt import transfer
from vecfmt.errors import InvalidDataError
from vecfmt.quality import groundtruth
from vecfmt.quality.groundtruth import exact_top_k, recall_at_k
from vecfmt.quality.verify import row_digests, verify
from vecfmt.schema import vectors_array

ROWS, DIM = 3_000, 16


def lance(tmp_path, table="items"):
    return f"lancedb://{tmp_path}/db?table={table}"


@pytest.fixture
def source(tmp_path) -> tuple[str, pa.Table]:
    """A dump whose vectors vary in length (so cosine and euclidean rank differently), with documents."""
    table = make_table(ROWS, DIM, document=True)
    scale = np.random.default_rng(1).uniform(0.2, 5.0, ROWS).astype(np.float32)
    vectors = table.column("values").combine_chunks().values.to_numpy().reshape(ROWS, DIM) * scale[:, None]
    table = table.set_column(1, "values", vectors_array(vectors))
    vecfmt.write_dump(str(tmp_path / "src"), table)
    return str(tmp_path / "src"), table


def _with(table: pa.Table, column: str, values: list | pa.Array) -> pa.Table:
    array = values if isinstance(values, pa.Array) else pa.array(values, table.schema.field(column).type)
    return table.set_column(table.schema.get_field_index(column), column, array)


def _target(tmp_path, table: pa.Table, **kwargs) -> str:
    uri = str(tmp_path / "dst")
    write_raw_dump(uri, {"": table}, **kwargs)
    return uri


def test_a_clean_migration_into_lancedb_passes(tmp_path, source):
    src, _ = source
    transfer.import_dump(src, lance(tmp_path))
    run = vecfmt_cli("verify", src, lance(tmp_path), "--json", "--min-recall", "0.99", "--min-overlap", "0.99")
    assert run.code == 0, run
    report = json.loads(run.stdout)
    assert report["passed"] and report["problems"] == []
    ns = report["namespaces"][""]
    assert (ns["rows_source"], ns["rows_target"], ns["compared"]) == (ROWS, ROWS, 2_000)
    assert report["search"]["queries"] == 100 and report["search"]["recall_target"] == 1.0
    assert report["search"]["overlap"] == 1.0 and report["search"]["identical"] == 1.0
    assert report["search"]["overlap_per_query"] == report["search"]["recall_target_per_query"] == [1.0] * 100


def test_each_querys_figures_make_up_the_aggregates(tmp_path):
    """Queries in two namespaces, the target's vectors moved by noise in the second: the JSON holds each
    query's overlap and recall of the target, in the order of the queries, equal to a brute-force search
    of both sides; their mean and minimum are the aggregates, and the aggregates' keys are unchanged."""
    a, b = make_table(500, DIM, prefix="a-"), make_table(800, DIM, prefix="b-", seed=2)
    b_vectors = b.column("values").combine_chunks().values.to_numpy().reshape(800, DIM)
    moved = b_vectors + np.random.default_rng(3).standard_normal(b_vectors.shape).astype(np.float32) * 0.3
    write_raw_dump(str(tmp_path / "src"), {"a": a, "b": b})
    write_raw_dump(str(tmp_path / "dst"), {"a": a, "b": _with(b, "values", vectors_array(moved))})
    queries = np.random.default_rng(4).standard_normal((30, DIM)).astype(np.float32)
    pq.write_table(pa.table({"values": vectors_array(queries), "namespace": ["a"] * 12 + ["b"] * 18}),
                   tmp_path / "q.parquet")
    run = vecfmt_cli("verify", str(tmp_path / "src"), str(tmp_path / "dst"), "--json",
                     "--queries-file", str(tmp_path / "q.parquet"))
    assert run.code == 1 and "800 vectors differ" in run.stdout, run  # every row of b compared: all moved
    search = json.loads(run.stdout)["search"]
    assert set(search) == {"k", "queries", "metric", "overlap", "identical", "recall_source", "recall_target",
                           "worst_overlap", "worst_recall_target", "overlap_per_query", "recall_target_per_query"}
    overlaps, recalls = search["overlap_per_query"], search["recall_target_per_query"]
    assert len(overlaps) == len(recalls) == search["queries"] == 30

    def top10(vectors: np.ndarray, query: np.ndarray) -> set[int]:  # exact cosine search
        scores = vectors @ query / np.linalg.norm(vectors, axis=1)
        return set(np.argsort(-scores)[:10].tolist())

    # both sides are dumps, searched exactly: a query's overlap and its target recall are the same share
    expected = [1.0] * 12 + [len(top10(b_vectors, q) & top10(moved, q)) / 10 for q in queries[12:]]
    assert overlaps == pytest.approx(expected) and recalls == pytest.approx(expected)
    assert min(expected) < 0.8 < max(expected)  # the figures do vary from query to query
    assert np.mean(overlaps) == pytest.approx(search["overlap"]) and min(overlaps) == search["worst_overlap"]
    assert np.mean(recalls) == pytest.approx(search["recall_target"]) and min(recalls) == search["worst_recall_target"]


def test_a_dropped_row_is_missing(tmp_path, source):
    src, table = source
    dropped = table.filter(pa.compute.not_equal(table.column("id"), "id-1234"))
    report = verify(src, _target(tmp_path, dropped), queries=0)
    ns = report.namespaces[""]
    assert (ns.rows_target, ns.missing, ns.extra) == (ROWS - 1, 1, 0)
    assert ns.examples["missing"] == ["id-1234"] and not report.passed
    assert "1 missing (e.g. 'id-1234')" in report.problems[0]


def test_a_duplicated_row_is_found_in_a_store(tmp_path, source):
    src, table = source
    transfer.import_dump(src, lance(tmp_path))
    vecfmt.write_dump(str(tmp_path / "one"), table.slice(7, 1))
    transfer.import_dump(str(tmp_path / "one"), lance(tmp_path), if_exists="append")
    report = verify(src, lance(tmp_path), queries=0)
    ns = report.namespaces[""]
    assert (ns.rows_target, ns.duplicates_target, ns.missing, ns.extra) == (ROWS + 1, 1, 0, 0)
    assert ns.examples["duplicated_in_target"] == ["id-7"]
    run = vecfmt_cli("verify", src, lance(tmp_path), "--queries", "0")
    assert run.code == 1 and "duplicated in target" in run.stderr and "id-7" in run.stderr


def test_a_vector_moved_by_one_ulp_differs_and_zero_signs_count(tmp_path, source):
    _, table = source
    base = table.column("values").combine_chunks().values.to_numpy().reshape(ROWS, DIM).copy()
    base[17, 0] = -0.0
    vectors = base.copy()
    vectors[2500, 3] = np.nextafter(vectors[2500, 3], np.float32(np.inf))
    vectors[17, 0] = 0.0
    changed = _with(table, "values", vectors_array(vectors))
    vecfmt.write_dump(str(tmp_path / "src0"), _with(table, "values", vectors_array(base)))
    report = verify(str(tmp_path / "src0"), _target(tmp_path, changed), full=True, queries=0)
    ns = report.namespaces[""]
    assert ns.compared == ROWS and ns.vectors_differ == 2
    assert sorted(ns.examples["vectors_differ"]) == ["id-17", "id-2500"]
    assert ns.metadata_differ == ns.documents_differ == 0


def test_a_changed_metadata_value_differs_but_key_order_does_not(tmp_path, source):
    src, table = source
    metadata = table.column("metadata").to_pylist()
    metadata[5] = json.dumps(json.loads(metadata[5]) | {"i": 6})  # a value changed
    # the same JSON value spelled otherwise (key order, spacing): as PostgreSQL's jsonb gives it back
    metadata[8] = json.dumps(dict(reversed(list(json.loads(metadata[8]).items()))), indent=1)
    metadata[9] = json.dumps(json.loads(metadata[9]) | {"i": "9"})  # a number became a string
    metadata[12] = json.dumps(json.loads(metadata[12]) | {"i": 12.0})  # JSON has one number type: 12 is 12.0
    documents = table.column("document").to_pylist()
    documents[11] = documents[11] + " "
    report = verify(src, _target(tmp_path, _with(_with(table, "metadata", metadata), "document", documents)),
                    full=True, queries=0)
    ns = report.namespaces[""]
    assert sorted(ns.examples["metadata_differ"]) == ["id-5", "id-9"] and ns.metadata_differ == 2
    assert ns.examples["documents_differ"] == ["id-11"] and ns.vectors_differ == 0


def test_a_wrong_metric_on_the_target_is_caught_by_its_search(tmp_path, source):
    src, table = source
    write_raw_dump(str(tmp_path / "l2"), {"": table}, metric="euclidean")
    transfer.import_dump(str(tmp_path / "l2"), lance(tmp_path))  # an index built for the wrong metric
    report = verify(src, lance(tmp_path), min_recall=0.95)
    assert any("metric is cosine, the target's euclidean" in p for p in report.problems)
    assert report.search is not None and report.search.recall_source == 1.0
    assert report.search.recall_target < 0.8 and report.search.overlap < 0.8
    assert any("recall@10 of the target" in p for p in report.problems)
    assert report.namespaces[""].complete  # the rows themselves are all there


def test_a_truncated_namespace_is_caught(tmp_path):
    a, b = make_table(400, 8, prefix="a-"), make_table(600, 8, prefix="b-", seed=2)
    write_raw_dump(str(tmp_path / "src"), {"a": a, "b": b})
    write_raw_dump(str(tmp_path / "dst"), {"a": a, "b": b.slice(0, 450)})
    report = verify(str(tmp_path / "src"), str(tmp_path / "dst"), queries=20)
    assert report.namespaces["a"].complete
    nb = report.namespaces["b"]
    assert (nb.rows_source, nb.rows_target, nb.missing) == (600, 450, 150)
    assert len(report.problems) == 1 and "namespace 'b': 600 rows in the source, 450" in report.problems[0]


def test_a_namespace_only_in_the_target_is_reported(tmp_path):
    a = make_table(50, 8, prefix="a-")
    write_raw_dump(str(tmp_path / "src"), {"a": a})
    write_raw_dump(str(tmp_path / "dst"), {"a": a, "z": make_table(5, 8, prefix="z-")})
    report = verify(str(tmp_path / "src"), str(tmp_path / "dst"), queries=0)
    assert "namespaces the source lacks: ['z']" in report.problems[0]
    assert report.namespaces["z"].extra == 5


def test_the_sample_is_bounded_and_seeded(tmp_path, source):
    src, _ = source
    transfer.import_dump(src, lance(tmp_path))
    one = verify(src, lance(tmp_path), sample=25, queries=5, seed=3)
    assert one.namespaces[""].compared == 25 and one.search is not None and one.search.queries == 5
    assert one.passed


def test_pgvector_and_lancedb_agree_after_a_migration(tmp_path, source, pg_db):
    """dump -> pgvector (HNSW index) -> LanceDB: all three verify against each other, both ways."""
    src, _ = source
    transfer.import_dump(src, pg(pg_db))
    transfer.copy(pg(pg_db), lance(tmp_path))
    for a, b in ((src, pg(pg_db)), (pg(pg_db), lance(tmp_path)), (lance(tmp_path), src)):
        report = verify(a, b, full=True, queries=50, k=10)
        assert report.passed, report.problems
        assert report.namespaces[""].compared == ROWS
        assert report.search is not None and report.search.recall_target >= 0.9
    # the password of the DSN never shows
    run = vecfmt_cli("verify", pg(pg_db), lance(tmp_path), "--json", "--queries", "10")
    assert run.code == 0 and "s3cret-pw" not in run.stdout + run.stderr


def test_a_row_lost_in_pgvector_is_caught(tmp_path, source, pg_db):
    import psycopg

    src, _ = source
    transfer.import_dump(src, pg(pg_db))
    with psycopg.connect(pg_db) as conn:
        conn.execute("DELETE FROM items WHERE id = 'id-42'")
    run = vecfmt_cli("verify", src, pg(pg_db), "--queries", "0")
    assert run.code == 1 and "1 missing (e.g. 'id-42')" in run.stderr and "s3cret-pw" not in run.stderr


def test_queries_from_a_parquet_file(tmp_path, source):
    src, _ = source
    transfer.import_dump(src, lance(tmp_path))
    queries = np.random.default_rng(9).standard_normal((12, DIM)).astype(np.float32)
    pq.write_table(pa.table({"values": vectors_array(queries)}), tmp_path / "q.parquet")
    report = verify(src, lance(tmp_path), queries_file=str(tmp_path / "q.parquet"))
    assert report.search is not None and report.search.queries == 12 and report.search.recall_target == 1.0
    pq.write_table(pa.table({"text": ["hello"]}), tmp_path / "t.parquet")
    with pytest.raises(InvalidDataError, match="records no embedding model"):
        verify(src, lance(tmp_path), queries_file=str(tmp_path / "t.parquet"))


def test_bad_input_is_one_clear_line(tmp_path, source):
    src, _ = source
    assert_one_clear_error(vecfmt_cli("verify", src, str(tmp_path / "nothing")), "does not exist")
    assert_one_clear_error(vecfmt_cli("verify", src, src, "--namespace", "nope"), "no namespace 'nope'")
    assert_one_clear_error(vecfmt_cli("verify", src, lance(tmp_path, "absent")), "does not exist")
    other = make_table(10, 4)
    vecfmt.write_dump(str(tmp_path / "d4"), other)
    run = vecfmt_cli("verify", src, str(tmp_path / "d4"))
    assert run.code == 1 and "16 dimensions in the source and 4 in the target" in run.stderr


# --- the ground truth itself ----------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_exact_top_k_is_brute_force_across_chunk_boundaries(metric, monkeypatch):
    rng = np.random.default_rng(4)
    data = rng.standard_normal((5_003, 24)).astype(np.float32)
    data[100] = 0.0  # a zero vector (cosine: score 0)
    queries = np.vstack([rng.standard_normal((30, 24)).astype(np.float32), data[[7, 4_999]]])
    ids = [f"r{i}" for i in range(len(data))]
    monkeypatch.setattr(groundtruth, "SCORE_BYTES", 4 * len(queries) * 700)  # blocks of 700 rows
    chunks = [(ids[i:i + 1_100], data[i:i + 1_100]) for i in range(0, len(data), 1_100)]
    got = exact_top_k(chunks, queries, 10, metric)
    if metric == "cosine":
        scores = groundtruth.normalized(queries) @ groundtruth.normalized(data).T
    elif metric == "dot":
        scores = queries @ data.T
    else:
        scores = -np.sqrt(((queries[:, None, :] - data[None, :, :]) ** 2).sum(axis=2))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert got.ids == [[f"r{j}" for j in row] for row in order]
    # a euclidean score is sqrt(|q|^2 - (2 q.x - |x|^2)): near 0 the float32 rounding of the difference shows
    np.testing.assert_allclose(got.scores, np.take_along_axis(scores, order, axis=1), rtol=1e-4,
                               atol=1e-2 if metric == "euclidean" else 1e-4)
    if metric != "dot":  # a vector's nearest neighbour is itself
        assert got.ids[30][0] == "r7" and got.ids[31][0] == "r4999"


def test_exact_top_k_with_ties_fewer_rows_than_k_and_bad_input():
    data = np.ones((3, 4), np.float32)
    got = exact_top_k([(["a", "b"], data[:2]), (["c"], data[2:])], np.ones((1, 4), np.float32), 5, "dot")
    assert got.ids == [["a", "b", "c", "", ""]]  # ties keep the order rows were seen in
    assert np.isneginf(got.scores[0, 3:]).all()
    assert recall_at_k([["a", "c", "b"]], got, 5).tolist() == [1.0]
    assert recall_at_k([["a", "x"]], got, 5).tolist() == [pytest.approx(1 / 3)]
    with pytest.raises(InvalidDataError, match="not 'manhattan'"):
        exact_top_k([], np.ones((1, 4), np.float32), 1, "manhattan")
    with pytest.raises(InvalidDataError, match="4 dimensions against queries of 3"):
        exact_top_k([(["a"], np.ones((1, 4), np.float32))], np.ones((1, 3), np.float32), 1, "dot")


def test_a_null_named_vector_counts_as_null_whatever_lies_under_it():
    """A store's exporter may leave any bits under a null vector slot (Arrow does not define them)."""
    mask = pa.array([False, True, False])
    zeros = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6, np.float32)), 2, mask=mask)
    sevens = pa.FixedSizeListArray.from_arrays(pa.array(np.array([0, 0, 7, 7, 0, 0], np.float32)), 2, mask=mask)
    unmasked = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6, np.float32)), 2)
    ids = pa.array(["a", "b", "c"])
    digests = [row_digests(pa.RecordBatch.from_arrays([ids, column], names=["id", "values_img"]))[:, 0]
               for column in (zeros, sevens, unmasked)]
    assert (digests[0] == digests[1]).all()
    assert list(digests[0] != digests[2]) == [False, True, False]


# --- what a hostile review found ---------------------------------------------------------------------


def test_a_dump_target_is_searched_over_its_own_rows(tmp_path, source):
    src, table = source
    scrambled = np.random.default_rng(5).standard_normal((ROWS, DIM)).astype(np.float32)
    report = verify(src, _target(tmp_path, _with(table, "values", vectors_array(scrambled))), sample=0,
                    queries=20, min_recall=0.99)
    assert report.search is not None and report.search.recall_source == 1.0
    assert report.search.recall_target < 0.2 and any("recall@10 of the target" in p for p in report.problems)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_repeated_vectors_are_equally_right_answers(tmp_path, metric):
    """100 distinct vectors, each 20 times: an exact store that breaks ties its own way is still exact."""
    base = np.random.default_rng(2).standard_normal((100, 8)).astype(np.float32)
    table = make_table(2_000, 8)
    table = table.set_column(1, "values", vectors_array(np.repeat(base, 20, axis=0)))
    vecfmt.write_dump(str(tmp_path / "d"), table, metric=metric)
    transfer.import_dump(str(tmp_path / "d"), lance(tmp_path))  # 2,000 rows: no index, an exact scan
    report = verify(str(tmp_path / "d"), lance(tmp_path), k=3, queries=50, min_recall=1.0)
    assert report.passed, report.problems
    assert report.search is not None and report.search.recall_target == 1.0


def test_thresholds_without_a_search_fail(tmp_path, source):
    src, _ = source
    report = verify(src, src, queries=0, min_recall=0.9)
    assert report.problems == ["min_recall 0.9 was asked, but search quality was not measured"]


def test_a_row_the_format_refuses_in_a_target_store_is_a_finding(tmp_path, source):
    src, table = source
    broken = _with(table, "metadata", ["{not json", *table.column("metadata").to_pylist()[1:]])
    lancedb.connect(str(tmp_path / "db")).create_table("items", broken.rename_columns(
        ["id", "vector", *broken.column_names[2:]]))
    run = vecfmt_cli("verify", src, lance(tmp_path), "--queries", "0")
    assert run.code == 1 and "the target holds a row the format refuses" in run.stderr, run


def test_k_beyond_the_rows_and_bad_query_files(tmp_path, source):
    src, _ = source
    report = verify(src, src, k=300_000_000, queries=2)  # k is capped at the rows: nothing huge allocated
    assert report.passed and report.search is not None and report.search.recall_target == 1.0
    for name, values, message in (
        ("nan", [[float("nan")] * DIM], "query in row 0 is not finite"),
        ("ragged", [[0.0] * DIM, [0.0] * 3], "ragged vectors"),
        ("null", [[0.0] * DIM, None], "is null"),
    ):
        column = pa.array(values, pa.large_list(pa.float32()))
        pq.write_table(pa.table({"values": column}), tmp_path / f"{name}.parquet")
        assert_one_clear_error(vecfmt_cli("verify", src, src, "--queries-file", str(tmp_path / f"{name}.parquet")),
                               message)


def test_jsonb_number_spellings_are_the_same_values(tmp_path, pg_db):
    table = make_table(4, 4)
    meta = [{"big": 1e20}, {"hundred": 1e2}, {"zero": -0.0}, {"nested": {"b": [1.50, 2], "a": 1}}]
    table = _with(table, "metadata", [json.dumps(m) for m in meta])
    vecfmt.write_dump(str(tmp_path / "d"), table)
    transfer.import_dump(str(tmp_path / "d"), pg(pg_db))
    report = verify(str(tmp_path / "d"), pg(pg_db), full=True, queries=2)
    assert report.passed, report.problems


def test_text_queries_are_embedded_with_the_sources_model(tmp_path):
    """--queries-file with texts only: embedded with the model the source records (the local MiniLM)."""
    from vecfmt.embed import open_embedder

    texts = [f"{topic} note {i}" for i, topic in enumerate(["rivers and lakes", "compilers", "baking bread",
                                                              "orbital mechanics", "medieval poetry"] * 8)]
    embedder = open_embedder("all-MiniLM-L6-v2")
    vectors = np.asarray(embedder.embed(texts), np.float32)
    table = make_table(len(texts), vectors.shape[1]).set_column(1, "values", vectors_array(vectors))
    vecfmt.write_dump(str(tmp_path / "d"), table, model=vecfmt.EmbeddingModel("all-MiniLM-L6-v2"))
    transfer.import_dump(str(tmp_path / "d"), lance(tmp_path))
    pq.write_table(pa.table({"text": ["baking bread note 2", "compilers note 1"]}), tmp_path / "q.parquet")
    report = verify(str(tmp_path / "d"), lance(tmp_path), queries_file=str(tmp_path / "q.parquet"), k=3)
    assert report.passed, report.problems
    assert report.search is not None and report.search.queries == 2 and report.search.recall_target == 1.0
