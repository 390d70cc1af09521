"""The Ray engine end to end on a real local Ray cluster (two worker processes on this machine): a partitioned
export from pgvector (PostgreSQL 18) to a dump on the S3 test server, and a partitioned import of that dump
into a new database, each with one Ray worker killed (SIGKILL) while it runs a partition; both end exact: the
dump validates, and neither it nor the imported table read back differs from a single-process export."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import vecfmt
from tests.helpers import make_table
from tests.servers.postgres import unavailable
from tests.stores.test_pgvector import PASSWORD, pg, run_sql
from tests.test_parallel import files_loaded
from vecfmt import transfer
from vecfmt.errors import StoreError
from vecfmt.ops.diff import diff_dumps
from vecfmt.ops.validate import validate_dump
from vecfmt.parallel import JOB_STATE, export_partitioned, import_partitioned
from vecfmt.storage import resolve

ROWS, DIM = 50_000, 64  # five ctid slices (one per 10,000 rows): five partitions, five files
TASK_TITLE = "ray::_on_ray_worker"  # a Ray worker's process title while it runs a vecfmt partition


@pytest.fixture(scope="module")
def ray_cluster(s3_server) -> Iterator[Any]:
    """A local Ray cluster of two worker CPUs, started once the S3 server's variables are set: the workers
    inherit them, as each node of a real cluster takes its credentials from its own environment."""
    try:
        import ray
    except ImportError:
        unavailable("ray is not installed: pip install 'vecfmt[ray]' (the test extra has it)")
    temp = tempfile.mkdtemp(prefix="vecfmt-ray-")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def databases(pgserver_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(source dsn, empty target dsn, single-process export of the source): ``items`` is ROWS x DIM."""
    names = [f"vecfmt_ray_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(pgserver_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    source, target = (pgserver_dsn.rsplit("/", 1)[0] + f"/{name}" for name in names)
    root = tmp_path_factory.mktemp("ray")
    vecfmt.write_dump(str(root / "table"), make_table(ROWS, DIM))
    transfer.import_dump(str(root / "table"), pg(source, index="none"))
    transfer.export(pg(source), str(root / "single"))
    try:
        yield source, target, str(root / "single")
    finally:
        with psycopg.connect(pgserver_dsn, autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def running_partitions() -> list[int]:
    """The Ray worker processes running a partition now (Ray sets a worker's title to its task's name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes().startswith(TASK_TITLE.encode()):
                found.append(int(entry.name))
        except OSError:  # ended meanwhile
            continue
    return found


class WorkerKiller(threading.Thread):
    """Once ``progressed()`` (the job recorded a finished partition), SIGKILL one Ray worker that runs a
    partition, once."""

    def __init__(self, progressed: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        self.progressed = progressed
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.progressed():
                for pid in running_partitions():
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                    return
            time.sleep(0.01)

    def __enter__(self) -> WorkerKiller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def partitions_done(dump: str) -> Callable[[], bool]:
    location = resolve(dump)

    def done() -> bool:
        try:
            return bool(json.loads(location.read_bytes(JOB_STATE).to_pybytes())["done"])
        except (OSError, ValueError):  # not written yet (it is put whole, never half)
            return False

    return done


def test_export_to_s3_and_import_back_on_ray_with_a_worker_killed_each_time(ray_cluster, databases, s3_uri, tmp_path):
    source, target, single = databases
    with WorkerKiller(partitions_done(s3_uri)) as killer:
        manifest = export_partitioned(pg(source), s3_uri, engine="ray", workers=2, batch_size=2000)
    assert killer.killed is not None, "the export finished before a worker could be killed"
    assert manifest.total_rows == ROWS and len(manifest.files) == 5
    assert validate_dump(s3_uri) == []
    assert diff_dumps(single, s3_uri).identical  # Ray ran the killed worker's partition again, exactly
    assert not resolve(s3_uri).exists(JOB_STATE)

    with WorkerKiller(lambda: bool(files_loaded(target))) as killer:
        result = import_partitioned(s3_uri, pg(target), engine="ray", workers=2, batch_size=2000)
    assert killer.killed is not None, "the import finished before a worker could be killed"
    assert (result.rows, result.rows_skipped) == (ROWS, 0)
    assert run_sql(target, "SELECT count(*), count(DISTINCT id) FROM items") == [(ROWS, ROWS)]
    transfer.export(pg(target), str(tmp_path / "back"))
    assert validate_dump(str(tmp_path / "back")) == []
    assert diff_dumps(single, str(tmp_path / "back")).identical
    assert PASSWORD not in json.dumps(vecfmt.open_dump(s3_uri).manifest.to_dict())


def test_a_row_the_target_refuses_is_not_retried_by_ray(ray_cluster, databases, tmp_path):
    """Ray retries only what may pass (retry_exceptions): a unique key the target enforces fails on the first
    attempt, with one line and no --resume."""
    _, target, _ = databases
    table = make_table(2_000, DIM)
    vecfmt.write_dump(str(tmp_path / "dump"), table, options=vecfmt.ParquetOptions(max_file_rows=1_000))
    vecfmt.write_dump(str(tmp_path / "one"), table.slice(1_999, 1))
    transfer.import_dump(str(tmp_path / "one"), pg(target, table="refuses"))  # the last id, under a primary key
    with pytest.raises(StoreError) as caught:
        import_partitioned(str(tmp_path / "dump"), pg(target, table="refuses"), engine="ray", workers=1,
                           if_exists="append")  # fmt: skip
    message = str(caught.value)
    assert "duplicate key value" in message and "(not retried: it would fail the same way)" in message, message
    assert "--resume" not in message and " times" not in message and PASSWORD not in message


def test_the_cluster_vecfmt_starts_is_gone_when_the_job_ends(databases, tmp_path):
    """Without an address vecfmt starts a local cluster for the job; when the job ends (here: fails), every
    process of it has ended too (Ray's agents used to linger a minute or two). The job runs in a session of
    its own, whose processes are then all there is to look for."""
    source, _, _ = databases
    script = ("from vecfmt.parallel import export_partitioned\n"
              f"export_partitioned({pg(source, table='missing')!r}, {str(tmp_path / 'dump')!r}, engine='ray', "
              "workers=1)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(in_session(proc.pid))
        time.sleep(0.05)
    _, stderr = proc.communicate()
    assert "does not exist" in stderr, stderr  # the job failed, after the cluster had started
    assert len(seen) >= 3, seen  # gcs_server, raylet, agents...
    deadline = time.monotonic() + 2
    while in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = in_session(proc.pid)
    for pid in left:  # the test's own cleanup: a leftover would live on for a minute or two
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in left if Path(f"/proc/{pid}").exists()]


def in_session(session: int) -> set[int]:
    """The processes (not zombies) of session ``session``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.add(int(entry.name))
    return found
