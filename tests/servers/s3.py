"""A real S3 endpoint for tests: moto's HTTP server on 127.0.0.1.

``s3_server`` (session) starts it on a free port, creates a bucket and sets
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION=us-east-1 and
AWS_ENDPOINT_URL_S3 for the whole session. With those,
``pyarrow.fs.FileSystem.from_uri("s3://<bucket>/...")`` reaches moto; a bare
``pyarrow.fs.S3FileSystem()`` does NOT read AWS_ENDPOINT_URL_S3 and needs
``endpoint_override=server.endpoint`` (see ``S3Server.filesystem``).

``s3_uri`` (per test) is a unique, empty ``s3://<bucket>/<prefix>`` in it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pyarrow.fs

S3_BUCKET = "vecfmt-test"
S3_REGION = "us-east-1"
S3_ACCESS_KEY = "vecfmt-test-key"
S3_SECRET_KEY = "vecfmt-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    region: str = S3_REGION
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def filesystem(self, **options: object) -> pyarrow.fs.S3FileSystem:
        """An explicit S3FileSystem for this server (paths are ``bucket/key``)."""
        from pyarrow.fs import S3FileSystem

        return S3FileSystem(endpoint_override=self.endpoint, region=self.region,
                            access_key=self.access_key, secret_key=self.secret_key,
                            **options)  # fmt: skip


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto on 127.0.0.1 with bucket ``vecfmt-test``; AWS_* env vars point at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        info = S3Server(endpoint=f"http://{host}:{port}", bucket=S3_BUCKET)
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", info.access_key)
            mp.setenv("AWS_SECRET_ACCESS_KEY", info.secret_key)
            mp.setenv("AWS_DEFAULT_REGION", info.region)
            mp.setenv("AWS_ENDPOINT_URL_S3", info.endpoint)
            # Never fall back to ~/.aws or the EC2 metadata service (not loopback).
            mp.setenv("AWS_CONFIG_FILE", os.devnull)
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            client = boto3.client("s3", endpoint_url=info.endpoint, region_name=info.region)
            client.create_bucket(Bucket=info.bucket)
            yield info
    finally:
        server.stop()


@pytest.fixture
def s3_uri(s3_server: S3Server) -> str:
    """A unique ``s3://vecfmt-test/t-<hex>`` prefix for one test (no trailing slash)."""
    return s3_server.uri(f"t-{uuid.uuid4().hex[:12]}")
