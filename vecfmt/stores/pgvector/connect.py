"""Where to connect and how to fail: the parsed URI (conninfo, kept secret), its options, and driver
errors turned into one line with every secret removed."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vecfmt.errors import InvalidDataError, StoreError, one_line
from vecfmt.storage import scrub
from vecfmt.stores.base import StoreURI

SCHEME = "pgvector"
log = logging.getLogger("vecfmt.pgvector")  # one logger for the whole store (benchmarks read its phases)


# libpq connection keywords accepted as URI options (password deliberately not)
LIBPQ_OPTIONS = {
    "host", "hostaddr", "port", "user", "dbname", "passfile", "connect_timeout", "sslmode", "sslcert",
    "sslkey", "sslrootcert", "sslcrl", "application_name", "options", "target_session_attrs", "service",
    "gssencmode", "sslnegotiation", "channel_binding", "krbsrvname",
}  # fmt: skip
STORE_OPTIONS = {
    "table", "schema", "query", "id", "vector", "sparse", "metadata", "document", "namespace_column",
    "fold", "metric", "type", "sparse_dim", "index", "m", "ef_construction", "lists",
    "maintenance_work_mem", "workers", "storage", "parallel", "lock_timeout",
}  # fmt: skip


# --- connection, options and one-line errors ---------------------------------------------------------


class Target:
    """The parsed URI: where to connect (conninfo, kept secret), what to show, and the store options."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        self._secrets = list(uri.secrets)
        uri.check_options(LIBPQ_OPTIONS | STORE_OPTIONS | {"password"}, see="docs/pgvector.md")
        if "password" in uri.options:
            raise StoreError("pgvector: put the password in the URI (USER:PASSWORD@HOST) or in PGPASSWORD, "
                             "not in an option")  # fmt: skip
        if "@" in (uri.userinfo or "") or "@" in uri.host_location.split("/", 1)[0]:
            # Documented: an unencoded '@' inside the user or password is refused (never echoed).
            raise StoreError("pgvector: the URI has more than one '@' before the host; write an '@' inside "
                             "the user or password as %40")
        params = {k: v for k, v in uri.options.items() if k in LIBPQ_OPTIONS}
        params.setdefault("connect_timeout", "10")
        params.setdefault("application_name", "vecfmt")
        try:
            self.conninfo = make_conninfo(_libpq_uri(uri), **params)
            parts = conninfo_to_dict(self.conninfo)
        except psycopg.Error as exc:
            raise StoreError(f"pgvector: invalid connection string: {self.clean(str(exc))}") from None
        if parts.get("password"):
            self._secrets.append(str(parts["password"]))
        if os.environ.get("PGPASSWORD"):
            self._secrets.append(os.environ["PGPASSWORD"])
        host = parts.get("host") or os.environ.get("PGHOST") or "localhost"
        port = parts.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = parts.get("dbname") or os.environ.get("PGDATABASE") or parts.get("user") or ""
        self.where = f"{dbname}@{host}:{port}"  # for messages: no user, no password
        self.schema = uri.option("schema") or None
        self.table = uri.option("table") or None
        self.query = uri.option("query") or None

    def relation_label(self) -> str:
        if self.table is None:
            return "query"
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def clean(self, text: str) -> str:
        """``text`` as one line with every secret removed."""
        text = scrub(text, self._secrets)
        text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
        text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        # Drop psql-style context (LINE 1: ..., carets, the query echo ADBC appends).
        lines = [ln for ln in lines if not re.match(r"^(LINE \d+:|\^|Query was:|HINT:\s*$)", ln)]
        return one_line("\n".join(lines))

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"pgvector {self.where}: {doing}: {self.clean(driver_message(exc))}")

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn driver errors into one-line StoreErrors without secrets (and without their cause chain,
        whose messages could hold the connection string)."""
        try:
            yield
        except (StoreError, InvalidDataError):
            raise
        except psycopg.Error as exc:
            raise self.fail(doing, exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith("adbc_driver") or _from_libpq(exc):
                raise self.fail(doing, exc) from None
            raise

    def conninfo_for(self, *, read_only: bool = False) -> str:
        """The conninfo; ``read_only``: every transaction of the session is read-only (set at connection
        level, so a statement cannot end the read-only transaction and write in the next one)."""
        if not read_only:
            return self.conninfo
        options = conninfo_to_dict(self.conninfo).get("options") or os.environ.get("PGOPTIONS", "")
        return make_conninfo(self.conninfo, options=f"{options} -c default_transaction_read_only=on".strip())

    def connect(self, *, autocommit: bool = True, read_only: bool = False) -> psycopg.Connection:
        with self.errors("cannot connect"):
            return psycopg.connect(self.conninfo_for(read_only=read_only), autocommit=autocommit)


def _libpq_uri(uri: StoreURI) -> str:
    """``postgresql://LOCATION`` with the user and password percent-encoded: libpq ends a userinfo at its
    first "/" or "@", so an unencoded one would be cut and sent out as part of a host name."""
    if not uri.location:
        return ""
    if uri.userinfo is None:
        return f"postgresql://{uri.location}"
    user, colon, password = uri.userinfo.partition(":")
    userinfo = quote(unquote(user), safe="") + (f":{quote(unquote(password), safe='')}" if colon else "")
    return f"postgresql://{userinfo}@{uri.host_location}"


def _from_libpq(exc: BaseException) -> bool:
    """An error of the server that ADBC hands over while streaming, as pyarrow's ArrowInvalid/IOError
    (a write refused in a read-only transaction) or as OSError (a cancelled statement): the store's error.
    Only the C++ driver writes this prefix (ADBC's own Python errors are caught by their module)."""
    return str(exc).lstrip().startswith("[libpq]")


def driver_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        detail = getattr(diag, "message_detail", None)
        return f"{primary} ({detail})" if detail else primary
    text = str(exc).strip()
    if _from_libpq(exc):  # "[libpq] Execution error [PGRES_FATAL_ERROR]: ERROR:  message": the message
        text = re.sub(r"^\[libpq\][^:]*(\[[A-Z_]+\])?:\s*((ERROR|FATAL):\s*)?", "", text).strip()
    return text or type(exc).__name__


def comma_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]
