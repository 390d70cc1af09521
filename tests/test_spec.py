"""The spec, its JSON Schema, the code and the samples say the same thing."""

import hashlib
import json
import re
import struct
from pathlib import Path

import jsonschema
import pytest

import vecfmt
from tests.helpers import make_table
from vecfmt.errors import DumpError
from vecfmt.manifest import DELTA_FORMAT_VERSION, Manifest
from vecfmt.ops import validate_dump
from vecfmt.ops.incremental import DELETES_PREFIX, DELETES_SCHEMA, DIGESTS_PREFIX, DIGESTS_SCHEMA, row_digests
from vecfmt.schema import DEFAULT_NAMESPACE_DIR, METRICS, namespace_dir

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "spec" / "vecfmt-v1.md").read_text()
SCHEMA = json.loads((ROOT / "spec" / "manifest.schema.json").read_text())


def test_the_worked_example_is_the_tiny_sample_and_valid():
    example, _ = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", SPEC, re.S)]
    jsonschema.validate(example, SCHEMA)
    assert example == json.loads((ROOT / "samples" / "tiny" / "manifest.json").read_text())


def test_the_delta_example_is_a_delta_of_the_tiny_sample():
    _, delta = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", SPEC, re.S)]
    jsonschema.validate(delta, SCHEMA)
    base = (ROOT / "samples" / "tiny" / "manifest.json").read_bytes()
    assert delta["base"]["manifest_sha256"] == hashlib.sha256(base).hexdigest()
    assert delta["base"]["created_at"] == json.loads(base)["created_at"]
    manifest = Manifest.from_dict(delta, allow_delta=True)
    assert manifest.is_delta and manifest.format_version == DELTA_FORMAT_VERSION
    assert manifest.to_dict() == delta
    with pytest.raises(DumpError, match="this is a delta dump"):
        Manifest.from_dict(delta)


def test_the_manifest_table_lists_every_field_of_the_schema():
    table = SPEC.split("## 6. The manifest")[1].split("### 6.1")[0]
    fields = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(fields) == sorted(SCHEMA["properties"]) and len(fields) == len(set(fields))
    namespace_fields = list(SCHEMA["properties"]["namespaces"]["items"]["properties"])
    assert namespace_fields == ["name", "path", "rows", "deleted", "rows_after"]
    assert "list of `{name, path, rows}`" in table and "`deleted`" in table and "`rows_after`" in table


@pytest.mark.parametrize("section, schema, prefix", [
    ("### 6.1", DELETES_SCHEMA, DELETES_PREFIX),
    ("### 6.2", DIGESTS_SCHEMA, DIGESTS_PREFIX),
])
def test_the_deletes_and_digests_file_schemas_are_the_code(section, schema, prefix):
    text = SPEC.split(section)[1].split("\n## ")[0].split("\n### ")[0]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (no|yes) \|", text, re.M)
    assert [(name, kind, null == "yes") for name, kind, null in rows] == [
        (f.name, str(f.type), f.nullable) for f in schema]
    assert f"`{prefix}-NNNNN.parquet`" in text


def test_the_digest_algorithm_of_the_spec_is_the_code():
    """vecfmt-row-digest-1 computed from the spec's text, one row at a time in plain Python integers."""
    table = make_table(20, 5, document=True, sparse=True, named={"title": 4})
    batch = table.combine_chunks().to_batches()[0]
    mask = (1 << 64) - 1

    def fmix(x: int) -> int:
        x ^= x >> 33
        x = x * 0xFF51AFD7ED558CCD & mask
        x ^= x >> 33
        x = x * 0xC4CEB9FE1A85EC53 & mask
        return x ^ x >> 33

    def vector(values: list[float] | None) -> int:
        if values is None:
            return 0x9E3779B97F4A7C15
        raw = struct.pack(f"<{len(values)}f", *values)
        size = 8 if len(values) % 2 == 0 else 4
        total = 0
        for j in range(len(raw) // size):
            w = int.from_bytes(raw[j * size:(j + 1) * size], "little")
            w = (w ^ w >> 33) * 0xFF51AFD7ED558CCD & mask
            w ^= w >> 33
            total += w * (fmix(j + 1) | 1)
        return total & mask

    def text(raw: bytes | None) -> int:
        if raw is None:
            return 0x9E3779B97F4A7C15
        total = 0
        for k, b in enumerate(raw):
            x = (b | k << 8) * 0xFF51AFD7ED558CCD & mask
            x ^= x >> 32
            total += x * 0xC4CEB9FE1A85EC53
        return fmix(total + len(raw) * 0xD6E8FEB86659FD93 & mask)

    for row, expected in zip(batch.to_pylist(), row_digests(batch).tolist(), strict=True):
        h = 0
        for i, name in enumerate(batch.schema.names):
            value = row[name]
            if name == "id":
                continue
            if name.startswith("values"):
                d = vector(value)
            elif name == "sparse_values":
                d = fmix(text(struct.pack(f"<{len(value['indices'])}I", *value["indices"]))
                         ^ text(struct.pack(f"<{len(value['values'])}f", *value["values"])) * 0xFF51AFD7ED558CCD
                         & mask)
            else:
                d = text(None if value is None else value.encode())
            h = fmix(h * 0xD6E8FEB86659FD93 + d + i & mask)
        assert h == expected


def test_samples_are_valid_dumps():
    for name in ("tiny", "minilm-docs"):
        assert validate_dump(str(ROOT / "samples" / name)) == [], name
    docs = vecfmt.open_dump(str(ROOT / "samples" / "minilm-docs")).manifest
    assert docs.vectors[0].dimension == 384 and docs.document and docs.total_rows == 2000
    assert docs.embedding_model.name == "sentence-transformers/all-MiniLM-L6-v2"


def test_metric_names_agree():
    assert tuple(SCHEMA["properties"]["vectors"]["items"]["properties"]["metric"]["enum"]) == METRICS
    table_rows = re.findall(r"^\| `(\w+)` \| ", SPEC.split("## 5. Metrics")[1].split("## 6.")[0], re.M)
    assert tuple(table_rows) == METRICS


def test_namespace_examples_in_the_spec_hold():
    examples = re.findall(r"`([^`]*)` → `([^`]+)`", SPEC.split("### 2.1")[1].split("## 3.")[0])
    assert len(examples) == 4
    for name, folder in examples:
        assert namespace_dir(name) == folder
    assert f"`{DEFAULT_NAMESPACE_DIR}`" in SPEC


def test_the_tools_exit_codes_and_the_overwrite_rules_are_the_codes():
    from vecfmt.cli import COULD_NOT_RUN, app
    from vecfmt.writer import EXPORT_STATE

    table = SPEC.split("### 7.4")[1].split("## 8.")[0]
    assert re.findall(r"^\| (\d) \|", table, re.M) == ["0", "1", str(COULD_NOT_RUN)]
    helps = {c.name: " ".join((c.callback.__doc__ or "").split()) for c in app.registered_commands}
    assert f"{COULD_NOT_RUN} when it could not compare" in helps["diff"]
    assert f"{COULD_NOT_RUN} when it could not run" in helps["validate"]
    assert f"`{EXPORT_STATE}`" in SPEC.split("### 7.1")[1].split("### 7.2")[0]
