import subprocess
import sys

import pytest

from vecfmt.errors import StoreError
from vecfmt.stores.base import AcknowledgedWrites, StoreURI, is_store_uri, store_module


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


def test_no_store_imports_another():
    """A store is a module ``vecfmt/stores/<name>.py`` or a package ``vecfmt/stores/<name>/``, and every
    module inside that package belongs to store <name>. No store imports another store's modules."""
    import ast
    from pathlib import Path

    stores_dir = Path(__file__).resolve().parent.parent / "vecfmt" / "stores"
    stores = {p.stem for p in stores_dir.glob("*.py")} - {"__init__", "base"}
    stores |= {p.name for p in stores_dir.iterdir() if (p / "__init__.py").is_file()}

    def store_of(module: str) -> str | None:
        """The store a dotted module name belongs to; None for the core (vecfmt.stores.base, ...)."""
        parts = module.split(".")
        return parts[2] if parts[:2] == ["vecfmt", "stores"] and len(parts) > 2 and parts[2] in stores else None

    def imports(source: str, package: str) -> set[str]:
        """Every module ``source`` imports, relative imports resolved against ``package``; a name taken
        from a package counts as a module too (``from vecfmt.stores import lancedb``)."""
        found = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                base = ".".join([*anchor, *([node.module] if node.module else [])])
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        return found

    # The checker itself: a package's modules belong to its store, and a cross-store import is seen
    # however it is written.
    assert store_of("vecfmt.stores.pgvector.copy_binary") == "pgvector"
    assert store_of("vecfmt.stores.lancedb") == "lancedb" and store_of("vecfmt.stores.base") is None
    for package, statement in [
        ("vecfmt.stores", "import vecfmt.stores.pgvector.connect"),
        ("vecfmt.stores", "from vecfmt.stores import pgvector"),
        ("vecfmt.stores", "from . import pgvector"),
        ("vecfmt.stores.lancedb", "from ..pgvector.connect import Target"),  # as if lancedb were a package
    ]:
        assert "pgvector" in {store_of(m) for m in imports(statement, package)}, statement

    checked = set()
    for path in stores_dir.rglob("*.py"):
        parts = path.relative_to(stores_dir.parent.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        own = store_of(module)
        others = {m for m in imports(path.read_text(), package) if store_of(m) not in (None, own)}
        assert not others, f"{path.relative_to(stores_dir)} (store {own}) imports {sorted(others)}"
        checked.add(own)
    assert {"lancedb", "pgvector"} <= checked


def test_secrets_in_query_strings_are_redacted():
    from vecfmt.storage import redact

    shown = redact("s3://bucket/x?access_key=AKIA&secret_key=TOPSECRET&region=us-east-1")
    assert "TOPSECRET" not in shown and "region=us-east-1" in shown


def test_an_unencoded_at_sign_in_a_pgvector_password_is_refused_without_echo():
    from vecfmt.stores.base import open_exporter

    with pytest.raises(StoreError, match="write an '@' inside the user or password as %40") as caught:
        open_exporter("pgvector://app:p@ssw0rd@127.0.0.1:1/db?table=t")
    assert "ssw0rd" not in str(caught.value)


def test_acknowledged_writes_count_the_running_request_after_a_failure(tmp_path):
    """Requests running or queued when the import fails still land their rows: the count waits for them,
    so the error never says fewer rows than the target holds."""
    import threading

    writes = AcknowledgedWrites("test", workers=1, state_dir=str(tmp_path))
    writes.path = tmp_path / "state.json"
    started, release = threading.Event(), threading.Event()
    landed: list[int] = []

    def request(rows: int) -> None:
        started.set()
        release.wait(5)
        landed.append(rows)

    writes.submit(300, request, 300)
    started.wait(5)
    writes.submit(600, request, 600)  # queued behind the running one on the single worker
    threading.Timer(0.2, release.set).start()
    assert writes.rows_committed() == 600 and landed == [300, 600]
    writes.close()


def test_a_broken_dumps_progress_is_forgotten_and_not_written_again(tmp_path):
    writes = AcknowledgedWrites("test", workers=1, state_dir=str(tmp_path))
    writes.path = tmp_path / "state.json"
    writes.submit(100, lambda: None)
    writes.drain(0)
    assert writes.path.exists()
    writes.abort()
    assert writes.rows_committed() == 100 and not writes.path.exists()  # counted, not saved for a resume
    writes.close()
