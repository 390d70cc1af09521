"""The quality commands as a user runs them: ``vecfmt tune``, ``vecfmt plan`` (exit codes, --json,
one-line errors); their logic is tested in test_tune.py, test_plan.py and test_verify.py."""

from __future__ import annotations

import json

import vecfmt
from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli
from tests.quality.test_tune import hnsw, load, vectors  # noqa: F401  (hnsw: the fixture)


def test_tune_recommends_and_plots(hnsw, tmp_path):  # noqa: F811
    run = vecfmt_cli("tune", hnsw, "--value", "10", "--value", "1000", "--target-recall", "0.9",
                     "--plot", str(tmp_path / "r.png"), "--json", "--queries", "40")
    assert run.code == 0, run
    report = json.loads(run.stdout)
    assert report["recommended"] == 1000 and [r["value"] for r in report["rows"]] == [10, 1000]
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = vecfmt_cli("tune", hnsw, "--value", "1000", "--target-recall", "0.5", "--queries", "20")
    assert table.code == 0 and "ef_search" in table.stdout, table
    assert "1000 *" in table.stdout and "…" not in table.stdout, table.stdout


def test_tune_exits_1_when_no_setting_reaches_the_target(hnsw):  # noqa: F811
    run = vecfmt_cli("tune", hnsw, "--value", "1", "--target-recall", "1.0", "--queries", "30")
    assert run.code == 1, run


def test_tune_bad_input_is_one_clear_line(hnsw, tmp_path):  # noqa: F811
    assert_one_clear_error(vecfmt_cli("tune", hnsw, "--rebuild", "16"), "--rebuild takes M,EF_CONSTRUCTION")
    assert_one_clear_error(vecfmt_cli("tune", hnsw, "--knob", "nope"), "nope")
    vecfmt.write_dump(str(tmp_path / "d"), make_table(50, 8))
    vecfmt_cli("import", str(tmp_path / "d"), f"lancedb://{tmp_path}/db?table=t")
    run = vecfmt_cli("tune", f"lancedb://{tmp_path}/db?table=t")
    assert run.code == 2 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_plan_exit_codes(tmp_path):
    vecfmt.write_dump(str(tmp_path / "docs"), make_table(20, 384, document=True),
                      model=vecfmt.EmbeddingModel("all-MiniLM-L6-v2"))
    copy = vecfmt_cli("plan", str(tmp_path / "docs"), "--target-model", "all-MiniLM-L6-v2", "--json")
    assert copy.code == 0 and json.loads(copy.stdout)["decision"] == "copy"
    vecfmt.write_dump(str(tmp_path / "bare"), make_table(20, 8), model=vecfmt.EmbeddingModel("all-MiniLM-L6-v2"))
    impossible = vecfmt_cli("plan", str(tmp_path / "bare"), "--target-model", "text-embedding-3-small")
    assert impossible.code == 1, impossible
    assert_one_clear_error(vecfmt_cli("plan", str(tmp_path / "docs"), "--target-model", "x", "--price", "x=abc"),
                           "--price takes MODEL=USD")


def test_reembed_then_import_then_verify_as_a_user_runs_them(openai_server, tmp_path, monkeypatch):
    """The migration with a model change, end to end through the CLI: re-embed through the (local)
    OpenAI API, import into LanceDB, verify search against the exact answer."""
    from tests.quality.test_reembed import source_dump

    src = source_dump(tmp_path / "src", 80)
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    run = vecfmt_cli("reembed", str(src), str(tmp_path / "new"), "--model", "text-embedding-3-small",
                     "--dimensions", "256", "--base-url", openai_server.url, "--json")
    assert run.code == 0, run
    result = json.loads(run.stdout)
    assert (result["rows"], result["dimension"], result["provider"]) == (80, 256, "openai")
    assert result["tokens"] > 0 and openai_server.api_key not in run.stdout + run.stderr
    again = vecfmt_cli("reembed", str(src), str(tmp_path / "human"), "--model", "text-embedding-3-small",
                       "--dimensions", "256", "--base-url", openai_server.url)  # the human summary line
    assert again.code == 0 and again.stdout.startswith("embedded 80 documents with text-embedding-3-small"), again
    lance = f"lancedb://{tmp_path}/db?table=docs"
    assert vecfmt_cli("import", str(tmp_path / "new"), lance).code == 0
    check = vecfmt_cli("verify", str(tmp_path / "new"), lance, "--full", "--min-recall", "1.0", "--json")
    assert check.code == 0, check
    assert json.loads(check.stdout)["search"]["recall_target"] == 1.0
    manifest = vecfmt.open_dump(str(tmp_path / "new")).manifest
    assert manifest.embedding_model is not None and manifest.embedding_model.name == "text-embedding-3-small"
    assert openai_server.api_key not in (tmp_path / "new" / "manifest.json").read_text()


def test_plan_refuses_infinite_numbers(tmp_path):
    vecfmt.write_dump(str(tmp_path / "docs"), make_table(5, 8, document=True))
    for args in (("--price", "text-embedding-3-small=inf"), ("--price", "text-embedding-3-small=1e309"),
                 ("--request-seconds", "inf")):
        run = vecfmt_cli("plan", str(tmp_path / "docs"), "--target-model", "text-embedding-3-small", *args, "--json")
        assert run.code == 2 and "Infinity" not in run.stdout and len(run.stderr.strip().splitlines()) == 1, run
