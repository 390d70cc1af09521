"""Re-embedding through the real ``openai`` client against the local embeddings server
(tests/servers/openai_embeddings.py), which computes real MiniLM vectors and counts every text it
embedded: each test ends by proving every document was embedded (and delivered) exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import openai
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import make_table, write_raw_dump
from tests.servers.openai_embeddings import API_KEY, OpenAIEmbeddingsServer
from vecfmt.embed import EmbedError, open_embedder
from vecfmt.embed.openai import OpenAIEmbedder, parse_duration, rate_limit_wait
from vecfmt.errors import DumpError, InvalidDataError
from vecfmt.quality.reembed import reembed
from vecfmt.writer import EXPORT_STATE, DumpWriter

ROOT = Path(__file__).resolve().parents[2]
TOPICS = [
    "PostgreSQL stores vectors in a table with the pgvector extension",
    "The cat slept all afternoon on the warm windowsill",
    "Interest rates rose again as the central bank fought inflation",
    "The recipe calls for two cups of flour and a pinch of salt",
    "A goalkeeper saved the penalty in the last minute of the match",
    "Glaciers in the Alps are melting faster every summer",
    "The violinist tuned her instrument before the concert began",
    "Rust's borrow checker rejects two mutable references at once",
    "Tomatoes need full sun and regular watering to ripen",
    "The train to Munich was delayed by forty minutes",
    "Die Bibliothek öffnet am Montag um neun Uhr",
    "東京の地下鉄は朝のラッシュアワーにとても混雑する",
]


def corpus(n: int, start: int = 0) -> list[str]:
    """``n`` distinct real sentences (topics in rotation, numbered so no two texts are equal)."""
    return [f"{TOPICS[i % len(TOPICS)]} (note {i})." for i in range(start, start + n)]


def source_dump(path: Path, n: int = 60, *, namespaces: int = 1, sparse: bool = False) -> Path:
    """A dump whose rows carry real documents; old vectors 8-dimensional (and a named one), metadata varied."""
    with DumpWriter(str(path)) as writer:
        for k in range(namespaces):
            table = make_table(n, seed=k, prefix=f"ns{k}-", sparse=sparse, named={"title": 4})
            table = table.append_column("document", pa.array(corpus(n, start=k * n)))
            writer.write(table, namespace="" if k == 0 else f"tenant-{k}")
    return path


def client_args(server: OpenAIEmbeddingsServer, **extra: object) -> dict[str, object]:
    return {"api_key": server.api_key, "base_url": server.url, **extra}


def openai_embedder(server: OpenAIEmbeddingsServer, model: str = "text-embedding-3-small", **kw: object):
    kw.setdefault("max_retries", 6)
    return open_embedder(model, "openai", api_key=server.api_key, base_url=server.url, **kw)


def assert_reembedded(server: OpenAIEmbeddingsServer, src: Path, out: Path, dims: int) -> vecfmt.Dump:
    """Ids, metadata, documents (and sparse values) carried exactly, namespace by namespace; each
    vector bit for bit what the server sent for that row's document; every document delivered once."""
    before, after = vecfmt.open_dump(str(src)), vecfmt.open_dump(str(out))
    assert after.namespaces == before.namespaces
    documents: list[str] = []
    for namespace in before.namespaces:
        old, new = before.table(namespace), after.table(namespace)
        for column in ("id", "metadata", "document", *(["sparse_values"] if before.manifest.sparse_values else [])):
            assert new.column(column).to_pylist() == old.column(column).to_pylist(), column
        assert "values_title" not in new.column_names  # the old model's vectors are not carried
        texts = new.column("document").to_pylist()
        got = after.vectors(new)
        assert got.shape == (len(texts), dims)
        expected = np.stack([server.returned[t] for t in texts])
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        documents += texts
    assert server.delivered == {t: 1 for t in documents}
    return after


def test_reembed_carries_rows_and_records_the_model(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 50, namespaces=2, sparse=True)
    result = reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", dimensions=256,
                     batch_size=16, concurrency=3, **client_args(openai_server))
    after = assert_reembedded(openai_server, src, tmp_path / "out", 256)
    manifest = after.manifest
    assert manifest.embedding_model == vecfmt.EmbeddingModel("text-embedding-3-small", "openai", 256)
    assert [(v.column, v.dimension, v.metric) for v in manifest.vectors] == [("values", 256, "cosine")]
    assert manifest.extra["reembedded_from"]["identity"] == vecfmt.open_dump(str(src)).manifest.identity()
    assert manifest.total_rows == 100 and result.rows == 100 and result.rows_skipped == 0
    # tokens: what the responses' usage said, summed; one request per 16-row batch (all fit one request)
    assert result.tokens == result.tokens_total == openai_server.tokens_delivered > 0
    assert result.requests == len([r for r in openai_server.log if r.status == 200]) == 8
    assert result.retries == 0
    assert not (tmp_path / "out" / EXPORT_STATE).exists()
    # shortened vectors are renormalised like text-embedding-3's
    np.testing.assert_allclose(np.linalg.norm(after.matrix(), axis=1), 1.0, rtol=1e-5)


def test_reembedded_vectors_are_real_enough_to_search(openai_server, tmp_path):
    """The server's vectors are MiniLM's: paraphrased queries find documents of their topic."""
    src = source_dump(tmp_path / "src", 36)
    reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", **client_args(openai_server))
    dump = vecfmt.open_dump(str(tmp_path / "out"))
    rows = dump.table()
    queries = {1: "a kitten napping by the window", 2: "the central bank raised borrowing costs",
               5: "ice in the mountains is disappearing", 9: "my railway journey was late"}
    embedder = openai_embedder(openai_server)
    found = np.argsort(-(embedder.embed(list(queries.values())) @ dump.vectors(rows).T), axis=1)[:, :3]
    documents = rows.column("document").to_pylist()
    for topic, best in zip(queries, found, strict=True):
        assert all(documents[i].startswith(TOPICS[topic]) for i in best), [documents[i] for i in best]


def test_every_document_once_through_429s_5xx_and_dropped_connections(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 60)
    openai_server.inject(429, 2, retry_after_ms=50)
    openai_server.inject(500, after=2)
    openai_server.inject(503, after=3)
    openai_server.inject("reset", after=4)  # closed before any answer
    openai_server.inject("drop", after=5)  # embedded, then cut mid-body: the client must ask again
    embedder = openai_embedder(openai_server, concurrency=3, max_inputs_per_request=7)
    result = reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", batch_size=20,
                     embedder=embedder)
    assert_reembedded(openai_server, src, tmp_path / "out", 1536)
    assert result.retries == 6 and result.rows == 60
    faults = [r.fault for r in openai_server.log if r.fault]
    assert sorted(faults) == ["429", "429", "500", "503", "drop", "reset"]
    # what a dropped response costs: its texts were billed twice, nothing else was
    dropped = next(r for r in openai_server.log if r.fault == "drop")
    assert sorted(openai_server.billed.values()) == [1] * (60 - dropped.inputs) + [2] * dropped.inputs
    assert result.tokens == openai_server.tokens_delivered


def test_retry_after_is_honoured_by_every_request_in_flight(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 12)
    openai_server.inject(429, 1, retry_after=1)
    embedder = openai_embedder(openai_server, concurrency=3, max_inputs_per_request=2)
    reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", batch_size=12, embedder=embedder)
    assert_reembedded(openai_server, src, tmp_path / "out", 1536)
    log = sorted(openai_server.log, key=lambda r: r.received)
    refused = next(r for r in log if r.fault == "429")
    assert refused in log[:3]  # one of the three first in flight
    sent_after = log[3:]  # the retried request and the three not yet sent ...
    assert len(sent_after) == 4
    assert min(r.received for r in sent_after) - refused.at >= 0.95  # ... all waited the 1 s it asked for


def test_rate_limit_headers_pace_requests_without_429(openai_server, tmp_path):
    """3 requests per 1.5 s window: after the third the headers say 0 remaining, so the client waits for
    the reset instead of collecting 429s."""
    src = source_dump(tmp_path / "src", 16)
    openai_server.set_rate_limit(requests=3, window=1.5)
    embedder = openai_embedder(openai_server, concurrency=1, max_inputs_per_request=2)
    started = time.monotonic()
    result = reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", batch_size=16,
                     embedder=embedder)
    assert_reembedded(openai_server, src, tmp_path / "out", 1536)
    assert [r.status for r in openai_server.log] == [200] * 8
    assert result.retries == 0
    assert time.monotonic() - started >= 3.0  # 8 requests at 3 a window: two waits for a reset


def test_429s_from_spent_limits_wait_for_the_reset(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 24)
    openai_server.set_rate_limit(requests=2, window=1.0)
    embedder = openai_embedder(openai_server, concurrency=4, max_inputs_per_request=2)
    result = reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", batch_size=24,
                     embedder=embedder)
    assert_reembedded(openai_server, src, tmp_path / "out", 1536)
    refused = [r for r in openai_server.log if r.status == 429]
    assert refused and result.retries == len(refused)


def test_rate_limit_header_parsing():
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02 and parse_duration("1.5s") == 1.5
    assert parse_duration("soon") is None
    headers = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "2s",
               "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "7.5s"}
    assert rate_limit_wait(headers) == 7.5  # the exhausted one, not the longest
    headers["x-ratelimit-reset-tokens"] = "500ms"
    assert rate_limit_wait(headers) == 0.5


def test_requests_split_when_the_server_counts_more_tokens(openai_server, tmp_path):
    """The server is the authority on tokens: a 400 max_tokens_per_request splits the request."""
    src = source_dump(tmp_path / "src", 20)
    openai_server.max_request_tokens = 60
    result = reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", batch_size=20,
                     **client_args(openai_server))
    assert_reembedded(openai_server, src, tmp_path / "out", 1536)
    assert any(r.status == 400 for r in openai_server.log) and result.retries > 0
    assert all(r.tokens <= 60 for r in openai_server.log)


def test_packing_respects_the_api_limits(openai_server):
    embedder = openai_embedder(openai_server)
    assert isinstance(embedder, OpenAIEmbedder)
    texts = ["a short text"] * 5000 + ["x" * 9000] + ["é" * 200_000] * 3 + ["tail"]
    groups = embedder.pack(texts)
    assert [i for start, stop in groups for i in range(start, stop)] == list(range(len(texts)))
    for start, stop in groups:
        assert stop - start <= 2048
        assert sum(len(t.encode()) for t in texts[start:stop]) <= 300_000 or stop - start == 1
    assert (5000, 5001) in groups  # possibly over 8,192 tokens: alone, so a 400 concerns it only
    assert openai_server.log == []  # packing asks nothing


def test_interrupted_by_sigkill_resumes_without_paying_twice(openai_server, tmp_path):
    """A real kill: the run is SIGKILLed while requests hang, after 3 of 6 batches were checkpointed.
    The resumed run sends only the rest: every document is embedded exactly once, billed once."""
    src = source_dump(tmp_path / "src", 60)
    out = tmp_path / "out"
    openai_server.inject("hang", times=None, after=6)  # 2 requests per 10-row batch: batches 1-3 pass
    script = textwrap.dedent(f"""
        from vecfmt.embed import open_embedder
        from vecfmt.quality.reembed import reembed
        embedder = open_embedder("text-embedding-3-small", "openai", base_url={openai_server.url!r},
                                 concurrency=2, max_inputs_per_request=5)
        reembed({str(src)!r}, {str(out)!r}, model="text-embedding-3-small", batch_size=10, embedder=embedder)
    """)
    env = {**os.environ, "OPENAI_API_KEY": openai_server.api_key, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _checkpointed(out) < 30:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint of 30 rows in time"
            time.sleep(0.05)
        time.sleep(0.3)  # let it sit on its hanging requests
        assert _checkpointed(out) == 30
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    openai_server.clear_faults()
    assert not (out / "manifest.json").exists()
    assert sum(openai_server.delivered.values()) == 30
    with pytest.raises(DumpError, match="interrupted re-embedding; pass resume"):
        reembed(str(src), str(out), model="text-embedding-3-small", **client_args(openai_server))
    embedder = openai_embedder(openai_server, concurrency=2, max_inputs_per_request=5)
    result = reembed(str(src), str(out), model="text-embedding-3-small", batch_size=10, embedder=embedder,
                     resume=True)
    assert (result.rows_skipped, result.rows) == (30, 30)
    assert_reembedded(openai_server, src, out, 1536)
    assert set(openai_server.billed.values()) == {1}  # nothing was paid for twice
    assert result.tokens_total == openai_server.tokens_delivered


def _checkpointed(out: Path) -> int:
    try:
        return int(json.loads((out / EXPORT_STATE).read_text())["cursor"]["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_failed_run_keeps_its_rows_and_resume_finishes(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 40)
    out = tmp_path / "out"
    openai_server.inject(500, times=None, after=2)
    embedder = openai_embedder(openai_server, concurrency=1, max_retries=1, max_inputs_per_request=10)
    with pytest.raises(EmbedError) as failed:
        reembed(str(src), str(out), model="text-embedding-3-small", batch_size=10, embedder=embedder)
    message = str(failed.value)
    assert "\n" not in message and "answered 500" in message and "after 1 retries" in message
    assert "20 rows are re-embedded and saved" in message and "resume" in message
    openai_server.clear_faults()
    result = reembed(str(src), str(out), model="text-embedding-3-small", batch_size=10, resume=True,
                     **client_args(openai_server))
    assert (result.rows_skipped, result.rows) == (20, 20)
    assert_reembedded(openai_server, src, out, 1536)


def test_a_request_failing_for_good_stops_the_others_and_is_what_is_reported(openai_server, tmp_path):
    """Request 1 gets a 503 and waits to retry; meanwhile request 2 gets a 400. The run stops with the
    400, and request 1 is not sent again."""
    src = source_dump(tmp_path / "src", 4)
    openai_server.inject(503, retry_after=1)
    openai_server.inject(400, after=1)
    embedder = openai_embedder(openai_server, concurrency=2, max_inputs_per_request=2)
    with pytest.raises(EmbedError, match="answered 400"):
        reembed(str(src), str(tmp_path / "out"), model="text-embedding-3-small", embedder=embedder)
    time.sleep(1.5)  # past the 503's Retry-After: a retry would have arrived by now
    assert sorted(r.status for r in openai_server.log) == [400, 503]


def test_resume_refuses_another_model_or_dump(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 30)
    out = tmp_path / "out"
    openai_server.inject(503, times=None, after=1)
    with pytest.raises(EmbedError):
        reembed(str(src), str(out), model="text-embedding-3-small", batch_size=10, max_retries=0,
                concurrency=1, **client_args(openai_server))
    openai_server.clear_faults()
    with pytest.raises(DumpError, match="used openai text-embedding-3-small \\(1536 dimensions\\), this run "
                                        "openai text-embedding-3-small \\(64 dimensions\\)"):
        reembed(str(src), str(out), model="text-embedding-3-small", dimensions=64, resume=True,
                **client_args(openai_server))
    other = source_dump(tmp_path / "other", 31)
    with pytest.raises(DumpError, match="read another dump"):
        reembed(str(other), str(out), model="text-embedding-3-small", resume=True, **client_args(openai_server))
    delivered = sum(openai_server.delivered.values())
    assert delivered == 10  # the refusals sent nothing
    reembed(str(src), str(out), model="text-embedding-3-small", overwrite=True, **client_args(openai_server))
    assert vecfmt.open_dump(str(out)).manifest.total_rows == 30


def test_the_source_itself_is_never_the_output(openai_server, tmp_path):
    src = source_dump(tmp_path / "src", 10)
    with pytest.raises(DumpError, match="is the dump being re-embedded"):
        reembed(str(src), f"{src}/", model="text-embedding-3-small", overwrite=True, **client_args(openai_server))
    assert openai_server.log == []
    assert vecfmt.open_dump(str(src)).table().num_rows == 10


@pytest.mark.parametrize("problem", ["no column", "null", "empty"])
def test_a_dump_without_texts_is_refused_before_any_request(openai_server, tmp_path, problem):
    table = make_table(10)
    if problem != "no column":
        documents = corpus(10)
        documents[7] = None if problem == "null" else ""
        table = table.append_column("document", pa.array(documents, pa.string()))
    write_raw_dump(str(tmp_path / "src"), {"": table})
    with pytest.raises(InvalidDataError) as refused:
        reembed(str(tmp_path / "src"), str(tmp_path / "out"), model="text-embedding-3-small",
                **client_args(openai_server))
    message = str(refused.value)
    if problem == "no column":
        assert "has no 'document' column" in message
    else:
        assert f"the document of id 'id-7' is {problem}" in message
    assert openai_server.log == []
    assert not (tmp_path / "out").exists()


def test_over_long_input_is_refused_naming_its_id_or_truncated(openai_server, tmp_path):
    openai_server.max_input_tokens = 40
    long_text = " ".join(TOPICS[:6])  # about 70 word pieces
    table = make_table(12).append_column("document", pa.array([*corpus(5), long_text, *corpus(6, 5)]))
    vecfmt.write_dump(str(tmp_path / "src"), table)
    with pytest.raises(InvalidDataError) as refused:
        reembed(str(tmp_path / "src"), str(tmp_path / "out"), model="text-embedding-3-small",
                **client_args(openai_server))
    message = str(refused.value)
    assert "the document of id 'id-5' is longer than text-embedding-3-small's limit of" in message
    assert "pass truncate" in message and "\n" not in message
    assert not (tmp_path / "out" / "manifest.json").exists()

    openai_server.reset()
    openai_server.max_input_tokens = 40
    result = reembed(str(tmp_path / "src"), str(tmp_path / "out2"), model="text-embedding-3-small",
                     truncate=True, **client_args(openai_server))
    dump = vecfmt.open_dump(str(tmp_path / "out2"))
    rows = dump.table()
    assert rows.column("document").to_pylist()[5] == long_text  # the document itself is kept whole
    cut = [t for t in openai_server.returned if long_text.startswith(t) and t != long_text]
    assert len(cut) == 1 and openai_server.minilm.tokens(cut)[0] <= 40
    np.testing.assert_array_equal(dump.vectors(rows)[5], openai_server.returned[cut[0]])
    assert result.retries >= 2  # the batch split to find it, then the cut


def test_dimensions_only_for_models_that_take_them(openai_server):
    with pytest.raises(EmbedError, match="does not take a dimensions setting"):
        openai_embedder(openai_server, "text-embedding-ada-002", dimensions=256)
    with pytest.raises(EmbedError, match=r"must be 1\.\.3072"):
        openai_embedder(openai_server, "text-embedding-3-large", dimensions=4000)
    with pytest.raises(EmbedError, match="does not know the model 'my-model'"):
        open_embedder("my-model")
    assert openai_server.log == []
    # a model the catalog does not know: its dimension comes from one probe request
    embedder = openai_embedder(openai_server, "my-model")
    assert embedder.dims == 384 and embedder.stats.requests == 1


def test_the_api_key_appears_nowhere(openai_server, tmp_path):
    """A key holding @ : / ? # never shows: not in errors (a refused key), output, manifest or state."""
    src = source_dump(tmp_path / "src", 10)
    forms = [API_KEY, quote(API_KEY, safe=""), "4d2f@:/?#key"]
    script = textwrap.dedent(f"""
        import sys
        from vecfmt.errors import VecfmtError
        from vecfmt.quality.reembed import reembed
        try:
            r = reembed(sys.argv[1], sys.argv[2], model="text-embedding-3-small", base_url={openai_server.url!r})
            print(r)
        except VecfmtError as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
    """)
    wrong = {**os.environ, "OPENAI_API_KEY": API_KEY + "x", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "bad")], env=wrong,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"{openai_server.url} refused the API key (401 invalid_api_key); check OPENAI_API_KEY"]
    right = {**wrong, "OPENAI_API_KEY": API_KEY}
    run2 = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "good")], env=right,
                          capture_output=True, text=True, timeout=120)
    assert run2.returncode == 0, run2.stderr
    written = b"".join(p.read_bytes() for p in (tmp_path / "good").rglob("*") if p.is_file())
    for text in (run.stdout, run.stderr, run2.stdout, run2.stderr):
        assert not any(form in text for form in [*forms, API_KEY + "x"])
    assert not any(form.encode() in written for form in forms)
    assert b"text-embedding-3-small" in (tmp_path / "good" / "manifest.json").read_bytes()


def test_no_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbedError, match="no OpenAI API key: set OPENAI_API_KEY"):
        open_embedder("text-embedding-3-small")


# --- the server itself, through the real client: strict like the service ------------------------


def test_server_speaks_the_embeddings_api(openai_server):
    client = openai.OpenAI(api_key=openai_server.api_key, base_url=openai_server.url, max_retries=0)
    texts = corpus(3)
    as_floats = client.embeddings.create(input=texts, model="text-embedding-3-small", encoding_format="float",
                                         dimensions=64, user="tests")
    assert [d.index for d in as_floats.data] == [0, 1, 2] and len(as_floats.data[0].embedding) == 64
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens == sum(openai_server.minilm.tokens(texts))
    # the client's default asks for base64 and decodes it itself: the same float32 values
    default = client.embeddings.create(input=texts, model="text-embedding-3-small", dimensions=64)
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data], np.float32),
                                  np.array([d.embedding for d in as_floats.data], np.float32))
    raw = client.embeddings.with_raw_response.create(input="one text", model="text-embedding-ada-002")
    for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests"):
        assert name in raw.headers
    assert len(raw.parse().data[0].embedding) == 1536

    refusals = [
        ({"input": texts, "model": "text-embedding-ada-002", "dimensions": 64}, "dimensions"),
        ({"input": "", "model": "text-embedding-3-small"}, "input"),
        ({"input": [], "model": "text-embedding-3-small"}, "input"),
        ({"input": ["x"] * 2049, "model": "text-embedding-3-small"}, "input"),
        ({"input": ["x"], "model": "text-embedding-3-small", "encoding_format": "int8"}, "encoding_format"),
    ]
    for params, param in refusals:
        with pytest.raises(openai.BadRequestError) as bad:
            client.embeddings.create(**params)
        assert bad.value.status_code == 400 and bad.value.body["param"] == param, params
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: foo"):
        client.embeddings.create(input="x", model="text-embedding-3-small", extra_body={"foo": 1})
    openai_server.max_input_tokens = 5
    with pytest.raises(openai.BadRequestError, match="maximum context length is 5 tokens, however you requested"):
        client.embeddings.create(input=texts[0], model="text-embedding-3-small")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sk-wrong", base_url=openai_server.url, max_retries=0).embeddings.create(
            input="x", model="text-embedding-3-small")
