import json
from pathlib import Path

import jsonschema
import pytest

import vecfmt
from tests.helpers import make_table
from vecfmt.errors import DumpError
from vecfmt.manifest import Manifest, manifest_json_schema

SPEC = Path(__file__).resolve().parent.parent / "spec"


def spec_schema() -> dict:
    return json.loads((SPEC / "manifest.schema.json").read_text())


def test_the_package_validates_with_the_spec_schema_itself():
    assert manifest_json_schema() == spec_schema()


@pytest.mark.parametrize("kwargs", [
    {},
    {"document": True},
    {"sparse": True},
    {"named": {"title": 5, "image": 3}},
])
def test_every_manifest_written_validates_against_the_spec(tmp_path, kwargs):
    table = make_table(50, 4, **kwargs)
    manifest = vecfmt.write_dump(str(tmp_path / "d"), table, namespace="ns",
                                 model=vecfmt.EmbeddingModel("m", "p", 4), source=vecfmt.Source("test", "t"))
    on_disk = json.loads((tmp_path / "d" / "manifest.json").read_text())
    jsonschema.validate(on_disk, spec_schema())
    assert on_disk == manifest.to_dict()
    assert Manifest.from_dict(on_disk).to_dict() == on_disk


def test_manifest_records_what_the_issue_asks_for(tmp_path):
    table = make_table(10, 4, document=True)
    vecfmt.write_dump(str(tmp_path / "d"), table, metric="dot",
                      model=vecfmt.EmbeddingModel("text-embedding-3-small", "openai", 4),
                      source=vecfmt.Source("lancedb", "articles"))
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["format"] == "vecfmt" and m["format_version"] == "1.0"
    assert m["producer"] == {"name": "vecfmt", "version": vecfmt.__version__}
    assert m["source"] == {"kind": "lancedb", "name": "articles", "details": {}}
    assert m["embedding_model"]["name"] == "text-embedding-3-small"
    assert m["vectors"] == [{"name": "default", "column": "values", "dimension": 4, "metric": "dot",
                             "dtype": "float32"}]
    assert m["namespaces"] == [{"name": "", "path": "__default__", "rows": 10}]
    [f] = m["files"]
    assert f["path"] == "__default__/part-00000.parquet" and f["rows"] == 10
    assert f["bytes"] == (tmp_path / "d" / f["path"]).stat().st_size
    assert m["document"] is True and m["sparse_values"] is False


def _manifest(tmp_path) -> dict:
    vecfmt.write_dump(str(tmp_path / "d"), make_table(5, 2))
    return json.loads((tmp_path / "d" / "manifest.json").read_text())


def test_newer_major_version_is_refused(tmp_path):
    m = _manifest(tmp_path)
    m["format_version"] = "2.0"
    with pytest.raises(DumpError, match="newer than this vecfmt reads"):
        Manifest.from_dict(m)


def test_newer_minor_version_is_read(tmp_path):
    m = _manifest(tmp_path)
    m["format_version"] = "1.7"
    assert Manifest.from_dict(m).format_version == "1.7"


def test_counts_must_add_up(tmp_path):
    m = _manifest(tmp_path)
    m["namespaces"][0]["rows"] = 6
    with pytest.raises(DumpError, match="inconsistent"):
        Manifest.from_dict(m)


def test_schema_violations_name_the_place(tmp_path):
    m = _manifest(tmp_path)
    m["files"][0]["sha256"] = "xyz"
    with pytest.raises(DumpError, match="files/0/sha256"):
        Manifest.from_dict(m)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m["files"][0].__setitem__("namespace", "zzz"), "not in a folder of a listed namespace"),
    (lambda m: m["files"][0].__setitem__("path", "elsewhere/part-00000.parquet"), "not in a folder"),
    (lambda m: m["files"].append(dict(m["files"][0], rows=0)), "a file is listed twice"),
    (lambda m: m["namespaces"].append(dict(m["namespaces"][0], rows=0)), "listed twice"),
    (lambda m: m["vectors"][0].__setitem__("column", "values_x"), "vectors/0/column"),
    (lambda m: m.__setitem__("vectors", []), "sparse_values"),
])
def test_inconsistent_manifests_are_refused(tmp_path, mutate, message):
    m = _manifest(tmp_path)
    mutate(m)
    with pytest.raises(DumpError, match=message):
        Manifest.from_dict(m)
