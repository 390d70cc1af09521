"""validate names every problem of a dump as file + row + what, and keeps going: null ids, metadata
nested deeper than a parser follows, metadata JSON that is not RFC 8259 (NaN, Infinity)."""

import json

import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import make_table, rewrite_part, vecfmt_cli, write_raw_dump
from vecfmt.errors import DumpError
from vecfmt.ops import diff_dumps, inspect_dump, validate_dump
from vecfmt.schema import parse_metadata_json

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON, deeper than Python's recursion limit


def test_a_null_id_is_named_with_file_and_row(tmp_path):
    root = str(tmp_path / "d")
    table = make_table(5, 4)
    vecfmt.write_dump(root, table, namespace="functions")
    path = rewrite_part(root, 0, table.set_column(0, "id", pa.array(["a", None, "c", "d", "e"])))
    problems = [str(p) for p in validate_dump(root)]
    assert problems == [f"{path} row 1: id is null"]
    run = vecfmt_cli("validate", root)
    assert run.code == 1 and "0 ids occur" not in run.stderr
    assert f"{path} row 1: id is null" in run.stderr
    with pytest.raises(DumpError, match=f"{path} row 1: id is null"):
        diff_dumps(root, root)  # reading refuses it too


def test_metadata_nested_too_deeply_is_a_problem_of_the_dump_and_checking_goes_on(tmp_path):
    root = str(tmp_path / "d")
    table = make_table(4, 4).set_column(2, "metadata", pa.array(['{"a": 1}', '{"deep": ' + DEEP + "}", "[1]", None]))
    write_raw_dump(root, {"": table})
    problems = [str(p) for p in validate_dump(root)]
    assert problems == [
        "__default__/part-00000.parquet row 1: metadata nested too deeply to check (id 'id-1')",
        "__default__/part-00000.parquet row 2: metadata is not a JSON object (id 'id-2')",
    ]
    run = vecfmt_cli("validate", root)
    assert run.code == 1 and "RecursionError" not in run.stderr and "nested too deeply" in run.stderr
    assert "row 2: metadata is not a JSON object" in run.stderr
    [ns] = inspect_dump(root)["namespaces"]  # key statistics skip what they cannot parse
    assert ns["metadata_keys"]["keys"]["a"]["types"] == ["integer"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_metadata_with_nan_or_infinity_is_not_json(tmp_path, constant):
    root = str(tmp_path / "d")
    texts = ['{"a": 1}', '{"score": ' + constant + "}", '{"note": "NaN and Infinity in a string are fine"}']
    write_raw_dump(root, {"": make_table(3, 4).set_column(2, "metadata", pa.array(texts))})
    [problem] = validate_dump(root)
    assert (problem.file, problem.row) == ("__default__/part-00000.parquet", 1)
    assert "NaN or Infinity" in problem.message and "RFC 8259" in problem.message


def test_the_strict_parser(tmp_path):
    assert parse_metadata_json('{"a": [1, 2.5, true, null, "NaN"]}') == {"a": [1, 2.5, True, None, "NaN"]}
    for text in ("NaN", '{"a": -Infinity}', "[Infinity]"):
        with pytest.raises(ValueError, match="NaN or Infinity"):
            parse_metadata_json(text)
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_metadata_json(DEEP)
    assert json.loads("[NaN]")  # what Python's own parser lets through
