import subprocess
import sys

import pytest

from vecfmt.errors import StoreError
from vecfmt.stores.base import StoreURI, is_store_uri, store_module


def test_uri_grammar():
    uri = StoreURI.parse("pgvector://app:pw@db.internal:5432/prod?table=items&m=16")
    assert (uri.scheme, uri.location) == ("pgvector", "app:pw@db.internal:5432/prod")
    assert uri.options == {"table": "items", "m": "16"}
    assert uri.int_option("m") == 16
    assert "pw" not in str(uri) and "app:***@db.internal:5432" in str(uri)
    assert StoreURI.parse("lancedb://./rel/path?table=t").location == "./rel/path"
    assert StoreURI.parse("lancedb:///abs/path?table=t").location == "/abs/path"


def test_uri_errors_are_clear():
    with pytest.raises(StoreError, match="not a store URI"):
        StoreURI.parse("just-a-path")
    with pytest.raises(StoreError, match="needs the option table="):
        StoreURI.parse("lancedb://x").require("table")
    with pytest.raises(StoreError, match="must be a whole number"):
        StoreURI.parse("x://y?m=abc").int_option("m")


def test_stores_are_found_by_entry_point():
    assert store_module("lancedb").__name__ == "vecfmt.stores.lancedb"
    assert is_store_uri("lancedb://x?table=y") and not is_store_uri("s3://bucket/dump")
    with pytest.raises(StoreError, match="no store is registered for weird://"):
        store_module("weird")


def test_vecfmt_imports_without_store_sdks_and_says_which_extra_to_install(tmp_path):
    code = (
        "import sys; sys.modules['lancedb'] = None\n"  # as if the SDK were not installed
        "import vecfmt, vecfmt.cli, vecfmt.transfer, vecfmt.ops\n"
        "from vecfmt.stores.base import open_exporter\n"
        "from vecfmt.errors import StoreError\n"
        "try:\n"
        f"    open_exporter('lancedb://{tmp_path}?table=t')\n"
        "except StoreError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'vecfmt[lancedb]'" in out


def test_the_core_imports_no_store_sdk():
    code = "import sys, vecfmt, vecfmt.transfer, vecfmt.ops, vecfmt.cli; " \
           "print(sorted(m for m in ('lancedb', 'psycopg', 'adbc_driver_postgresql') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_store_module_imports_another():
    import ast
    from pathlib import Path

    stores = Path(__file__).resolve().parent.parent / "vecfmt" / "stores"
    modules = {p.stem for p in stores.glob("*.py")} - {"__init__", "base"}

    def store_of(module: str) -> str:
        """``<store>_<something>`` is a private part of store ``<store>``; any other module is a store."""
        prefix = module.split("_", 1)[0]
        return prefix if prefix != module and prefix in modules else module

    assert store_of("pgvector_copy") == "pgvector" and store_of("lancedb") == "lancedb"
    for path in stores.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"vecfmt.stores.{a.name}" for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module == "vecfmt.stores" for a in n.names}  # fmt: skip
        own = store_of(path.stem) if path.stem in modules else None
        others = {f"vecfmt.stores.{m}" for m in modules if store_of(m) != own}
        assert not imported & others, f"{path.name} imports {imported & others}"


def test_secrets_in_query_strings_are_redacted():
    from vecfmt.storage import redact

    shown = redact("s3://bucket/x?access_key=AKIA&secret_key=TOPSECRET&region=us-east-1")
    assert "TOPSECRET" not in shown and "region=us-east-1" in shown


def test_an_unencoded_at_sign_in_a_pgvector_password_is_refused_without_echo():
    from vecfmt.stores.base import open_exporter

    with pytest.raises(StoreError, match="write an '@' inside the user or password as %40") as caught:
        open_exporter("pgvector://app:p@ssw0rd@127.0.0.1:1/db?table=t")
    assert "ssw0rd" not in str(caught.value)
