"""Where to connect and how to fail: the parsed URI (a database folder or a server's HOST:PORT) and its
options, the chromadb client, the collections, and client errors turned into one line without the token."""

from __future__ import annotations

import logging
import os
import re
import traceback
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

from vecfmt.errors import StoreError, one_line
from vecfmt.storage import scrub
from vecfmt.stores.base import StoreURI, require_sdk, sdk_errors
from vecfmt.stores.chroma.catalog import check_collection_name

SCHEME = "chroma"
log = logging.getLogger("vecfmt.chroma")

OPTIONS = {
    "collection", "tenant", "database", "ssl", "token_header",
    "batch", "concurrency",  # import
    "page",  # export
}  # fmt: skip
TOKEN_ENV = "CHROMA_TOKEN"
TOKEN_HEADERS = {"authorization": "Authorization", "x-chroma-token": "X-Chroma-Token"}
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
LIST_PAGE = 100
SDK_MODULES = ("chromadb", "chromadb_rust_bindings", "httpx", "httpcore", "h11")


def sdk() -> ModuleType:
    chromadb = require_sdk("chromadb", SCHEME)
    # The client logs warnings (ignored duplicate ids, deprecations) that would break one-line errors.
    logging.getLogger("chromadb").setLevel(logging.ERROR)
    return chromadb


def flag(uri: StoreURI, key: str) -> bool:
    value = (uri.option(key) or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise StoreError(f"chroma: option {key} must be true or false, not {value!r}")
    return value in ("true", "1", "yes")


class Target:
    """The parsed URI: a persistent database folder or a server, tenant, database, the collection, the
    token (kept secret), the options; and the client, opened once."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        uri.check_options(OPTIONS, see="docs/chroma.md")
        if uri.userinfo:
            raise StoreError(f"chroma: put the token in {TOKEN_ENV}, not in the URI")
        location = uri.host_location
        self.path: Path | None = None
        self.host = ""
        self.port = 0
        if location[:1] in ("/", ".", "~"):
            self.path = Path(location).expanduser().resolve()
            self.where = str(self.path)
        elif match := HOST_PORT.match(location.rstrip("/")):
            self.host, self.port = match.group(1).strip("[]"), int(match.group(2))
            if not 0 < self.port < 65536:
                raise StoreError(f"chroma: {location!r}: the port must be between 1 and 65535")
            self.where = f"{self.host}:{self.port}"
        else:
            raise StoreError(f"chroma: {location!r} is neither a database folder (start it with /, ./ or ~: "
                             "chroma:///abs/path or chroma://./rel/path) nor a server's HOST:PORT "
                             "(chroma://localhost:8000)")
        self.ssl = flag(uri, "ssl")
        if self.ssl and self.path is not None:
            raise StoreError("chroma: ssl= applies to a server (chroma://HOST:PORT), not to a database folder")
        self.tenant = uri.option("tenant") or "default_tenant"
        self.database = uri.option("database") or "default_database"
        self.collection = check_collection_name(uri.require("collection"))
        header = (uri.option("token_header") or "authorization").lower()
        if header not in TOKEN_HEADERS:
            raise StoreError(f"chroma: token_header must be authorization or x-chroma-token, not {header!r}")
        self.token_header = TOKEN_HEADERS[header]
        self.token = os.environ.get(TOKEN_ENV, "")
        self.batch = uri.bounded_int("batch", 5000, 1, 100_000)
        self.page = uri.bounded_int("page", 5000, 1, 100_000)
        self.concurrency = uri.bounded_int("concurrency", 1 if self.path is not None else 2, 1, 16)
        kind = "database" if self.path is not None else "server"
        scope = "" if (self.tenant, self.database) == ("default_tenant", "default_database") else \
            f" ({self.tenant}/{self.database})"  # fmt: skip
        self.label = f"chroma {kind} {self.where}{scope}"
        self._client: Any = None

    # --- secrets and one-line errors ----------------------------------------------------------------

    def clean(self, text: str) -> str:
        """``text`` on one line, the token removed wherever it appears."""
        text = scrub(text, [self.token] if self.token else [])
        text = re.sub(r"(bearer\s+)\S+", r"\1***", text, flags=re.IGNORECASE)
        return one_line(text)

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        message = str(exc).strip() or type(exc).__name__
        return StoreError(f"{self.label}: {doing}: {self.clean(message)}")

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """Errors raised inside the client (its own, httpx's, and the ValueErrors of its checks) become
        one-line StoreErrors without the token; vecfmt's own errors and bugs pass through."""
        return sdk_errors(_from_sdk, lambda exc: self.fail(doing, exc))

    # --- the client and collections ----------------------------------------------------------------

    def client(self, *, create: bool = True) -> Any:
        """The client; for a folder that does not exist, ``create=False`` refuses instead of creating it."""
        if self._client is None:
            chromadb = sdk()
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            if self.path is not None:
                if not create and not self.path.is_dir():
                    raise StoreError(f"{self.label}: no such folder")
                with self.errors("cannot open the database"):
                    self._client = chromadb.PersistentClient(path=str(self.path), settings=settings,
                                                             tenant=self.tenant, database=self.database)
            else:
                headers = {}
                if self.token:
                    value = f"Bearer {self.token}" if self.token_header == "Authorization" else self.token
                    headers[self.token_header] = value
                with self.errors("cannot connect"):
                    self._client = chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl, headers=headers,
                                                       settings=settings, tenant=self.tenant,
                                                       database=self.database)  # fmt: skip
        return self._client

    def get(self, name: str) -> Any | None:
        """The collection ``name``, None when there is none."""
        client = self.client()
        with self.errors(f"cannot read the collection {name!r}"):
            try:
                return client.get_collection(name, embedding_function=None)
            except Exception as exc:
                if type(exc).__name__ == "NotFoundError" or "does not exist" in str(exc):
                    return None
                raise

    def list(self) -> list[Any]:
        """Every collection, page by page (a server may cap one answer)."""
        found: list[Any] = []
        with self.errors("cannot list the collections"):
            while True:
                page = list(self.client().list_collections(limit=LIST_PAGE, offset=len(found)))
                found.extend(page)
                if len(page) < LIST_PAGE:
                    return found

    def max_batch(self) -> int:
        with self.errors("cannot read the server's batch limit"):
            return int(self.client().get_max_batch_size())

    def close(self) -> None:
        if self._client is not None:
            close = getattr(self._client, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # closing must not hide the error that ended the run
                    log.debug("chroma: closing the client: %s", self.clean(str(exc)))
            self._client = None


def _from_sdk(exc: BaseException) -> bool:
    """Raised by the client (or its HTTP library), as opposed to a bug in vecfmt."""
    if type(exc).__module__.split(".")[0] in SDK_MODULES:
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(f"{os.sep}{m}{os.sep}" in frames[-1].filename for m in SDK_MODULES)
