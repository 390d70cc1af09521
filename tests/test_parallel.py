"""Partitioned export (vecfmt.parallel) from pgvector on both PostgreSQL servers: 40,000 rows of 768 dimensions
split into ctid page ranges, two worker processes, a job killed mid-run and resumed, a worker killed and
replaced, duplicate ids across partitions, failures that name their partition, re-runs.

Partitioned import on local workers: a dump of ten files loaded by two worker processes, a job killed mid-run
and resumed with only the files missing, a replace, a corrupt file, a store that takes one writer. The Ray
engine: tests/test_ray.py."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

import vecfmt
from tests.helpers import Run, assert_one_clear_error, make_table, vecfmt_cli, write_namespaced
from tests.servers.postgres import PgServer
from tests.stores.test_pgvector import PASSWORD, assert_same_rows, pg, run_sql
from vecfmt import transfer
from vecfmt.errors import DumpError, InvalidDataError, StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.ops.validate import validate_dump
from vecfmt.parallel import JOB_STATE, default_workers, export_partitioned, import_partitioned
from vecfmt.parallel.engines import Engine, retryable, run_tasks
from vecfmt.parallel.export import BYTES_PER_WORKER
from vecfmt.stores.base import open_exporter
from vecfmt.stores.pgvector.files import FILES_TABLE
from vecfmt.transfer import interrupted_job

ROWS, DIM = 40_000, 768
PARTITIONS = 4  # 40,000 rows: one slice per 10,000 (SLICE_ROWS)


@pytest.fixture(scope="module")
def source(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A database holding ``items`` (ROWS x DIM, no vector index) and a single-process export of it: (dsn, dump)."""
    name = f"vecfmt_par_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_server.dsn_for(name)
    root = tmp_path_factory.mktemp("parallel")
    table = make_table(ROWS, DIM)
    vecfmt.write_dump(str(root / "table"), table)
    transfer.import_dump(str(root / "table"), pg(dsn, index="none"))
    transfer.export(pg(dsn), str(root / "single"))  # iterates the slices in order, in one process
    assert_same_rows(vecfmt.open_dump(str(root / "single")).table(""), table)
    try:
        yield dsn, str(root / "single")
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def assert_exact(dump: str, single: str) -> None:
    assert validate_dump(dump) == []
    diff = diff_dumps(single, dump)
    assert diff.identical, diff.to_dict()["totals"]
    assert not os.path.exists(os.path.join(dump, JOB_STATE))


def job_state(dump: str) -> dict | None:
    try:
        return json.loads(Path(dump, JOB_STATE).read_text())
    except (FileNotFoundError, ValueError):  # not written yet (it is replaced whole, never half)
        return None


def start_job(source_uri: str, dump: str, *, workers: int = 2, retries: int = 2, before: str = "") -> subprocess.Popen:
    """The job in its own process group, so that the test can kill it with its workers (``before``: Python to
    run first)."""
    script = f"{before}\nfrom vecfmt.parallel import export_partitioned; export_partitioned({source_uri!r}, " \
             f"{dump!r}, workers={workers}, batch_size=2000, retries={retries})"  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stderr=subprocess.PIPE, text=True)


def wait_for_partitions_done(proc: subprocess.Popen, dump: str, seconds: float = 180) -> dict:
    """Poll the job state until at least one partition is done (and the job still runs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = job_state(dump)
        if state and state["done"]:
            return state
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.005)
    raise AssertionError("no partition finished in time")


def workers_of(pid: int) -> list[int]:
    """The job's worker processes: its children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


# --- slices -------------------------------------------------------------------------------------------


def test_slices_are_ctid_page_ranges_read_by_tid_range_scans(source):
    dsn, _ = source
    exporter = open_exporter(pg(dsn))
    try:
        exporter.describe()
        parts = exporter.slices("")
        assert len(parts) == PARTITIONS
        pages = [part.key["pages"] for part in parts]
        assert pages[0][0] == 0 and pages[-1][1] is None  # from the first page, open at the end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pages))  # contiguous, no gap
        with psycopg.connect(dsn) as conn:
            plan = "\n".join(row[0] for row in conn.execute(
                sql.SQL("EXPLAIN {}").format(exporter.select_sql("", pages[1]))).fetchall())  # fmt: skip
        assert "Tid Range Scan" in plan, plan  # only its pages are read (PostgreSQL 14+), never OFFSET
        ids = [exporter.batches(part, batch_size=5000) for part in parts]
        seen = [[i for chunk in chunks for i in chunk.batch.column("id").to_pylist()] for chunks in ids]
    finally:
        exporter.close()
    assert sum(len(s) for s in seen) == ROWS and len(set().union(*map(set, seen))) == ROWS
    assert all(len(s) > ROWS // (2 * PARTITIONS) for s in seen)  # about even


def test_a_namespace_is_split_over_the_pages_its_rows_are_on(pg_db, tmp_path, monkeypatch):
    """Two namespaces loaded one after the other: describe() counts them without reading the table's pages
    (the first and last page of each are looked up only when one is split), and each namespace's slices split
    its own pages, together reading exactly its rows."""
    monkeypatch.setattr("vecfmt.stores.base.SLICE_ROWS", 1_000)
    dump = str(tmp_path / "two")
    write_namespaced(dump, {"first": make_table(4_000, 16, prefix="f-"), "second": make_table(4_000, 16, prefix="s-")})
    transfer.import_dump(dump, pg(pg_db, index="none"))
    exporter = open_exporter(pg(pg_db))
    try:
        assert exporter.describe().namespaces == {"first": 4_000, "second": 4_000}
        assert exporter._spans is None  # counting read no page
        for namespace, prefix in (("first", "f-"), ("second", "s-")):
            first, last = run_sql(pg_db, sql.SQL(
                "SELECT min((ctid::text::point)[0])::int, max((ctid::text::point)[0])::int FROM items "
                "WHERE namespace = {}").format(sql.Literal(namespace)))[0]  # fmt: skip
            parts = exporter.slices(namespace)
            assert len(parts) == 4
            inner = [part.key["pages"][0] for part in parts[1:]]
            assert all(first < bound <= last for bound in inner), (first, last, inner)
            seen = [i for part in parts for chunk in exporter.batches(part, batch_size=1_000)
                    for i in chunk.batch.column("id").to_pylist()]
            assert sorted(seen) == sorted(f"{prefix}{i}" for i in range(4_000))
    finally:
        exporter.close()


def test_a_query_source_is_one_slice(source):
    dsn, _ = source
    exporter = open_exporter(pg(dsn, table=None, query="SELECT * FROM items"))
    try:
        exporter.describe()
        assert [part.key for part in exporter.slices("")] == [None]
    finally:
        exporter.close()


def test_default_workers():
    cores = os.cpu_count() or 1
    assert default_workers(partitions=3, namespaces=3) == 1  # one slice per namespace: nothing to split
    assert default_workers(partitions=4, namespaces=1) == min(cores, 4)  # size unknown: as many as the cores
    assert default_workers(partitions=100, namespaces=1) == min(cores, 8)
    # A small job runs in this process (at 100k x 768, ~300 MB, two workers were 0.23-0.43x of one process).
    assert default_workers(partitions=10, namespaces=1, planned_bytes=100_000 * (768 * 4 + 68)) == 1
    assert default_workers(partitions=64, namespaces=1, planned_bytes=2 * BYTES_PER_WORKER) == min(cores, 2)
    assert default_workers(partitions=64, namespaces=1, planned_bytes=100 * BYTES_PER_WORKER) == min(cores, 8)


# --- the engine: a dead worker, what is retried ------------------------------------------------------


@dataclass(frozen=True)
class Sleeper:
    """A partition of ``run_slowly``: sleeps; one marked ``kill`` SIGKILLs its worker on its first attempt."""

    index: int
    marker: str
    kill: bool = False

    def describe(self) -> str:
        return f"partition {self.index + 1}"


def run_slowly(task: Sleeper) -> int:
    if task.kill and not os.path.exists(task.marker):
        Path(task.marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    return task.index


def test_a_dead_worker_charges_only_the_partitions_that_were_running(tmp_path, caplog):
    """Two workers die, one after the other, with retries=1: each time only the two partitions running in the
    pool are charged an attempt (and logged), not the ten still queued in it, so the job completes. (Charged
    every queued partition, as before, the second death exhausted the retries of partitions that never ran.)"""
    tasks = [Sleeper(i, str(tmp_path / f"killed-{i}"), kill=i in (1, 8)) for i in range(12)]
    reports: list[int] = []
    with caplog.at_level(logging.WARNING, logger="vecfmt.parallel"):
        failure = run_tasks(Engine(), tasks, run_slowly, lambda: None, reports.append, workers=2, retries=1)
    assert failure is None
    assert sorted(reports) == list(range(12))  # each once
    retried = [r.getMessage() for r in caplog.records if "running it again" in r.getMessage()]
    assert 2 <= len(retried) <= 4, retried  # the killed ones, and at most one partner each
    assert all("its worker process died" in line for line in retried)


def test_what_a_retry_may_cure():
    """Lost connections, timeouts and storage errors may pass; a store's refusal, a corrupt dump and bad rows
    do not (told by the driver error a StoreError was raised from, as the stores raise them)."""
    def raised(error: type[Exception], cause: BaseException | None) -> BaseException:
        try:
            try:
                if cause is not None:
                    raise cause
                raise error("pgvector: cannot load part-00000.parquet: something")
            except Exception:
                raise error("pgvector: cannot load part-00000.parquet: something") from None
        except Exception as exc:
            return exc

    assert retryable(raised(StoreError, psycopg.errors.AdminShutdown("terminating connection")))
    assert retryable(raised(StoreError, psycopg.OperationalError("server closed the connection unexpectedly")))
    assert retryable(raised(StoreError, psycopg.errors.LockNotAvailable("lock timeout")))
    assert retryable(raised(DumpError, OSError("When reading information for key 'dump/manifest.json': timeout")))
    assert retryable(OSError("AWS Error NETWORK_CONNECTION during GetObject operation"))
    assert not retryable(raised(StoreError, psycopg.errors.UniqueViolation("duplicate key value")))
    assert not retryable(raised(StoreError, psycopg.errors.DataError("expected 64 dimensions, not 32")))
    assert not retryable(raised(StoreError, None))  # refused by vecfmt or the store itself
    assert not retryable(raised(DumpError, None))  # "is corrupt: its SHA-256 differs from the manifest's"
    assert not retryable(raised(InvalidDataError, OSError("no")))  # bad rows, whatever the chain
    assert not retryable(ValueError("a bug"))


# --- partitioned export ------------------------------------------------------------------------------


def test_two_workers_write_an_exact_dump(source, tmp_path):
    dsn, single = source
    dump = str(tmp_path / "two")
    manifest = export_partitioned(pg(dsn), dump, workers=2, batch_size=2000)
    assert manifest.total_rows == ROWS
    assert_exact(dump, single)
    prefixes = {Path(f.path).name[:6] for f in manifest.files}
    assert prefixes == {f"p{i:05d}" for i in range(PARTITIONS)}  # every partition wrote its own files


def test_namespaces_split_on_their_own_and_a_chosen_few_export_alone(source, tmp_path):
    """Two namespaces of 20,000 rows in one table (a namespace column): two slices each, four partitions."""
    dsn, _ = source
    tables = {"a": make_table(20_000, 32, prefix="a-"), "b": make_table(20_000, 32, seed=1, prefix="b-")}
    write_namespaced(str(tmp_path / "src"), tables)
    uri = pg(dsn, table="spaces")
    transfer.import_dump(str(tmp_path / "src"), pg(dsn, table="spaces", index="none"))
    transfer.export(uri, str(tmp_path / "single"))
    manifest = export_partitioned(uri, str(tmp_path / "two"), workers=2)
    assert len({Path(f.path).name[:6] for f in manifest.files}) == 4
    assert_exact(str(tmp_path / "two"), str(tmp_path / "single"))
    only = export_partitioned(uri, str(tmp_path / "only_b"), workers=2, namespaces=["b"])
    assert [n.name for n in only.namespaces] == ["b"] and only.total_rows == 20_000
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "only_b")).table("b"), tables["b"])


def test_workers_write_one_dump_on_object_storage(source, s3_uri):
    """Every worker reaches the S3 test server (credentials from the environment, as each node's would be)."""
    dsn, single = source
    manifest = export_partitioned(pg(dsn), s3_uri, workers=2)
    assert len(manifest.files) == PARTITIONS
    assert validate_dump(s3_uri) == []
    assert diff_dumps(single, s3_uri).identical


def test_a_store_with_one_slice_per_namespace_runs_in_process(tmp_path):
    """LanceDB gives one slice per namespace under 10,000 rows: one partition each, one worker (this process), no
    snapshot to share."""
    tables = {"a": make_table(300, 8, prefix="a-"), "b": make_table(200, 8, seed=1, prefix="b-")}
    write_namespaced(str(tmp_path / "src"), tables)
    uri = f"lancedb://{tmp_path / 'db'}?table=items"
    transfer.import_dump(str(tmp_path / "src"), uri)
    exporter = open_exporter(uri)
    try:
        assert default_workers(sum(len(exporter.slices(ns)) for ns in tables), len(tables)) == 1
    finally:
        exporter.close()
    export_partitioned(uri, str(tmp_path / "out"))
    assert validate_dump(str(tmp_path / "out")) == []
    assert diff_dumps(str(tmp_path / "src"), str(tmp_path / "out")).identical


def test_a_killed_job_resumes_with_only_the_missing_partitions(source, tmp_path):
    dsn, single = source
    dump = str(tmp_path / "killed")
    proc = start_job(pg(dsn), dump)
    wait_for_partitions_done(proc, dump)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, mid-run
    proc.wait()
    state = job_state(dump)
    done = {int(i): r["files"] for i, r in state["done"].items()}
    assert 1 <= len(done) < PARTITIONS, "the job finished before it could be killed"
    assert not os.path.exists(os.path.join(dump, "manifest.json"))

    with pytest.raises(DumpError, match=r"interrupted partitioned export \(pass resume"):
        export_partitioned(pg(dsn), dump, workers=2)  # not resuming: refused, nothing touched
    # What a single-process export (without --workers) says there (vecfmt.transfer.export asks for it).
    assert interrupted_job(dump) == (f"{dump} holds an interrupted partitioned export: resume it with `--workers N "
                                     "--resume` (any number of workers), or replace it with `--workers N --overwrite`")
    for flags in ([], ["--resume"]):  # the CLI without --workers says so, and touches nothing
        assert_one_clear_error(vecfmt_cli("export", pg(dsn), dump, *flags), "interrupted partitioned export",
                               "--workers N --resume")
    assert job_state(dump) == state
    # The coordinator killed while it replaced the job state leaves Location.write_atomic's temp file beside it;
    # a file vecfmt does not write under such a name stays.
    stray = Path(dump, f"{JOB_STATE}.tmp-{uuid.uuid4().hex}")
    stray.write_text('{"format": 1, "ori')
    not_ours = Path(dump, f"{JOB_STATE}.tmp-notes")
    not_ours.write_text("mine")
    finished = Path(dump) / next(iter(done.values()))[0]["path"]
    original = finished.read_bytes()
    finished.write_bytes(original[:1000] + bytes([original[1000] ^ 1]) + original[1001:])  # same size
    with pytest.raises(DumpError, match="missing or changed since its partition finished"):
        export_partitioned(pg(dsn), dump, workers=2, resume=True)  # hostile review: sizes alone let it through
    finished.write_bytes(original)
    manifest = export_partitioned(pg(dsn), dump, workers=2, resume=True)
    assert not stray.exists() and not_ours.read_text() == "mine"
    assert interrupted_job(dump) is None  # a complete dump

    assert_exact(dump, single)
    listed = {f.path: f for f in manifest.files}
    for files in done.values():  # the finished partitions' files, as they were: those did not run again
        for f in files:
            assert listed[f["path"]].sha256 == f["sha256"]
    old_runs = {Path(f["path"]).name.split("-")[1] for files in done.values() for f in files}
    rerun = {int(Path(p).name[1:6]) for p in listed if Path(p).name.split("-")[1] not in old_runs}
    assert rerun == set(range(PARTITIONS)) - set(done)  # exactly the missing ones ran, in the new run


@pytest.fixture(scope="module")
def many(source, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``many``: 160,000 x 8 in the source's database, 16 slices; and its single-process export: (uri, dump)."""
    dsn, _ = source
    root = tmp_path_factory.mktemp("many")
    vecfmt.write_dump(str(root / "table"), make_table(160_000, 8))
    transfer.import_dump(str(root / "table"), pg(dsn, table="many", index="none"))
    transfer.export(pg(dsn, table="many"), str(root / "single"))
    return pg(dsn, table="many"), str(root / "single")


def test_a_killed_worker_is_replaced_and_its_partitions_run_again(many, tmp_path):
    """16 partitions, retries=1: the pool the killed worker broke is replaced; only the partitions that were
    running in it are charged an attempt (one line each), not the ones still queued in it."""
    uri, single = many
    dump = str(tmp_path / "worker")
    proc = start_job(uri, dump, retries=1)
    state = wait_for_partitions_done(proc, dump)
    victims = workers_of(proc.pid)
    assert victims and len(state["done"]) < 16
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    retried = [line for line in stderr.splitlines() if "running it again" in line]
    assert 1 <= len(retried) <= 2, stderr  # the two workers' partitions at most
    assert all("its worker process died); running it again (1 of 1 retries)" in line for line in retried)
    assert_exact(dump, single)


def test_a_stray_temp_of_the_job_state_is_removed_by_the_next_run(many, tmp_path):
    """Killed while it wrote its first job state, a job leaves only Location.write_atomic's temp file: the next
    run removes it (not refused as a folder of unknown files) and exports; so does an overwrite."""
    uri, single = many
    dump = tmp_path / "stray"
    dump.mkdir()
    stray = dump / f"{JOB_STATE}.tmp-{uuid.uuid4().hex}"
    stray.write_text("{")
    export_partitioned(uri, str(dump), workers=1)
    assert not stray.exists()
    assert_exact(str(dump), single)
    stray.write_text("{")
    export_partitioned(uri, str(dump), workers=1, overwrite=True)
    assert not stray.exists()
    assert_exact(str(dump), single)


# A pgvector exporter without ``change_counts()`` (what a store without such counts is like), set in the job.
WITHOUT_COUNTS = ("from vecfmt.stores.pgvector.exporter import PgvectorExporter\n"
                  "del PgvectorExporter.change_counts")


@pytest.mark.parametrize("recorded", [False, True], ids=["counted-at-the-end", "changes-recorded"])
def test_a_row_updated_before_the_resume_is_said_to_be_a_change_of_the_source(source, tmp_path, recorded):
    """A killed job, then an UPDATE of a row a finished partition exported: its new version is on a page of a
    partition not done, which the resume would read again. Without ``change_counts()`` the rows do not add up at
    the end (40,001 of 40,000): said as the source's change, not the store's miscount, and the job's files
    removed. With it the resume is refused before it runs anything, with the job left as it was. Either way
    one line that says what to do, and no manifest."""
    dsn, _ = source
    table = f"moved_{int(recorded)}"
    # Vectors stored in line (as items holds them: two rows fill a page) and no autovacuum to fill the free space
    # map, so an updated row cannot stay on its page and goes to the table's last page, which the last partition
    # reads (a CREATE TABLE AS took the type's EXTERNAL storage: small rows, and the new version could stay on
    # its done page).
    run_sql(dsn, f"DROP TABLE IF EXISTS {table}",
            f"CREATE TABLE {table} (LIKE items INCLUDING STORAGE) WITH (autovacuum_enabled = false)",
            f"INSERT INTO {table} SELECT * FROM items")
    uri, dump = pg(dsn, table=table), str(tmp_path / "moved")
    proc = start_job(uri, dump, before="" if recorded else WITHOUT_COUNTS)
    wait_for_partitions_done(proc, dump)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = job_state(dump)
    assert 1 <= len(state["done"]) < PARTITIONS, "the job finished before it could be killed"
    done_file = next(iter(state["done"].values()))["files"][0]["path"]
    moved_id = pq.read_table(Path(dump, done_file), columns=["id"]).column("id")[0].as_py()
    run_sql(dsn, sql.SQL("UPDATE {} SET id = id WHERE id = {}").format(sql.Identifier(table), sql.Literal(moved_id)))
    page = run_sql(dsn, sql.SQL("SELECT (ctid::text::point)[0]::int FROM {} WHERE id = {}").format(
        sql.Identifier(table), sql.Literal(moved_id)))[0][0]  # fmt: skip
    not_done = [p["key"]["pages"] for i, p in enumerate(state["partitions"]) if str(i) not in state["done"]]
    if not recorded:  # read twice only if the new version is on a page not done; the counts see any UPDATE
        assert any(first <= page and (end is None or page < end) for first, end in not_done), (page, not_done)

    command = ["vecfmt", "export", uri, dump, "--workers", "2", "--resume"]  # the command, with the hook set first
    script = f"{'' if recorded else WITHOUT_COUNTS}\nimport runpy, sys\nsys.argv = {command!r}\n" \
             "runpy.run_module('vecfmt.cli', run_name='__main__')"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert_one_clear_error(Run(done.returncode, done.stdout, done.stderr), "changed since the interrupted export")
    message = done.stderr.strip()
    assert PASSWORD not in message and "the store reported" not in message
    assert not Path(dump, "manifest.json").exists()
    if recorded:
        assert "changed since the interrupted export (rows were inserted, updated or deleted" in message, message
        assert message.endswith("start again with overwrite")
        assert job_state(dump)["done"] == state["done"]  # refused before anything ran: the job as it was
        manifest = export_partitioned(uri, dump, workers=2, overwrite=True)
    else:
        assert "changed since the interrupted export: namespace '' holds 40,000 rows, but the partitions read by " \
               "the interrupted run (then) and by this one (now) hold 40,001" in message, message
        assert message.endswith("the job's files are removed: export it again")
        assert not any(files for _, _, files in os.walk(dump))
        manifest = export_partitioned(uri, dump, workers=2)
    assert manifest.total_rows == ROWS


def test_a_partition_whose_connection_is_cut_runs_again(source, tmp_path):
    """A worker's COPY backend terminated mid-read: that partition fails with a store error and runs again on
    a new connection, in the job's snapshot (the planning connection still holds it)."""
    dsn, single = source
    dump = str(tmp_path / "cut")
    proc = start_job(pg(dsn), dump)
    terminated = False
    deadline = time.monotonic() + 180
    while not terminated and time.monotonic() < deadline and proc.poll() is None:
        rows = run_sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND query ILIKE 'COPY%' LIMIT 1")  # fmt: skip
        terminated = bool(rows and rows[0][0])
        time.sleep(0.01)
    _, stderr = proc.communicate(timeout=300)
    assert terminated, "the job finished before a backend could be terminated"
    assert proc.returncode == 0, stderr
    assert "running it again (1 of 2 retries)" in stderr, stderr
    assert PASSWORD not in stderr
    assert_exact(dump, single)


def test_duplicate_ids_across_partitions_are_refused(source, tmp_path):
    dsn, _ = source
    run_sql(dsn, "DROP TABLE IF EXISTS dup",
            "CREATE TABLE dup AS SELECT * FROM items",  # no primary key: nothing stops a duplicate id
            "INSERT INTO dup SELECT * FROM items WHERE id = (SELECT id FROM items LIMIT 1)")  # fmt: skip
    dump = str(tmp_path / "dup")
    exporter = open_exporter(pg(dsn, table="dup"))
    try:
        exporter.describe()
        assert len(exporter.slices("")) > 1  # the copy sits in the last slice, the original in the first
    finally:
        exporter.close()
    with pytest.raises(InvalidDataError, match="duplicate ids in namespace ''"):
        export_partitioned(pg(dsn, table="dup"), dump, workers=2)
    assert not any(files for _, _, files in os.walk(dump))  # nothing left


def test_a_failed_partition_names_itself_and_the_resume_command(source, tmp_path):
    """A NULL id in the last slice: bad rows are not retried, and the line says to export again once the row is
    mended: mending changes the table, which a resume refuses (a mended row may move between partitions)."""
    dsn, single = source
    run_sql(dsn, "DROP TABLE IF EXISTS holes", "CREATE TABLE holes AS SELECT * FROM items",
            "UPDATE holes SET id = NULL WHERE id = (SELECT id FROM holes ORDER BY ctid DESC LIMIT 1)")  # fmt: skip
    dump = str(tmp_path / "holes")
    with pytest.raises(InvalidDataError) as caught:
        export_partitioned(pg(dsn, table="holes"), dump, workers=1)
    message = str(caught.value)
    assert "\n" not in message and PASSWORD not in message
    assert message.startswith(f"partition {PARTITIONS} of {PARTITIONS} (namespace '', ")
    assert "is NULL in some rows" in message
    assert "once the source's rows are mended, export again: `vecfmt export " in message
    assert message.endswith("--workers 1 --overwrite`")
    assert len(job_state(dump)["done"]) == PARTITIONS - 1

    original = run_sql(dsn, "SELECT i.id FROM items i LEFT JOIN holes h ON h.id = i.id WHERE h.id IS NULL")[0][0]
    run_sql(dsn, sql.SQL("UPDATE holes SET id = {} WHERE id IS NULL").format(sql.Literal(original)))
    time.sleep(1)  # the server publishes a session's row counts within about a second of its commit
    with pytest.raises(DumpError, match="changed since the interrupted export"):
        export_partitioned(pg(dsn, table="holes"), dump, workers=2, resume=True)
    export_partitioned(pg(dsn, table="holes"), dump, workers=2, overwrite=True)
    assert diff_dumps(single, dump).identical


def test_a_rerun_after_completion_is_refused_unless_overwrite(source, tmp_path):
    dsn, single = source
    dump = str(tmp_path / "again")
    export_partitioned(pg(dsn), dump, workers=1)
    before = sorted(os.listdir(os.path.join(dump, "__default__")))
    for resume in (False, True):
        with pytest.raises(DumpError, match="already holds a dump; pass overwrite"):
            export_partitioned(pg(dsn), dump, workers=2, resume=resume)
    assert sorted(os.listdir(os.path.join(dump, "__default__"))) == before
    export_partitioned(pg(dsn), dump, workers=2, overwrite=True)
    assert_exact(dump, single)
    assert not set(os.listdir(os.path.join(dump, "__default__"))) & set(before)  # the old files are gone


# --- partitioned import ------------------------------------------------------------------------------

IMPORT_ROWS, IMPORT_DIM, FILE_ROWS = 30_000, 64, 3_000  # ten files
# PostgreSQL 18 only: the loading is the store's, tested on both servers in tests/stores/test_pgvector.py.
on_pg18 = pytest.mark.parametrize("pg_server", ["pgserver"], indirect=True)


@pytest.fixture(scope="module")
def ten_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pa.Table]:
    """A dump of IMPORT_ROWS x IMPORT_DIM in ten files, and its rows."""
    table = make_table(IMPORT_ROWS, IMPORT_DIM)
    dump = str(tmp_path_factory.mktemp("import") / "dump")
    vecfmt.write_dump(dump, table, options=vecfmt.ParquetOptions(max_file_rows=FILE_ROWS))
    assert len(vecfmt.open_dump(dump).manifest.files) == IMPORT_ROWS // FILE_ROWS
    return dump, table


def files_loaded(dsn: str) -> list[tuple[str, int]]:
    try:
        return run_sql(dsn, f"SELECT path, rows FROM {FILES_TABLE} ORDER BY path")
    except psycopg.errors.UndefinedTable:
        return []


def assert_imported(dsn: str, table: pa.Table, tmp_path: Path) -> None:
    """Every row once, bit for bit, with its key and index, and no progress left behind."""
    assert run_sql(dsn, "SELECT count(*), count(DISTINCT id) FROM items") == [(table.num_rows, table.num_rows)]
    transfer.export(pg(dsn), str(tmp_path / "back"))
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "back")).table(""), table)
    assert run_sql(dsn, "SELECT count(*) FROM pg_indexes WHERE tablename = 'items'") == [(2,)]  # pkey, hnsw
    assert run_sql(dsn, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vecfmt_import_%'") == [(0,)]


@on_pg18
def test_two_workers_import_a_dump_exactly(ten_files, pg_db, tmp_path):
    """Through the command: ``vecfmt import --workers 2``."""
    dump, table = ten_files
    run = vecfmt_cli("import", dump, pg(pg_db), "--workers", "2", "--batch-size", "1000", "--json")
    assert run.code == 0, run.stderr
    assert (json.loads(run.stdout)["rows"], json.loads(run.stdout)["rows_skipped"]) == (IMPORT_ROWS, 0)
    assert_imported(pg_db, table, tmp_path)


@on_pg18
def test_a_killed_import_resumes_with_only_the_missing_files(ten_files, pg_db, tmp_path):
    dump, table = ten_files
    uri = pg(pg_db)
    script = f"from vecfmt.parallel import import_partitioned; import_partitioned({dump!r}, {uri!r}, workers=2, " \
             "batch_size=500)"  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(files_loaded(pg_db)) < 2:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, mid-run
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    time.sleep(0.5)  # the killed workers' backends roll back what they were loading
    loaded = files_loaded(pg_db)
    committed = sum(rows for _, rows in loaded)
    assert 2 <= len(loaded) < IMPORT_ROWS // FILE_ROWS, "the import finished before it could be killed"
    # The files recorded are exactly the rows in the table: each file and its record commit together.
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(committed,)]

    with pytest.raises(StoreError, match=r"already exists .*interrupted import of this dump is in it: resume it"):
        import_partitioned(dump, uri, workers=2)  # not resuming: refused, nothing written
    with pytest.raises(StoreError, match=r"loaded its files with workers \(--workers\); resume it with them"):
        transfer.import_dump(dump, uri, resume=True)  # the single-process resume cannot take it up
    result = import_partitioned(dump, uri, workers=2, resume=True)
    assert (result.rows_skipped, result.rows) == (committed, IMPORT_ROWS - committed)  # only the missing files
    assert_imported(pg_db, table, tmp_path)


@on_pg18
def test_replace_loads_beside_the_old_table_and_swaps_it_in(ten_files, pg_db, tmp_path):
    dump, table = ten_files
    old = make_table(100, IMPORT_DIM, prefix="old-")
    vecfmt.write_dump(str(tmp_path / "old"), old)
    transfer.import_dump(str(tmp_path / "old"), pg(pg_db))
    with pytest.raises(StoreError, match="already exists"):
        import_partitioned(dump, pg(pg_db), workers=2)
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(100,)]
    import_partitioned(dump, pg(pg_db), workers=2, if_exists="replace")
    assert_imported(pg_db, table, tmp_path)


@on_pg18
def test_a_corrupt_file_names_itself_and_what_the_target_holds(ten_files, pg_db, tmp_path, caplog):
    dump, _ = ten_files
    broken = tmp_path / "broken"
    shutil.copytree(dump, broken)
    last = vecfmt.open_dump(str(broken)).manifest.files[-1]
    data = bytearray((broken / last.path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, another SHA-256
    (broken / last.path).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="vecfmt.parallel"), pytest.raises(DumpError) as caught:
        import_partitioned(str(broken), pg(pg_db), workers=1)  # one worker: the files load in order
    assert not [r for r in caplog.records if "running it again" in r.getMessage()]  # a checksum never passes
    message = str(caught.value)
    assert message == (f"file {last.path}: {last.path} is corrupt: its SHA-256 differs from the manifest's "
                       f"({IMPORT_ROWS - FILE_ROWS:,} of the dump's rows are in the target, which is incomplete)")
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(IMPORT_ROWS - FILE_ROWS,)]


@on_pg18
def test_a_row_the_target_refuses_fails_at_once_without_a_resume_command(ten_files, pg_db, tmp_path, caplog):
    """An append whose last file holds an id the table has (its primary key refuses it): not retried (each
    attempt would end the same), and the one line names the file and what the target holds, with no
    ``--resume`` (which would fail the same way)."""
    dump, table = ten_files
    vecfmt.write_dump(str(tmp_path / "one"), table.slice(IMPORT_ROWS - 1, 1))
    transfer.import_dump(str(tmp_path / "one"), pg(pg_db))  # the table, with its primary key and that id
    last = vecfmt.open_dump(dump).manifest.files[-1]
    with caplog.at_level(logging.WARNING, logger="vecfmt.parallel"), pytest.raises(StoreError) as caught:
        import_partitioned(dump, pg(pg_db), workers=1, if_exists="append")  # one worker: the files load in order
    assert not [r for r in caplog.records if "running it again" in r.getMessage()]
    message = str(caught.value)
    assert message.startswith(f"file {last.path}: pgvector ") and "duplicate key value" in message, message
    assert message.endswith(f"(not retried: it would fail the same way); {IMPORT_ROWS - FILE_ROWS:,} of the dump's "
                            "rows are in the target"), message
    assert "--resume" not in message and "\n" not in message and PASSWORD not in message
    assert run_sql(pg_db, "SELECT count(*) FROM items") == [(IMPORT_ROWS - FILE_ROWS + 1,)]


def test_a_store_whose_importer_takes_one_writer_refuses_workers(ten_files, tmp_path):
    dump, table = ten_files
    uri = f"lancedb://{tmp_path / 'db'}?table=items"
    with pytest.raises(StoreError, match=r"^the lancedb store cannot import with several workers .*; import without "
                                         r"--workers$"):  # fmt: skip
        import_partitioned(dump, uri, workers=2)
    assert_one_clear_error(vecfmt_cli("import", dump, uri, "--workers", "2"), "cannot import with several workers")
    assert_one_clear_error(vecfmt_cli("import", dump, uri, "--ray-address", "auto"),
                           "--ray-address is for --engine ray")
    result = import_partitioned(dump, uri, workers=1)  # one writer: a plain import
    assert result.rows == IMPORT_ROWS
    transfer.export(uri, str(tmp_path / "back"))
    assert_same_rows(vecfmt.open_dump(str(tmp_path / "back")).table(""), table)


@pytest.mark.parametrize("address", ["ray://10.1.2.3:10001", "10.1.2.3:6379"])
def test_a_local_dump_is_refused_for_a_cluster_elsewhere_before_connecting(tmp_path, address):
    pytest.importorskip("ray")  # the test extra has it (tests/test_ray.py fails without it under CI)
    started = time.monotonic()
    with pytest.raises(DumpError) as caught:
        export_partitioned("lancedb:///nowhere?table=items", str(tmp_path / "dump"), engine="ray", ray_address=address)
    assert str(caught.value) == (f"{tmp_path / 'dump'} is a local path, which the workers of the Ray cluster at "
                                 f"{address} do not reach; put the dump on object storage every node reaches (s3://, "
                                 "gs://, abfs://)")  # fmt: skip
    assert time.monotonic() - started < 10  # refused at once: nothing tried to reach the address
    assert not (tmp_path / "dump").exists()


def test_engine_ray_without_ray_says_which_extra_installs_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it fails
    with pytest.raises(StoreError, match=r"^engine ray needs the ray package, which is not installed: pip install "
                                         r"'vecfmt\[ray\]'$"):  # fmt: skip
        export_partitioned(f"lancedb://{tmp_path / 'db'}?table=items", str(tmp_path / "out"), engine="ray")


@on_pg18
def test_chosen_namespaces_import_alone_and_upsert_through_each_workers_staging_table(pg_db, tmp_path):
    """The coordinator and the workers see the same part of the dump (its identity restricted to the namespaces
    chosen); an upsert goes through each worker's own staging table."""
    tables = {"a": make_table(2_000, 8, prefix="a-"), "b": make_table(3_000, 8, seed=1, prefix="b-")}
    write_namespaced(str(tmp_path / "src"), tables, options=vecfmt.ParquetOptions(max_file_rows=1_000))
    result = import_partitioned(str(tmp_path / "src"), pg(pg_db), workers=1, namespaces=["b"])
    assert (result.rows, result.namespaces) == (3_000, ["b"])
    assert run_sql(pg_db, "SELECT namespace, count(*) FROM items GROUP BY 1") == [("b", 3_000)]
    result = import_partitioned(str(tmp_path / "src"), pg(pg_db), workers=1, if_exists="upsert")
    assert result.rows == 5_000
    assert run_sql(pg_db, "SELECT namespace, count(*) FROM items GROUP BY 1 ORDER BY 1") == [("a", 2_000),
                                                                                          ("b", 3_000)]
    transfer.export(pg(pg_db), str(tmp_path / "back"))
    back = vecfmt.open_dump(str(tmp_path / "back"))
    for name, table in tables.items():
        assert_same_rows(back.table(name), table)
