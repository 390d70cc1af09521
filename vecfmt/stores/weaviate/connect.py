"""Where to connect and how to fail: the parsed URI and its options, the v4 client (schema, tenants,
counts), the gRPC stub the data moves through, and client errors turned into one line without the key."""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, TypeVar

from vecfmt.errors import StoreError, one_line
from vecfmt.storage import scrub
from vecfmt.stores.base import StoreURI, raised_by, require_sdk, sdk_errors

SCHEME = "weaviate"
log = logging.getLogger("vecfmt.weaviate")
T = TypeVar("T")

OPTIONS = {
    "collection", "grpc_port", "secure", "timeout", "retries",
    "document", "id_property", "vector",  # both ways
    "concurrency", "batch", "page",  # import / export tuning
}  # fmt: skip
COLLECTION_NAME = re.compile(r"^[A-Za-z][_0-9A-Za-z]{0,254}$")  # Weaviate's class name rule
GRPC_MAX_MESSAGE = 512 * 1024 * 1024


def sdk() -> ModuleType:
    """``weaviate``, imported quietly: authlib (a dependency) forces a deprecation warning onto stderr at
    import, which would break the one-line error contract."""
    with warnings.catch_warnings(record=True):
        return require_sdk("weaviate", SCHEME)


def proto() -> tuple[ModuleType, ...]:
    """The client's own protobuf modules (chosen by it for the installed protobuf)."""
    sdk()
    from weaviate.proto.v1 import (  # type: ignore[attr-defined]
        base_pb2,
        batch_pb2,
        properties_pb2,
        search_get_pb2,
        weaviate_pb2_grpc,
    )

    return base_pb2, batch_pb2, properties_pb2, search_get_pb2, weaviate_pb2_grpc


def flag(uri: StoreURI, key: str) -> bool:
    value = (uri.option(key) or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise StoreError(f"weaviate: option {key} must be true or false, not {value!r}")
    return value in ("true", "1", "yes")


def collection_name(name: str) -> str:
    """Weaviate's form of a collection name (it upper-cases the first letter), or a one-line refusal."""
    if not COLLECTION_NAME.match(name):
        raise StoreError(f"weaviate: {name!r} is not a valid collection name (a letter, then letters, digits "
                         "or _; at most 255 characters)")
    return name[0].upper() + name[1:]


class Target:
    """The parsed URI: HTTP and gRPC endpoints, the collection, the API key (kept secret), the options."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        uri.check_options(OPTIONS, see="docs/weaviate.md")
        if uri.userinfo:
            raise StoreError("weaviate: put the API key in WEAVIATE_API_KEY, not in the URI")
        location = uri.host_location.strip("/")
        host, _, port = location.rpartition(":") if ":" in location else (location, "", "")
        self.host = host.strip("[]") or "localhost"
        self.secure = flag(uri, "secure")
        try:
            self.port = int(port) if port else (443 if self.secure else 8080)
        except ValueError:
            raise StoreError(f"weaviate: {location!r} is not HOST:PORT") from None
        self.grpc_port = uri.bounded_int("grpc_port", 443 if self.secure else 50051, 1, 65535)
        self.collection = collection_name(uri.require("collection"))
        self.timeout = float(uri.option("timeout") or 120)
        self.retries = uri.bounded_int("retries", 3, 0, 20)
        self.concurrency = uri.bounded_int("concurrency", 2, 1, 16)
        self.batch = uri.bounded_int("batch", 500, 1, 10_000)
        self.page = uri.bounded_int("page", 1000, 1, 10_000)
        self.api_key = os.environ.get("WEAVIATE_API_KEY", "")
        self.where = f"{self.host}:{self.port}"
        self.label = f"weaviate {self.where} collection {self.collection!r}"
        self._client: Any = None
        self._channel: Any = None
        self._stub: Any = None

    # --- secrets and one-line errors ----------------------------------------------------------------

    def clean(self, text: str) -> str:
        """``text`` on one line, the API key removed wherever it appears."""
        text = scrub(text, [self.api_key] if self.api_key else [])
        text = re.sub(r"(bearer\s+)\S+", r"\1***", text, flags=re.IGNORECASE)
        return one_line(text)

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.label}: {doing}: {self.clean(message_of(exc))}")

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """Client and gRPC errors become one-line StoreErrors without the key (and without their chain)."""
        return sdk_errors(raised_by("weaviate", "grpc", "httpx", "httpcore"), lambda exc: self.fail(doing, exc))

    # --- the client (schema, tenants, counts) and the gRPC stub (data) --------------------------------

    def client(self) -> Any:
        if self._client is None:
            weaviate = sdk()
            from weaviate.classes.init import AdditionalConfig, Timeout

            auth = weaviate.auth.Auth.api_key(self.api_key) if self.api_key else None
            with self.errors("cannot connect"):
                # skip_init_checks: the client's start-up checks would also reach the internet (PyPI)
                self._client = weaviate.connect_to_custom(
                    http_host=self.host, http_port=self.port, http_secure=self.secure,
                    grpc_host=self.host, grpc_port=self.grpc_port, grpc_secure=self.secure,
                    auth_credentials=auth, skip_init_checks=True,
                    additional_config=AdditionalConfig(timeout=Timeout(init=10, query=self.timeout,
                                                                       insert=self.timeout)),
                )  # fmt: skip
                self._client.collections.list_all(simple=True)  # reachable, and the key is accepted
        return self._client

    def stub(self) -> Any:
        """The gRPC stub of Weaviate's API, on a channel of our own: the client's batch and query paths
        turn every vector into a Python list (struct.pack / unpack per float); this one sends and reads
        the little-endian float32 bytes straight from and into NumPy."""
        if self._stub is None:
            import grpc

            *_, weaviate_pb2_grpc = proto()
            options = [("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
                       ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE)]
            address = f"{self.host}:{self.grpc_port}"
            if self.secure:
                self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
            else:
                self._channel = grpc.insecure_channel(address, options=options)
            self._stub = weaviate_pb2_grpc.WeaviateStub(self._channel)
        return self._stub

    def definition(self, collection: str) -> dict[str, Any] | None:
        """A collection's definition as Weaviate's REST API gives it (GET /v1/schema/NAME), None when there
        is none: the exact JSON that POST /v1/schema takes back (the client's ``to_dict`` renames keys)."""
        import httpx

        scheme = "https" if self.secure else "http"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with self.errors("cannot read the collection"):
            response = httpx.get(f"{scheme}://{self.where}/v1/schema/{collection}", headers=headers,
                                 timeout=self.timeout)  # fmt: skip
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise StoreError(f"{self.label}: cannot read the collection: HTTP {response.status_code}: "
                             f"{self.clean(response.text)}")
        return dict(response.json())

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.api_key}")] if self.api_key else []

    def rpc(self, doing: str, method: Callable[..., T], request: Any) -> T:
        """One gRPC call, retried with backoff while the server is unavailable or overloaded."""
        import grpc

        retry = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
        for attempt in range(self.retries + 1):
            try:
                return method(request, metadata=self.metadata(), timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() not in retry or attempt == self.retries:
                    raise self.fail(doing, exc) from None
                log.info("weaviate: %s: retrying after %s", doing, self.clean(message_of(exc)))
                time.sleep(min(0.5 * 2**attempt, 8))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
        if self._client is not None:
            self._client.close()
            self._client = None


def message_of(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):  # grpc.RpcError
        code = exc.code()  # type: ignore[attr-defined]
        return f"{details() or ''} (gRPC {getattr(code, 'name', code)})"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message)
