"""OpenAI embeddings through the official ``openai`` client, with vecfmt's own packing and retry rules.

Rules (docs/reembed.md says the same for users):

- Packing. A request holds at most 2,048 inputs and at most 300,000 tokens (catalog.py). No tokenizer
  is available offline (tiktoken fetches its BPE files at run time), so a text's tokens are bounded by
  its UTF-8 length: every byte-level BPE token covers at least one byte. A request's texts are packed
  until their bytes would pass 300,000, so a request never passes the token limit. Texts of more than
  8,192 bytes might pass the per-input limit: each goes in a request of its own, so the server's
  answer about it concerns it alone. The server stays the authority: a 400 for a request's total
  splits the request in two and sends both halves.
- Over-long inputs (the server's 400 "maximum context length"): refused by default with
  ``InputTooLongError`` (the caller names the row); with ``truncate`` the text is cut to a prefix
  (scaled by limit / tokens the server reported, else halved, at a character boundary) and sent
  again, until the server accepts it.
- Retries are vecfmt's, the client's own are off (``max_retries=0``): 429, 500, 502, 503, 504 and
  connection failures (refused, reset, dropped mid-response, timed out) are retried up to
  ``max_retries`` times per request. The wait is ``retry-after-ms`` or ``Retry-After`` when the
  server sends one; else, for a 429, the ``x-ratelimit-reset-requests`` / ``-tokens`` of the exhausted
  limit; else 0.5 s x 2^attempt with up to 25 % jitter, at most 30 s. A 429's wait pauses every
  request in flight, not only the one refused, and a response saying a limit has 0 remaining pauses
  new requests until that limit resets.
- Responses are asked for in base64 and decoded with ``np.frombuffer`` straight into the batch's
  matrix (no Python floats); tokens are summed from each response's ``usage``.
- The API key is held by the client and never put in a message: errors are built from the status,
  the error code and the server's message with the key scrubbed out (and no message at all for 401).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from vecfmt.embed import DEFAULT_CONCURRENCY, EmbedError, EmbedStats, InputTooLongError, catalog
from vecfmt.errors import first_line, one_line
from vecfmt.storage import redact, scrub

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 30.0
# Byte length at or under which a text surely fits the per-input token limit (tokens <= bytes).
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_REQUESTED = re.compile(r"requested (\d+) tokens")
_LIMIT = re.compile(r"maximum context length is (\d+) tokens")


def parse_duration(text: str | None) -> float | None:
    """Seconds of an ``x-ratelimit-reset-*`` value such as ``1s``, ``6m0s``, ``20ms``, ``1.5s``."""
    if not text:
        return None
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after(headers: Any) -> float | None:
    """The server's own wait: ``retry-after-ms``, else ``Retry-After`` in seconds (or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def rate_limit_wait(headers: Any) -> float | None:
    """How long until an exhausted limit resets: the reset of each limit whose remaining is 0, or when
    none says 0 (a 429 all the same), the longer of the two resets."""
    if headers is None:
        return None
    waits, exhausted = [], []
    for kind in ("requests", "tokens"):
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        waits.append(reset)
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
            exhausted.append(reset)
    if exhausted:
        return max(exhausted)
    return max(waits) if waits else None


def backoff(attempt: int) -> float:
    return min(0.5 * 2.0**attempt, MAX_BACKOFF) * (1 - 0.25 * random.random())


class _Halted(Exception):
    """Another request of the stream failed for good: this one is not sent (nor retried)."""


class _TooManyTokens(Exception):
    """The server's 400 for a request's summed tokens: split the request."""


class _TooLong(Exception):
    """The server's 400 for an input over the model's limit; the limit and the input's tokens as the
    message says them (None where it does not)."""

    def __init__(self, limit: int | None, requested: int | None) -> None:
        super().__init__()
        self.limit, self.requested = limit, requested


class OpenAIEmbedder:
    """``Embedder`` for OpenAI's embeddings API (or any server that speaks it, through ``base_url``)."""

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        dimensions: int | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int = 6,
        truncate: bool = False,
        timeout: float = 120.0,
        max_inputs_per_request: int | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise EmbedError("the openai package is not installed: pip install 'vecfmt[openai]'") from None
        self._openai = openai
        self.model = model
        info = catalog.lookup(model)
        self.info = info
        flexible = info.flexible_dims if info is not None else model.startswith("text-embedding-3")
        if dimensions is not None:
            if not flexible:
                raise EmbedError(f"{model} does not take a dimensions setting (only text-embedding-3 models "
                                 "and later do); leave it out")
            if dimensions < 1 or (info is not None and dimensions > info.dims):
                top = f"1..{info.dims}" if info is not None else "at least 1"
                raise EmbedError(f"dimensions must be {top} for {model}, not {dimensions}")
        self.dimensions = dimensions
        self._dims = dimensions or (info.dims if info is not None else None)
        self.max_input_tokens = info.max_input_tokens if info is not None else 8192
        self.max_inputs = min(max_inputs_per_request or catalog.OPENAI_MAX_INPUTS_PER_REQUEST,
                              catalog.OPENAI_MAX_INPUTS_PER_REQUEST)
        self.max_request_tokens = catalog.OPENAI_MAX_TOKENS_PER_REQUEST
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.truncate = truncate
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            raise EmbedError("no OpenAI API key: set OPENAI_API_KEY (or pass api_key)")
        self._secrets = [key]
        url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.where = redact(url, self._secrets) if url else "the OpenAI API"
        # The client's own retries are off: the rules above are vecfmt's, in one place.
        self._client = openai.OpenAI(api_key=key, base_url=url, max_retries=0, timeout=timeout)
        self.stats = EmbedStats()
        self._lock = threading.Lock()
        self._not_before = 0.0  # monotonic time before which no request is sent (a 429's wait)
        self._halt = threading.Event()  # set when a request of the stream failed for good
        self._failed: BaseException | None = None  # the first such failure

    @property
    def dims(self) -> int:
        """The output dimension: from the catalog or ``dimensions``; for a model vecfmt does not know,
        from one probe request (a two-word text, its tokens counted in ``stats``)."""
        if self._dims is None:
            self._dims = int(self._request(["dimension probe"], 0).shape[1])
        return self._dims

    def close(self) -> None:
        self._client.close()

    # --- the stream -----------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return next(self.embed_batches([texts]))

    def embed_batches(self, batches: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        """Batches are split into requests (``pack``); up to ``concurrency`` requests run at once and up
        to twice that many are queued, so the pool never waits on the caller; matrices come out in
        batch order."""
        self._halt, self._failed = threading.Event(), None
        dims = self.dims
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vecfmt-embed")
        pending: deque[tuple[np.ndarray, list[tuple[int, int, Future[np.ndarray]]]]] = deque()
        queued = 0
        try:
            for number, texts in enumerate(batches):
                out = np.empty((len(texts), dims), dtype=np.float32)
                jobs = [(start, stop, pool.submit(self._job, texts, start, stop, number))
                        for start, stop in self.pack(texts)]
                pending.append((out, jobs))
                queued += len(jobs)
                while pending and (queued > 2 * self.concurrency or _all_done(pending[0][1])):
                    queued -= len(pending[0][1])
                    yield _collect(*pending.popleft())
            while pending:
                yield _collect(*pending.popleft())
        finally:
            # Queued requests are dropped; one already sent finishes (its answer is lost: the caller
            # failed), so no thread outlives this call and nothing is sent after it.
            self._halt.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def pack(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Consecutive ``(start, stop)`` ranges of ``texts``, one per request (rules in the module doc).
        The byte lengths are measured text by text: Python's str API has no vectorised UTF-8 length."""
        groups: list[tuple[int, int]] = []
        start, budget = 0, 0
        for i, text in enumerate(texts):
            size = len(text.encode("utf-8"))
            alone = size > self.max_input_tokens
            if i > start and (alone or i - start >= self.max_inputs or budget + size > self.max_request_tokens):
                groups.append((start, i))
                start, budget = i, 0
            budget += size
            if alone:
                groups.append((i, i + 1))
                start, budget = i + 1, 0
        if start < len(texts):
            groups.append((start, len(texts)))
        return groups

    def _job(self, texts: Sequence[str], start: int, stop: int, batch: int) -> np.ndarray:
        try:
            return self._embed_group(texts, start, stop, batch)
        except _Halted:
            # another request failed (perhaps of a later batch): that failure is what the caller sees
            if self._failed is not None:
                raise self._failed from None
            raise
        except BaseException as exc:
            with self._lock:
                self._failed = self._failed or exc
            self._halt.set()  # here, in the worker, before it takes the next queued request
            raise

    def _embed_group(self, texts: Sequence[str], start: int, stop: int, batch: int) -> np.ndarray:
        """Rows ``start:stop`` of a batch, splitting the request when the server says it is too big.
        Building the list of input strings is forced by the client's API (it takes a list of str)."""
        try:
            return self._request(list(texts[start:stop]), batch)
        except _TooManyTokens:
            if stop - start == 1:
                raise EmbedError(f"{self.where} refused one input as more than {self.max_request_tokens:,} "
                                 "tokens per request") from None
        except _TooLong as exc:
            if stop - start == 1:
                return self._embed_too_long(texts[start], exc, batch, start)
        with self._lock:
            self.stats.retries += 1
        middle = (start + stop) // 2  # the halves are each fine or split again: 400s are not billed
        return np.concatenate([self._embed_group(texts, start, middle, batch),
                               self._embed_group(texts, middle, stop, batch)])

    def _embed_too_long(self, text: str, refusal: _TooLong, batch: int, position: int) -> np.ndarray:
        limit = refusal.limit or self.max_input_tokens
        if not self.truncate:
            shown = f" ({refusal.requested:,} tokens)" if refusal.requested else ""
            raise InputTooLongError(f"is longer than {self.model}'s limit of {limit:,} tokens{shown}",
                                    batch, position)
        for _ in range(64):  # every cut takes at least a character, most halve or better
            if len(text) <= 1:
                break
            limit = refusal.limit or self.max_input_tokens
            scale = limit / refusal.requested * 0.95 if refusal.requested else 0.5
            if scale >= 1:  # numbers that say it fits, yet refused: halve
                scale = 0.5
            text = text[: max(1, int(len(text) * scale))]
            with self._lock:
                self.stats.retries += 1
            try:
                return self._request([text], batch)
            except _TooLong as exc:
                refusal = exc
        raise EmbedError(f"{self.where} refused every prefix of an input of batch {batch}, row {position}, as too "
                         "long")

    # --- one request ----------------------------------------------------------------------------

    def _request(self, texts: list[str], batch: int) -> np.ndarray:
        openai = self._openai
        kwargs: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions is not None else {}
        attempt = 0
        while True:
            self._wait_turn()
            if self._halt.is_set():
                raise _Halted()
            try:
                raw = self._client.embeddings.with_raw_response.create(
                    input=texts, model=self.model, encoding_format="base64", **kwargs)
                body = raw.http_response.content
                headers = raw.headers
            except openai.APIStatusError as exc:
                status, headers = exc.status_code, exc.response.headers
                if status in RETRY_STATUSES and attempt < self.max_retries:
                    self._retry_wait(headers, attempt, rate_limited=status == 429)
                    attempt += 1
                    continue
                raise self._failure(status, exc) from None
            except openai.APIConnectionError as exc:  # refused, reset, dropped mid-response, timed out
                if attempt < self.max_retries:
                    self._retry_wait(None, attempt, rate_limited=False)
                    attempt += 1
                    continue
                raise EmbedError(f"cannot reach {self.where} after {attempt + 1} tries: "
                                 f"{scrub(first_line(exc), self._secrets)}") from None
            matrix, tokens = self._decode(body, len(texts))
            self._note_limits(headers)
            with self._lock:
                self.stats.requests += 1
                self.stats.texts += len(texts)
                self.stats.tokens += tokens
            return matrix

    def _decode(self, body: bytes, n: int) -> tuple[np.ndarray, int]:
        """The response's vectors in input order, each decoded from base64 into its row with
        ``np.frombuffer`` (the per-item loop walks the JSON list; no float is made in Python)."""
        try:
            payload = json.loads(body)
            data = payload["data"]
            usage = payload.get("usage") or {}
            tokens = int(usage.get("total_tokens", usage.get("prompt_tokens", 0)))
            if len(data) != n:
                raise ValueError(f"{len(data)} embeddings for {n} inputs")
            out: np.ndarray | None = None
            seen = np.zeros(n, dtype=bool)
            for item in data:
                index, encoded = int(item["index"]), item["embedding"]
                if isinstance(encoded, str):
                    vector = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
                else:  # a server that ignores encoding_format (some OpenAI-compatible ones): floats
                    vector = np.asarray(encoded, dtype=np.float32)
                if out is None:
                    out = np.empty((n, vector.shape[0]), dtype=np.float32)
                if vector.shape[0] != out.shape[1] or not 0 <= index < n or seen[index]:
                    raise ValueError("embeddings of unequal length or with a wrong or repeated index")
                out[index] = vector
                seen[index] = True
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedError(f"{self.where} sent a malformed embeddings response: {first_line(exc)}") from None
        assert out is not None
        if self._dims is not None and out.shape[1] != self._dims:
            raise EmbedError(f"{self.where} sent {out.shape[1]}-dimensional embeddings for {self.model}, "
                             f"expected {self._dims}")
        if not np.isfinite(out).all():
            raise EmbedError(f"{self.where} sent an embedding holding NaN or inf")
        return out, tokens

    def _failure(self, status: int, exc: Any) -> Exception:
        """A status the rules do not retry (or retried out), as ``_TooLong``, ``_TooManyTokens`` or one
        line: status, code and the server's message, the key scrubbed out; for 401, no message."""
        error = _error_body(exc)
        code = error.get("code") or error.get("type") or ""
        message = one_line(scrub(str(error.get("message") or ""), self._secrets), 300)
        if status == 400 and (code == "max_tokens_per_request" or "tokens per request" in message):
            return _TooManyTokens()
        if status == 400 and "maximum context length" in message:
            limit, requested = _LIMIT.search(message), _REQUESTED.search(message)
            return _TooLong(int(limit.group(1)) if limit else None, int(requested.group(1)) if requested else None)
        if status == 401:
            return EmbedError(f"{self.where} refused the API key (401 {code or 'unauthorized'}); check "
                              "OPENAI_API_KEY")
        tail = f" after {self.max_retries} retries" if status in RETRY_STATUSES else ""
        return EmbedError(f"{self.where} answered {status}{' ' + code if code else ''}{tail}: "
                          f"{message or 'no message'}")

    # --- pacing ---------------------------------------------------------------------------------

    def _wait_turn(self) -> None:
        while (delay := self._not_before - time.monotonic()) > 0 and not self._halt.is_set():
            self._halt.wait(delay)

    def _pause(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def _retry_wait(self, headers: Any, attempt: int, *, rate_limited: bool) -> None:
        wait = retry_after(headers)
        if wait is None and rate_limited:
            wait = rate_limit_wait(headers)
        if wait is None:
            wait = backoff(attempt)
        with self._lock:
            self.stats.retries += 1
        if rate_limited:
            self._pause(wait)  # everyone waits: the limit is the account's, not this request's
            self._wait_turn()
        else:
            self._halt.wait(wait)

    def _note_limits(self, headers: Any) -> None:
        """A limit at 0 remaining: hold new requests until it resets instead of collecting 429s."""
        for kind in ("requests", "tokens"):
            if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self._pause(reset)


def _error_body(exc: Any) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        return inner if isinstance(inner, dict) else {}
    return {}


def _all_done(jobs: list[tuple[int, int, Future[np.ndarray]]]) -> bool:
    return all(job.done() for _, _, job in jobs)


def _collect(out: np.ndarray, jobs: list[tuple[int, int, Future[np.ndarray]]]) -> np.ndarray:
    for start, stop, job in jobs:
        out[start:stop] = job.result()
    return out
