import pytest

from tests.helpers import assert_tables_identical

pytest_plugins = ["tests.servers.postgres", "tests.servers.s3", "tests.servers.pinecone", "tests.servers.weaviate",
                  "tests.servers.chroma", "tests.servers.openai_embeddings"]


@pytest.fixture
def identical():
    return assert_tables_identical
