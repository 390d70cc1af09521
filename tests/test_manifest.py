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


# --- format 1.1: deltas ------------------------------------------------------------------------------------


def _delta() -> dict:
    spec = (SPEC / "vecfmt-v1.md").read_text()
    return json.loads(spec.split("### 12.1")[1].split("```json\n")[1].split("```")[0])


def test_a_full_dump_stays_1_0_without_the_delta_fields(tmp_path):
    m = _manifest(tmp_path)
    assert m["format_version"] == "1.0"
    assert not {"kind", "base", "deletes"} & set(m) and set(m["namespaces"][0]) == {"name", "path", "rows"}
    assert Manifest.from_dict(m).kind == "full" and Manifest.from_dict(m).to_dict() == m


def test_a_delta_round_trips_and_only_whole_dump_readers_refuse_it():
    d = _delta()
    jsonschema.validate(d, spec_schema())
    manifest = Manifest.from_dict(d, allow_delta=True)
    assert manifest.base.uri == "samples/tiny" and [f.path for f in manifest.deletes] == [
        "__default__/deletes-00000.parquet"]
    assert (manifest.namespaces[0].deleted, manifest.namespaces[0].rows_after) == (1, 5)
    assert manifest.to_dict() == d and Manifest.from_json(manifest.to_json(), allow_delta=True) == manifest
    assert manifest.with_files(manifest.files).to_dict() == d
    with pytest.raises(DumpError, match=r"this is a delta dump \(the changes since samples/tiny, made "
                                        r"2026-11-27T18:44:58.130526Z\).*vecfmt restore FULL DELTA\.\.\. TARGET"):
        Manifest.from_dict(d)


def test_a_1_0_reader_refuses_a_delta():
    """A reader that knows only 1.0 ignores unknown top-level fields, but not unknown namespace fields."""
    old = json.loads(json.dumps(spec_schema()))
    del old["properties"]["namespaces"]["items"]["properties"]["deleted"]
    del old["properties"]["namespaces"]["items"]["properties"]["rows_after"]
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        jsonschema.validate(_delta(), old)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("base"), "'base' is a required property"),
    (lambda d: d.pop("deletes"), "'deletes' is a required property"),
    (lambda d: d.__setitem__("format_version", "1.0"), "format_version"),
    (lambda d: d.__setitem__("kind", "patch"), "kind"),
    (lambda d: d["namespaces"][0].pop("rows_after"), "'rows_after' is a required property"),
    (lambda d: d["base"].__setitem__("manifest_sha256", "abc"), "base/manifest_sha256"),
    (lambda d: d["namespaces"][0].__setitem__("deleted", 2), "deleted ids differ from its deletes files"),
    (lambda d: d["deletes"][0].__setitem__("path", "elsewhere/deletes-00000.parquet"), "not in a folder"),
    (lambda d: d["deletes"][0].__setitem__("path", "__default__/part-00000.parquet"), "a file is listed twice"),
    (lambda d: d["digests"]["files"][0].__setitem__("rows", 4), "digests differ from its rows"),
    (lambda d: d["digests"]["files"][0].__setitem__("path", "x/digests-00000.parquet"), "not in a folder"),
    (lambda d: d["digests"].pop("algorithm"), "'algorithm' is a required property"),
    (lambda d: d.__setitem__("kind", "full"), "should not be valid"),
    (lambda d: (d.pop("kind"), d.pop("base")), "should not be valid"),
])
def test_inconsistent_deltas_are_refused(mutate, message):
    d = _delta()
    mutate(d)
    with pytest.raises(DumpError, match=message):
        Manifest.from_dict(d, allow_delta=True)
