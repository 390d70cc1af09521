"""Where to connect and how to fail: the parsed URI and its options, the client (a server over REST or gRPC,
or local mode on a folder), and client errors turned into one line without the API key."""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from contextlib import AbstractContextManager
from typing import Any

from vecfmt.errors import StoreError, one_line
from vecfmt.storage import scrub, secret_forms
from vecfmt.stores.base import StoreURI, require_sdk, sdk_errors

SCHEME = "qdrant"
log = logging.getLogger("vecfmt.qdrant")

OPTIONS = {
    "collection", "local", "grpc", "grpc_port", "https", "api_key", "timeout",  # where
    "vector", "sparse", "document",  # both ways
    "concurrency", "batch", "page",  # import / export tuning
}  # fmt: skip
SERVER_ONLY = ("grpc", "grpc_port", "https", "api_key")
INVALID_NAME_CHARS = '<>:"/\\|?*\0\u001f'  # what Qdrant refuses in collection and vector names
LOCAL_PREFIXES = ("/", "./", "../", "~")
SERVER_PAGE = 1000  # export: points per scroll page on a server
LOCAL_PAGE = 10_000  # and in local mode (measured: docs/qdrant.md, Performance)

# Local mode allows one client per folder and process (an exclusive lock): every exporter and importer of
# one folder in this process shares it (a copy between two collections of one folder needs that).
_local_lock = threading.Lock()
_local_clients: dict[str, list[Any]] = {}  # real path -> [client, users]


def flag(uri: StoreURI, key: str) -> bool:
    value = (uri.option(key) or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise StoreError(f"qdrant: option {key} must be true or false, not {value!r}")
    return value in ("true", "1", "yes")


def check_name(name: str, what: str) -> str:
    bad = next((c for c in INVALID_NAME_CHARS if c in name), None)
    if not name or name in (".", "..") or bad is not None or len(name.encode()) > 255:
        shown = f"holds {bad!r}" if bad is not None else "is empty, '.', '..' or longer than 255 bytes"
        raise StoreError(f"qdrant: {what} {name!r} is not a valid Qdrant name (it {shown})")
    return name


class Target:
    """The parsed URI: a server (HOST:PORT, REST or gRPC, key kept secret) or a local-mode folder; the
    collection; the tuning options."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        uri.check_options(OPTIONS, see="docs/qdrant.md")
        if uri.userinfo:
            raise StoreError("qdrant: put the API key in QDRANT_API_KEY (or api_key=), not before the host")
        location = uri.host_location
        self.local = flag(uri, "local") or location.startswith(LOCAL_PREFIXES) or location in (".", "..")
        self.collection = check_name(uri.require("collection"), "collection")
        self.timeout = uri.bounded_int("timeout", 60, 1, 3600)
        self.batch = uri.bounded_int("batch", 256, 1, 10_000)
        self.api_key = ""
        # Local mode sorts and walks every point id on each scroll request, so an export's cost grows with the
        # number of pages: fewer, larger ones there (the core's batch, 10,000 by default, still caps a page).
        self.page = uri.bounded_int("page", LOCAL_PAGE if self.local else SERVER_PAGE, 1, 100_000)
        if self.local:
            given = [k for k in SERVER_ONLY if k in uri.options]
            if given:
                raise StoreError(f"qdrant: option {given[0]} is for a server; {location!r} is a local-mode folder")
            if not location:
                raise StoreError("qdrant: local mode needs a folder (qdrant:///abs/path or qdrant://./rel/path)")
            self.path = os.path.realpath(os.path.expanduser(location))
            # Local mode applies writes one at a time in-process (each point a SQLite commit): one writer.
            self.concurrency = uri.bounded_int("concurrency", 1, 1, 1)
            self.where = self.path
            self.label = f"qdrant local {self.path} collection {self.collection!r}"
        else:
            host, _, port = location.strip("/").rpartition(":") if ":" in location else (location.strip("/"), "", "")
            self.host = host.strip("[]") or "localhost"
            try:
                self.port = int(port) if port else 6333
            except ValueError:
                raise StoreError(f"qdrant: {location!r} is not HOST:PORT (a local folder starts with / or ./)") \
                    from None
            self.grpc = flag(uri, "grpc")
            self.grpc_port = uri.bounded_int("grpc_port", 6334, 1, 65535)
            self.https = flag(uri, "https")
            self.api_key = uri.option("api_key") or os.environ.get("QDRANT_API_KEY", "")
            self.concurrency = uri.bounded_int("concurrency", 2, 1, 32)
            self.where = f"{self.host}:{self.port}"  # the same server whether it is reached by REST or gRPC
            via = f" (gRPC :{self.grpc_port})" if self.grpc else ""
            self.label = f"qdrant {self.where}{via} collection {self.collection!r}"
        self._client: Any = None

    # --- secrets and one-line errors ----------------------------------------------------------------

    @property
    def secrets(self) -> list[str]:
        typed = re.findall(r"(?:^|[?&])api_key=([^&]*)", self.uri.raw)  # the option as written in the URI
        return [*secret_forms(self.api_key), *(f for t in typed for f in secret_forms(t)), *self.uri.secrets]

    def clean(self, text: str) -> str:
        """``text`` on one line, the API key removed wherever it appears."""
        return one_line(scrub(text, self.secrets))

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.label}: {doing}: {self.clean(message_of(exc))}")

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """Client errors become one-line StoreErrors without the key (and without their chain). Local mode
        raises plain ValueError/RuntimeError/KeyError for refused input, so these blocks hold client calls only."""
        return sdk_errors(_from_client, lambda exc: self.fail(doing, exc))

    # --- the client ----------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            self._client = self._open_local() if self.local else self._open_server()
        return self._client

    def _open_server(self) -> Any:
        qdrant_client = require_sdk("qdrant_client", SCHEME)
        with warnings.catch_warnings(), self.errors("cannot connect"):
            # The client warns on stderr about a key over plain http and about version differences.
            warnings.simplefilter("ignore")
            client = qdrant_client.QdrantClient(
                host=self.host, port=self.port, grpc_port=self.grpc_port, prefer_grpc=self.grpc,
                https=self.https, api_key=self.api_key or None, timeout=self.timeout, check_compatibility=False,
            )  # fmt: skip
            client.get_collections()  # reachable, and the key is accepted
        return client

    def _open_local(self) -> Any:
        qdrant_client = require_sdk("qdrant_client", SCHEME)
        # Past 20,000 points the client warns on stderr at every open and upsert; vecfmt keeps stderr one line.
        warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
        with _local_lock:
            held = _local_clients.get(self.path)
            if held is not None:
                held[1] += 1
                return held[0]
            locked = False
            try:
                # One writer thread at a time uses it (the pool of AcknowledgedWrites), so SQLite's same-thread
                # check may go: the connection is made here and used there.
                client = qdrant_client.QdrantClient(path=self.path, force_disable_check_same_thread=True)
            except RuntimeError as exc:
                if "already accessed" not in str(exc):
                    raise self.fail("cannot open the folder", exc) from None
                locked = True
            except (ValueError, OSError) as exc:
                raise self.fail("cannot open the folder", exc) from None
            if locked:
                # Raised here, without the lock's OSError in its chain: a partitioned export's worker is refused
                # at once rather than retried, since the job's own process holds the folder until it ends.
                raise StoreError(f"{self.label}: the folder is open in another process (local mode locks it: one "
                                 "process at a time, so no export with --workers above 1; use a Qdrant server for "
                                 "concurrent access)")
            _local_clients[self.path] = [client, 1]
            return client

    def exists_on_disk(self) -> bool:
        return not self.local or os.path.exists(os.path.join(self.path, "meta.json"))

    def close(self) -> None:
        if self._client is None:
            return
        if self.local:
            with _local_lock:
                held = _local_clients.get(self.path)
                if held is not None and held[0] is self._client:
                    held[1] -= 1
                    if held[1] == 0:
                        del _local_clients[self.path]
                        self._client.close()
        else:
            self._client.close()
        self._client = None

    # --- collections and aliases ---------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        with self.errors("cannot list the aliases"):
            return {a.alias_name: a.collection_name for a in self.client().get_aliases().aliases}

    def resolve(self, name: str | None = None) -> tuple[str | None, bool]:
        """The collection ``name`` (default: the URI's) stands for, and whether it is an alias; (None, False)
        when there is none."""
        name = name or self.collection
        aliases = self.aliases()
        if name in aliases:
            return aliases[name], True
        with self.errors("cannot read the collections"):
            names = {c.name for c in self.client().get_collections().collections}
        return (name, False) if name in names else (None, False)

    def identity(self) -> tuple[str, ...]:
        real, _ = self.resolve()
        return (SCHEME, self.where.lower() if not self.local else self.where, real or self.collection)


def message_of(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):  # grpc.RpcError
        code = exc.code()  # type: ignore[attr-defined]
        return f"{details() or ''} (gRPC {getattr(code, 'name', code)})"
    content = getattr(exc, "content", None)  # qdrant_client's UnexpectedResponse: the server's JSON reason
    status = getattr(exc, "status_code", None)
    if isinstance(content, bytes) and status is not None:
        return f"HTTP {status}: {content.decode('utf-8', 'replace')}"
    source = getattr(exc, "source", None)  # ResponseHandlingException wraps the transport error
    if isinstance(source, BaseException):
        return message_of(source)
    return str(exc) or type(exc).__name__


def _from_client(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("qdrant_client", "grpc", "httpx", "httpcore") or isinstance(
        exc, (ValueError, RuntimeError, KeyError, AssertionError, OSError))
