"""What vecfmt knows about embedding models: dimensions, input limits, prices, tokenizers, rate limits.

One table that ``plan`` (estimates) and the providers (request packing) read, so a limit or a price is
written down once. Prices and rate limits change: ``PRICES_AS_OF`` says when they were taken, and
``plan`` accepts overrides.

Sources (read 2026-11-30):
- prices: OpenAI's model pages, https://developers.openai.com/api/docs/models/text-embedding-3-large
  (quick comparison: text-embedding-3-large $0.13, text-embedding-3-small $0.02 per 1M tokens) and
  https://openai.com/api/pricing/ (text-embedding-ada-002 $0.10 per 1M tokens); the same three prices
  on https://zilliz.com/ai-models/text-embedding-3-small; the Batch API bills
  half of that (https://platform.openai.com/docs/guides/batch: "50% cost discount").
- limits per request: the embeddings API reference, https://platform.openai.com/docs/api-reference/embeddings/create
  ("must not exceed the max input tokens for the model (8192 tokens for all embedding models) ...
  any array must be 2048 dimensions or less ... a maximum of 300,000 tokens summed across all inputs
  in a single request").
- rate limits per usage tier: the model pages' "Rate limits" tables,
  https://developers.openai.com/api/docs/models/text-embedding-3-small (the same for all three models).
- all-MiniLM-L6-v2: https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2 (384 dimensions;
  "input text longer than 256 word pieces is truncated"; its sentence_bert_config max_seq_length 256).
"""

from __future__ import annotations

from dataclasses import dataclass

from vecfmt.errors import VecfmtError

PRICES_AS_OF = "2026-11-30"

# Per request, for every OpenAI embedding model (API reference above).
OPENAI_MAX_INPUTS_PER_REQUEST = 2048
OPENAI_MAX_TOKENS_PER_REQUEST = 300_000
OPENAI_BATCH_API_DISCOUNT = 0.5  # the Batch API bills half the price, with up to 24 h turnaround


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the provider's model name, e.g. "text-embedding-3-small"
    provider: str  # "openai" | "local"
    dims: int  # default output dimension
    flexible_dims: bool  # accepts dimensions= (OpenAI text-embedding-3-*)
    # Longest input in the model's own tokens: the API refuses longer (OpenAI); sentence-transformers
    # truncates longer (MiniLM: 256 word pieces counting [CLS] and [SEP], as max_seq_length does).
    max_input_tokens: int
    usd_per_million_tokens: float | None  # None for local models
    tokenizer: str | None  # tiktoken encoding name (OpenAI) or Hugging Face tokenizer id (local)


@dataclass(frozen=True)
class RateLimit:
    """One usage tier's limits for an OpenAI embedding model (requests and tokens per minute)."""

    rpm: int
    tpm: int
    batch_queue_tokens: int | None = None  # tokens that may wait in the Batch API's queue


# The model pages list the same figures for text-embedding-3-small, -3-large and ada-002.
OPENAI_EMBEDDING_RATE_LIMITS: dict[str, RateLimit] = {
    "free": RateLimit(rpm=100, tpm=40_000),  # also 2,000 requests per day
    "tier1": RateLimit(rpm=3_000, tpm=1_000_000, batch_queue_tokens=3_000_000),
    "tier2": RateLimit(rpm=5_000, tpm=1_000_000, batch_queue_tokens=20_000_000),
    "tier3": RateLimit(rpm=5_000, tpm=5_000_000, batch_queue_tokens=100_000_000),
    "tier4": RateLimit(rpm=10_000, tpm=5_000_000, batch_queue_tokens=500_000_000),
    "tier5": RateLimit(rpm=10_000, tpm=10_000_000, batch_queue_tokens=4_000_000_000),
}
OPENAI_FREE_TIER_REQUESTS_PER_DAY = 2_000

MINILM = "all-MiniLM-L6-v2"
MINILM_HF_ID = "sentence-transformers/all-MiniLM-L6-v2"

MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("text-embedding-3-small", "openai", 1536, True, 8192, 0.02, "cl100k_base"),
    ModelInfo("text-embedding-3-large", "openai", 3072, True, 8192, 0.13, "cl100k_base"),
    ModelInfo("text-embedding-ada-002", "openai", 1536, False, 8192, 0.10, "cl100k_base"),
    ModelInfo(MINILM, "local", 384, False, 256, None, MINILM_HF_ID),
)

_BY_NAME: dict[str, ModelInfo] = {m.name.lower(): m for m in MODELS}
_BY_NAME[MINILM_HF_ID.lower()] = _BY_NAME[MINILM.lower()]  # sentence-transformers takes both names


def lookup(name: str) -> ModelInfo | None:
    """The catalog entry for a model name (case-insensitive; "all-MiniLM-L6-v2" and its Hugging Face
    id are one model), or None when vecfmt does not know it."""
    return _BY_NAME.get(name.strip().lower())


def tier_name(tier: str) -> str:
    """The catalog's name of an OpenAI usage tier: "free", "tier1" .. "tier5" (also written "1",
    "Tier 1", "tier-1")."""
    key = tier.strip().lower().replace(" ", "").replace("-", "").replace("_", "")
    if key.isdigit():
        key = f"tier{key}"
    if key not in OPENAI_EMBEDDING_RATE_LIMITS:
        known = ", ".join(OPENAI_EMBEDDING_RATE_LIMITS)
        raise VecfmtError(f"unknown OpenAI usage tier {tier!r} (known: {known})")
    return key


def rate_limit(tier: str) -> RateLimit:
    """The OpenAI embedding rate limits of a usage tier (see ``tier_name``)."""
    return OPENAI_EMBEDDING_RATE_LIMITS[tier_name(tier)]
