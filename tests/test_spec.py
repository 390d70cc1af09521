"""The spec, its JSON Schema, the code and the samples say the same thing."""

import json
import re
from pathlib import Path

import jsonschema

import vecfmt
from vecfmt.ops import validate_dump
from vecfmt.schema import DEFAULT_NAMESPACE_DIR, METRICS, namespace_dir

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "spec" / "vecfmt-v1.md").read_text()
SCHEMA = json.loads((ROOT / "spec" / "manifest.schema.json").read_text())


def test_the_worked_example_is_the_tiny_sample_and_valid():
    [example] = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", SPEC, re.S)]
    jsonschema.validate(example, SCHEMA)
    assert example == json.loads((ROOT / "samples" / "tiny" / "manifest.json").read_text())


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
