"""Where to connect and how to fail: the parsed URI and its options, the SDK clients, retries, and SDK
errors turned into one line with the API key removed (by value, wherever it appears)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from vecfmt.errors import StoreError, one_line
from vecfmt.storage import scrub
from vecfmt.stores.base import StoreURI, require_sdk, sdk_errors

SCHEME = "pinecone"
log = logging.getLogger("vecfmt.pinecone")

OPTIONS = {
    "api_key", "host", "controller_host", "grpc", "concurrency", "retries", "timeout",
    # export
    "strict", "ids_file", "ids_column", "prefixes", "document_key", "document",
    # import
    "create", "cloud", "region", "kind", "bulk", "error_mode", "state_dir", "replace_deletes_first",
}  # fmt: skip
T = TypeVar("T")


def flag(uri: StoreURI, key: str) -> bool:
    value = (uri.option(key) or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise StoreError(f"pinecone: option {key} must be true or false, not {value!r}")
    return value in ("true", "1", "yes")


class Target:
    """The parsed URI: index name, hosts, the API key (kept secret) and the store options."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        uri.check_options(OPTIONS, see="docs/pinecone.md")
        self.name = uri.location.strip("/")
        self.host = uri.option("host") or None
        if not self.name and not self.host:
            raise StoreError("pinecone: name the index (pinecone://INDEX_NAME) or give its host= option")
        self.api_key = uri.option("api_key") or os.environ.get("PINECONE_API_KEY", "")
        if not self.api_key:
            raise StoreError("pinecone: no API key: set PINECONE_API_KEY (or the api_key= option)")
        self.controller_host = uri.option("controller_host") or None
        self.grpc = flag(uri, "grpc")
        self.concurrency = uri.bounded_int("concurrency", 4, 1, 32)
        self.retries = uri.bounded_int("retries", 8, 0, 50)
        self.timeout = float(uri.option("timeout") or 60)
        self.label = f"index {self.name!r}" if self.name else f"index at {self.clean(self.host or '')}"
        self._client: Any = None

    # --- secrets and one-line errors ----------------------------------------------------------------

    def clean(self, text: str) -> str:
        """``text`` on one line, the API key removed wherever it appears."""
        text = scrub(text, [self.api_key, *self.uri.secrets])
        text = re.sub(r"(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",&]+", r"\1***", text, flags=re.IGNORECASE)
        return one_line(text)

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"pinecone {self.label}: {doing}: {self.clean(message_of(exc))}")

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """SDK errors become one-line StoreErrors without the key (and without their cause chain)."""
        from_sdk = lambda exc: type(exc).__module__.startswith(("pinecone", "httpx", "grpc"))  # noqa: E731
        return sdk_errors(from_sdk, lambda exc: self.fail(doing, exc))

    # --- clients ------------------------------------------------------------------------------------

    def client(self) -> Any:
        """The control-plane client (``Pinecone``): SDK retries on, our own timeout."""
        if self._client is None:
            pinecone = require_sdk("pinecone", SCHEME)
            with self.errors("cannot create the client"):
                self._client = pinecone.Pinecone(api_key=self.api_key, host=self.controller_host,
                                                 timeout=self.timeout, source_tag="vecfmt",
                                                 grpc_scheme="http" if _plain_http(self.host) else None)
        return self._client

    def data_plane(self, host: str) -> Any:
        with self.errors("cannot open the index"):
            return self.client().index(host=host, grpc=self.grpc)

    def call(self, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` retried on 429, 5xx and dropped connections.

        The SDK's REST transport already retries these (decorrelated jitter, ``Retry-After`` honoured),
        but on the data plane only with its fixed default policy (3 retries, and a per-host retry
        budget that stops retrying during a burst of failures: ``Index`` takes no ``retry_config``).
        A long import must outlast more than that, so tenacity retries what the SDK gave up on:
        exponential backoff with full jitter, at least the server's ``Retry-After``."""
        tenacity = require_sdk("tenacity", SCHEME)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(transient),
            wait=_RetryAfter(tenacity.wait_random_exponential(multiplier=0.5, max=30)),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            before_sleep=lambda state: log.info("pinecone: %s: retrying after %s", doing,
                                                self.clean(message_of(state.outcome.exception()))),
            reraise=True,
        )
        with self.errors(doing):
            return retrying(fn, *args, **kwargs)


class _RetryAfter:
    """A tenacity wait: the jittered backoff, but never less than the server's ``Retry-After``."""

    def __init__(self, backoff: Any) -> None:
        self.backoff = backoff

    def __call__(self, state: Any) -> float:
        wait = float(self.backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        after = getattr(exc, "retry_after", None)
        return max(wait, float(after)) if isinstance(after, (int, float)) else wait


def transient(exc: BaseException) -> bool:
    """Worth another try: throttled, a server error, a dropped or timed-out connection."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status == 408 or 500 <= status <= 599
    name = type(exc).__name__
    return name in ("PineconeConnectionError", "PineconeTimeoutError") or type(exc).__module__.startswith("httpx")


def message_of(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{message} (HTTP {status})" if isinstance(status, int) else str(message)


def _plain_http(host: str | None) -> bool:
    return bool(host) and str(host).startswith("http://")
