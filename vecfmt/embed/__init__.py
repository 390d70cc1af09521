"""Embedding providers behind one small protocol: OpenAI's API (``openai.py``) and local
sentence-transformers models (``local.py``).

Importing this package costs nothing: the ``openai`` client and torch are imported only when a
provider is opened (``catalog.py`` beside it is read by ``plan`` without either installed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from vecfmt.embed import catalog
from vecfmt.errors import VecfmtError

DEFAULT_CONCURRENCY = 4
PROVIDERS = ("openai", "local")


class EmbedError(VecfmtError):
    """A provider refused or failed a request for good (after its retries): one line, no secret."""


class InputTooLongError(EmbedError):
    """One input is longer than the model accepts and the rule is to refuse it. ``batch`` is the
    position of its batch in the stream given to ``embed_batches`` and ``position`` its row there,
    so that a caller can name the row's id in front of ``detail`` ("is longer than ...")."""

    def __init__(self, detail: str, batch: int, position: int) -> None:
        super().__init__(f"input {position} of batch {batch} {detail}")
        self.detail, self.batch, self.position = detail, batch, position


@dataclass
class EmbedStats:
    """What a provider spent: tokens as the responses' ``usage`` reported them (0 for local models),
    requests answered, and retries (429, 5xx, dropped connections, requests split after a 400)."""

    texts: int = 0
    tokens: int = 0
    requests: int = 0
    retries: int = 0


@runtime_checkable
class Embedder(Protocol):
    model: str
    provider: str
    stats: EmbedStats

    @property
    def dims(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dims)`` float32, L2-normalised, row i for texts[i]."""
        ...

    def embed_batches(self, batches: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        """One matrix per batch, in order, with several requests in flight where the provider allows:
        the next batches are already being embedded while the caller stores this one."""
        ...

    def close(self) -> None: ...


def resolve_provider(model: str, provider: str | None) -> str:
    """The provider for ``model``: as given, else the catalog's, else "local" for a folder on disk."""
    if provider is not None:
        if provider not in PROVIDERS:
            raise EmbedError(f"unknown embedding provider {provider!r} (known: {', '.join(PROVIDERS)})")
        return provider
    info = catalog.lookup(model)
    if info is not None:
        return info.provider
    if os.path.isdir(os.path.expanduser(model)):
        return "local"
    raise EmbedError(f"vecfmt does not know the model {model!r}: name its provider "
                     f"({' or '.join(PROVIDERS)}), or give a local model's folder")


def open_embedder(
    model: str,
    provider: str | None = None,
    *,
    dimensions: int | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_retries: int = 6,
    truncate: bool = False,
    timeout: float = 120.0,
    max_inputs_per_request: int | None = None,
) -> Embedder:
    """Open a provider for ``model``. OpenAI: the key comes from ``api_key`` or ``OPENAI_API_KEY``,
    ``base_url`` from the argument or ``OPENAI_BASE_URL``; ``truncate`` cuts an input the API refuses as
    too long instead of failing. Local: sentence-transformers on the CPU, offline."""
    if concurrency < 1:
        raise EmbedError("concurrency must be at least 1")
    chosen = resolve_provider(model, provider)
    if chosen == "openai":
        from vecfmt.embed.openai import OpenAIEmbedder

        return OpenAIEmbedder(
            model, dimensions=dimensions, api_key=api_key, base_url=base_url, concurrency=concurrency,
            max_retries=max_retries, truncate=truncate, timeout=timeout,
            max_inputs_per_request=max_inputs_per_request,
        )
    from vecfmt.embed.local import LocalEmbedder

    return LocalEmbedder(model, dimensions=dimensions)


__all__ = [
    "DEFAULT_CONCURRENCY",
    "EmbedError",
    "EmbedStats",
    "Embedder",
    "InputTooLongError",
    "open_embedder",
    "resolve_provider",
]
