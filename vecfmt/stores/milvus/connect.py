"""Where to connect and how to fail: the parsed URI and its options, the ``MilvusClient`` (Milvus Lite for a
``.db`` path, a server otherwise), the token kept secret, and client errors turned into one line."""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from contextlib import AbstractContextManager, suppress
from types import ModuleType
from typing import Any

from vecfmt.errors import StoreError, one_line
from vecfmt.storage import scrub
from vecfmt.stores.base import StoreURI, raised_by, require_sdk, sdk_errors

SCHEME = "milvus"
log = logging.getLogger("vecfmt.milvus")

OPTIONS = {
    "collection", "db", "secure", "timeout",
    "vector", "document", "metadata",  # both ways
    "id_max_length", "index", "batch", "concurrency",  # import
    "page",  # export
}  # fmt: skip
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")  # Milvus's rule for collection, partition and field names
DEFAULT_PORT = 19530
MAX_QUERY_ROWS = 16_384  # Milvus's cap on a query's limit
TOKEN_ENV = "MILVUS_TOKEN"

# Milvus Lite runs in this process (a gRPC server on threads, one per .db folder, holding the folder's LOCK).
# pymilvus starts it on first use and stops it only at exit; we count our own users of each folder and stop
# it when the last one closes, so another process (a CLI run, a test) can open the folder right after.
_lite_users: dict[str, int] = {}
_lite_lock = threading.Lock()


def sdk() -> ModuleType:
    """``pymilvus``, with its own log handlers silenced: it prints every failed call with a traceback to
    stderr, which would break the one-line error contract (the error itself reaches us as an exception)."""
    pymilvus = require_sdk("pymilvus", SCHEME)
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    return pymilvus


def flag(uri: StoreURI, key: str) -> bool:
    value = (uri.option(key) or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise StoreError(f"milvus: option {key} must be true or false, not {value!r}")
    return value in ("true", "1", "yes")


def check_name(name: str, what: str) -> str:
    if not NAME.match(name):
        raise StoreError(f"milvus: {name!r} is not a valid {what} name (a letter or _, then letters, digits or _; "
                         "at most 255 characters)")
    return name


class Target:
    """The parsed URI: Milvus Lite (a ``.db`` path) or a server, the collection, the token, the options."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        uri.check_options(OPTIONS, see="docs/milvus.md")
        location = uri.host_location
        self.lite = location.rstrip("/").endswith(".db")
        self.token = os.environ.get(TOKEN_ENV, "")
        if uri.userinfo:  # USER:PASSWORD@HOST is Milvus's own token form
            if self.lite:
                raise StoreError("milvus: Milvus Lite takes no user or password")
            from urllib.parse import unquote

            self.token = unquote(uri.userinfo)
        self.secrets = tuple(s for s in (*uri.secrets, self.token) if s)
        self.db = uri.option("db") or ""
        self.secure = flag(uri, "secure")
        if self.lite:
            if self.db or self.secure:
                raise StoreError("milvus: Milvus Lite has no db= or secure= (one .db folder is one database)")
            self.path = os.path.abspath(location.rstrip("/"))
            self.address = self.path
            self.where = self.path
        else:
            location = location.strip("/")
            host, _, port = location.rpartition(":") if ":" in location else (location, "", "")
            if not host or "/" in location:
                raise StoreError(f"milvus: {location!r} is neither HOST:PORT nor a Milvus Lite path ending in .db")
            try:
                number = int(port) if port else DEFAULT_PORT
            except ValueError:
                raise StoreError(f"milvus: {location!r} is not HOST:PORT") from None
            self.host, self.port = host.strip("[]"), number
            self.address = f"{'https' if self.secure else 'http'}://{host}:{number}"
            self.where = f"{host.lower()}:{number}" + (f"/{self.db}" if self.db else "")
            if self.db:
                check_name(self.db, "database")
        self.collection = check_name(uri.require("collection"), "collection")
        self.timeout = float(uri.bounded_int("timeout", 120, 1, 86_400))
        # None: the importer sizes requests by the row width (importer.request_rows)
        self.batch: int | None = uri.bounded_int("batch", 1, 1, 100_000) if uri.option("batch") else None
        # Milvus caps a query at 16,384 rows; None: the exporter sizes pages by the row width (exporter.page_rows)
        self.page: int | None = uri.bounded_int("page", 1, 1, MAX_QUERY_ROWS) if uri.option("page") else None
        self.concurrency = uri.bounded_int("concurrency", 1 if self.lite else 2, 1, 16)
        self.label = f"milvus {'lite ' if self.lite else ''}{self.where} collection {self.collection!r}"
        self._client: Any = None

    def identity(self) -> tuple[str, ...]:
        return (SCHEME, self.where, self.collection)

    # --- secrets and one-line errors ----------------------------------------------------------------

    def clean(self, text: str) -> str:
        return one_line(scrub(text, self.secrets))

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.label}: {doing}: {self.clean(message_of(exc))}")

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """pymilvus and gRPC errors become one-line StoreErrors without the token (and without their chain)."""
        return sdk_errors(raised_by("pymilvus", "grpc", "milvus_lite"), lambda exc: self.fail(doing, exc))

    # --- the client ---------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            pymilvus = sdk()
            if self.lite:
                require_sdk("milvus_lite", SCHEME)
                # Milvus Lite's gRPC server runs on this process's threads, and grpc logs each call it does not
                # implement (pymilvus asks for AllocTimestamp after creating an index) with a traceback.
                logging.getLogger("grpc._server").setLevel(logging.CRITICAL + 1)
                # Milvus Lite normalises cosine vectors with NumPy on its threads: a vector of huge magnitude
                # overflows its norm, and NumPy's warning would reach stderr (the data stay exact).
                warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"numpy\.linalg")
                if not os.path.isdir(os.path.dirname(self.path)):
                    raise StoreError(f"{self.label}: the folder {os.path.dirname(self.path)!r} does not exist")
            with self.errors("cannot connect"):
                kwargs: dict[str, Any] = {"uri": self.address, "timeout": self.timeout}
                if self.token:
                    kwargs["token"] = self.token
                if self.db:
                    kwargs["db_name"] = self.db
                if self.lite:
                    with _lite_lock:
                        _lite_users[self.path] = _lite_users.get(self.path, 0) + 1
                locked = ""
                try:
                    self._client = pymilvus.MilvusClient(**kwargs)
                except Exception as exc:
                    self._release_lite()
                    if not (self.lite and os.path.exists(os.path.join(self.path, "LOCK"))):
                        raise
                    locked = self.clean(message_of(exc))
                if locked:
                    # Raised here, without the client's error in its chain: a partitioned export's worker is
                    # refused at once rather than retried, since the job's own process holds the folder.
                    raise StoreError(f"{self.label}: cannot open it: {locked} (Milvus Lite opens a .db folder in one "
                                     "process at a time, so no export with --workers above 1: is another one using "
                                     "it?)")
        return self._client

    def describe(self, name: str | None = None) -> dict[str, Any] | None:
        """The collection's description (``describe_collection``), None when there is none."""
        client = self.client()
        name = name or self.collection
        with self.errors("cannot read the collection"):
            if not client.has_collection(name):
                return None
            return dict(client.describe_collection(name))

    def is_alias(self, name: str) -> bool:
        client = self.client()
        try:
            client.describe_alias(name)
        except Exception:
            return False
        return True

    def load(self, name: str | None = None) -> None:
        with self.errors("cannot load the collection"):
            self.client().load_collection(name or self.collection)

    def count(self, name: str | None = None) -> int:
        self.load(name)  # a server answers count(*) only for a loaded collection
        with self.errors("cannot count the rows"):
            found = self.client().query(name or self.collection, filter="", output_fields=["count(*)"])
        return int(found[0]["count(*)"]) if found else 0

    def close(self) -> None:
        if self._client is not None:
            with suppress(Exception):  # closing is best effort; Milvus Lite is released below
                self._client.close()
            self._client = None
            self._release_lite()

    def _release_lite(self) -> None:
        if not self.lite:
            return
        with _lite_lock:
            users = _lite_users.get(self.path, 0) - 1
            if users > 0:
                _lite_users[self.path] = users
                return
            _lite_users.pop(self.path, None)
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.path)  # stops its threads, releases the LOCK
        except Exception as exc:  # an older milvus-lite: it stops at exit
            log.debug("milvus: cannot release Milvus Lite for %s: %s", self.path, exc)


def message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    details = getattr(exc, "details", None)
    if callable(details):  # grpc.RpcError
        message = details() or message
    return str(message)


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def literal(value: str) -> str:
    """``value`` as a Milvus expression string literal (Milvus Lite has no expression templates): quotes,
    backslashes and line breaks escaped (a raw line break ends the literal)."""
    return '"' + value.translate(_ESCAPES) + '"'
