"""Bad input through the real command: one clear error line, non-zero exit, no traceback."""

import json

import numpy as np
import pyarrow as pa
import pytest

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli, write_raw_dump
from vecfmt.schema import vectors_array


@pytest.fixture
def good(tmp_path):
    uri = str(tmp_path / "good")
    manifest = vecfmt.write_dump(uri, make_table(300, 8, document=True))
    return tmp_path / "good", manifest


def part(root, manifest):
    return root / manifest.files[0].path


def test_truncated_parquet_file(good):
    root, manifest = good
    part(root, manifest).write_bytes(part(root, manifest).read_bytes()[:-200])
    for command in ("inspect", "diff"):
        args = [command, str(root)] + ([str(root)] if command == "diff" else [])
        assert_one_clear_error(vecfmt_cli(*args), "__default__/part-00000.parquet", "truncated")
    run = vecfmt_cli("validate", str(root))
    assert run.code == 1 and "truncated or altered" in run.stderr and "Traceback" not in run.stderr


def test_flipped_byte(good):
    root, manifest = good
    data = bytearray(part(root, manifest).read_bytes())
    data[len(data) // 3] ^= 0x10
    part(root, manifest).write_bytes(bytes(data))
    assert_one_clear_error(vecfmt_cli("inspect", str(root)), "part-00000.parquet is corrupt", "SHA-256")
    run = vecfmt_cli("validate", str(root), "--json")
    assert run.code == 1
    [problem] = json.loads(run.stdout)["problems"]
    assert problem["file"] == "__default__/part-00000.parquet" and "SHA-256" in problem["message"]


def test_missing_manifest(good):
    root, _ = good
    (root / "manifest.json").unlink()
    assert_one_clear_error(vecfmt_cli("inspect", str(root)), "has no manifest.json")


def test_unknown_format_version(good):
    root, _ = good
    m = json.loads((root / "manifest.json").read_text())
    m["format_version"] = "3.1"
    (root / "manifest.json").write_text(json.dumps(m))
    assert_one_clear_error(vecfmt_cli("inspect", str(root)), "format version 3.1 is newer")
    run = vecfmt_cli("validate", str(root))
    assert run.code == 1 and "3.1" in run.stderr


def test_manifest_that_is_not_json(good):
    root, _ = good
    (root / "manifest.json").write_text("{ not json")
    assert_one_clear_error(vecfmt_cli("inspect", str(root)), "manifest.json is not valid JSON")


def test_dims_mismatch_between_manifest_and_file(good):
    root, _ = good
    m = json.loads((root / "manifest.json").read_text())
    m["vectors"][0]["dimension"] = 12
    (root / "manifest.json").write_text(json.dumps(m))
    assert_one_clear_error(vecfmt_cli("inspect", str(root)), "column 'values' has 8 dimensions, the manifest says 12")
    run = vecfmt_cli("validate", str(root))
    assert run.code == 1 and "__default__/part-00000.parquet" in run.stderr


def test_nan_in_a_vector_is_named_with_file_and_row(tmp_path):
    table = make_table(50, 4)
    matrix = table.column("values").combine_chunks().values.to_numpy().reshape(50, 4).copy()
    matrix[17, 2] = np.nan
    write_raw_dump(str(tmp_path / "d"), {"": table.set_column(1, "values", vectors_array(matrix))})
    run = vecfmt_cli("validate", str(tmp_path / "d"))
    assert run.code == 1
    assert "__default__/part-00000.parquet row 17: vector 'default' holds NaN or inf (id 'id-17')" in run.stderr
    assert_one_clear_error(
        vecfmt_cli("import", str(tmp_path / "d"), f"lancedb://{tmp_path}/db?table=t"), "NaN or inf", "id-17"
    )


def test_duplicate_ids_are_named(tmp_path):
    table = pa.concat_tables([make_table(20, 4), make_table(20, 4, prefix="x-").slice(0, 3)])
    table = table.set_column(0, "id", pa.array([f"id-{i}" for i in range(20)] + ["id-5", "x-1", "x-2"]))
    write_raw_dump(str(tmp_path / "d"), {"": table})
    run = vecfmt_cli("validate", str(tmp_path / "d"))
    assert run.code == 1
    assert "row 5: duplicate id 'id-5'" in run.stderr and "row 20: duplicate id 'id-5'" in run.stderr
    assert_one_clear_error(
        vecfmt_cli("import", str(tmp_path / "d"), f"lancedb://{tmp_path}/db?table=t"), "duplicate ids", "'id-5'"
    )


def test_metadata_that_is_not_a_json_object(tmp_path):
    table = make_table(5, 4).set_column(2, "metadata", pa.array(['{"a": 1}', "[1, 2]", None, "{oops", "{}"]))
    write_raw_dump(str(tmp_path / "d"), {"": table})
    run = vecfmt_cli("validate", str(tmp_path / "d"))
    assert run.code == 1
    assert "row 1: metadata is not a JSON object" in run.stderr and "row 3: metadata" in run.stderr
    assert "row 2" not in run.stderr


@pytest.mark.parametrize("uri", ["/nonexistent/dump", "file:///nonexistent/dump"])
def test_non_existent_dump(uri):
    assert_one_clear_error(vecfmt_cli("inspect", uri), "does not exist")


def test_unknown_store_scheme(good, tmp_path):
    root, _ = good
    assert_one_clear_error(vecfmt_cli("import", str(root), "nosuchstore://x?table=y"),
                           "no store is registered for nosuchstore://")


def test_missing_lancedb_table(tmp_path):
    (tmp_path / "db").mkdir()  # a database without that table (a missing folder: test_lancedb.py)
    assert_one_clear_error(vecfmt_cli("export", f"lancedb://{tmp_path}/db?table=nope", str(tmp_path / "out")),
                           "LanceDB table 'nope' does not exist")


def test_lancedb_uri_without_table(good, tmp_path):
    root, _ = good
    assert_one_clear_error(vecfmt_cli("import", str(root), f"lancedb://{tmp_path}/db"), "needs the option table=")


def test_good_dump_validates_inspects_and_diffs(good):
    root, _ = good
    run = vecfmt_cli("validate", str(root))
    assert run.code == 0 and run.stderr == ""
    report = json.loads(vecfmt_cli("inspect", str(root), "--json").stdout)
    assert report["total_rows"] == 300
    [ns] = report["namespaces"]
    assert ns["metadata_keys"]["keys"]["i"]["types"] == ["integer"]
    assert ns["metadata_keys"]["keys"]["nested"]["types"] == ["object"]
    assert ns["metadata_keys"]["keys"]["i"]["fill_rate"] == pytest.approx(257 / 300)
    assert ns["vector_norms"]["values"]["normalized"] is False
    diff = vecfmt_cli("diff", str(root), str(root), "--json")
    assert diff.code == 0 and json.loads(diff.stdout)["identical"] is True


def test_commands_are_quiet_when_not_a_terminal(good, tmp_path):
    root, _ = good
    run = vecfmt_cli("import", str(root), f"lancedb://{tmp_path}/db?table=t")
    assert run.code == 0 and run.stderr == ""
    assert "imported 300 rows" in run.stdout
    quiet = vecfmt_cli("export", f"lancedb://{tmp_path}/db?table=t", str(tmp_path / "back"), "--quiet")
    assert quiet.code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_credentials_in_a_dump_uri_are_refused_and_never_shown():
    run = vecfmt_cli("inspect", "s3://AKIAEXAMPLE:topsecret@bucket/dump")
    assert_one_clear_error(run, "credentials do not belong in a dump URI")
    assert "topsecret" not in run.stderr + run.stdout


def test_diff_exit_codes_are_those_of_cmp(good, tmp_path):
    root, _ = good
    vecfmt.write_dump(str(tmp_path / "other"), make_table(10, 8))
    assert vecfmt_cli("diff", str(root), str(root)).code == 0
    assert vecfmt_cli("diff", str(root), str(tmp_path / "other")).code == 1
    missing = vecfmt_cli("diff", str(root), str(tmp_path / "nope"))
    assert_one_clear_error(missing, "does not exist")
    assert missing.code == 2
    assert vecfmt_cli("diff", str(root), str(root), "--output", str(tmp_path / "no" / "such" / "x.parquet")).code == 2
    assert "2 when it could not compare" in " ".join(vecfmt_cli("diff", "--help").stdout.split())


def test_validate_exit_codes(good, tmp_path):
    root, _ = good
    assert vecfmt_cli("validate", str(root)).code == 0
    missing = vecfmt_cli("validate", str(tmp_path / "nope"))
    assert_one_clear_error(missing, "does not exist")
    assert missing.code == 2  # nothing to check is not an invalid dump
    (root / "manifest.json").unlink()
    assert vecfmt_cli("validate", str(root)).code == 1  # a folder without a manifest is an incomplete dump
    assert "2 when it could not run" in " ".join(vecfmt_cli("validate", "--help").stdout.split())


def test_export_with_workers_matches_a_one_process_export(tmp_path):
    from tests.helpers import write_namespaced

    dump = str(tmp_path / "a")
    write_namespaced(dump, {"left": make_table(400, 8), "right": make_table(300, 8, seed=1)})
    target = f"lancedb://{tmp_path / 'db'}?table=t"
    assert vecfmt_cli("import", dump, target, "--quiet").code == 0
    run = vecfmt_cli("export", target, str(tmp_path / "parallel"), "--workers", "2", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["total_rows"] == 700
    assert vecfmt_cli("export", target, str(tmp_path / "one"), "--quiet").code == 0
    assert vecfmt_cli("validate", str(tmp_path / "parallel")).code == 0
    same = vecfmt_cli("diff", str(tmp_path / "one"), str(tmp_path / "parallel"))
    assert same.code == 0, same.stdout
    assert_one_clear_error(vecfmt_cli("export", target, str(tmp_path / "parallel"), "--workers", "2"),
                           "already holds a dump")
