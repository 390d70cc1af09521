"""Dumps on object storage: moto's real S3 server on loopback, through pyarrow.fs."""

import boto3
import pyarrow.fs as pafs

import vecfmt
from tests.helpers import make_table, vecfmt_cli
from vecfmt.ops import diff_dumps, validate_dump


def test_dump_on_s3_reads_back_identical_and_validates(s3_server, s3_uri, identical):
    table = make_table(3000, 32, document=True)
    with vecfmt.DumpWriter(s3_uri, options=vecfmt.ParquetOptions(max_file_rows=1000)) as writer:
        writer.write(table.slice(0, 2000))
        writer.write(table.slice(2000), namespace="other")
    dump = vecfmt.open_dump(s3_uri)
    assert dump.manifest.total_rows == 3000 and len(dump.manifest.files) == 3
    identical(dump.table(""), table.slice(0, 2000))
    identical(dump.table("other"), table.slice(2000))
    assert validate_dump(s3_uri) == []


def test_s3_layout_is_what_pinecone_import_reads(s3_server, s3_uri):
    vecfmt.write_dump(s3_uri, make_table(10, 4), namespace="")
    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    keys = sorted(o["Key"].removeprefix(prefix + "/") for o in client.list_objects_v2(
        Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == ["__default__/part-00000.parquet", "manifest.json"]


def test_local_and_s3_copies_diff_identical(s3_server, s3_uri, tmp_path):
    table = make_table(500, 8)
    vecfmt.write_dump(s3_uri, table)
    vecfmt.write_dump(str(tmp_path / "local"), table)
    assert diff_dumps(s3_uri, str(tmp_path / "local")).identical


def test_cli_validates_and_refuses_an_incomplete_dump_on_s3(s3_server, s3_uri):
    vecfmt.write_dump(s3_uri, make_table(50, 4))
    assert vecfmt_cli("validate", s3_uri).code == 0
    fs, path = pafs.FileSystem.from_uri(s3_uri)
    fs.delete_file(f"{path}/manifest.json")
    run = vecfmt_cli("inspect", s3_uri)
    assert run.code == 1 and "has no manifest.json" in run.stderr and "Traceback" not in run.stderr
