"""Passwords in store URIs: parsed out before the options, never shown however they are spelled."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.helpers import assert_one_clear_error, vecfmt_cli
from vecfmt.errors import StoreError
from vecfmt.storage import redact
from vecfmt.stores.base import StoreURI

# Characters that used to cut a password short (and leak the rest as an option or a host name).
PASSWORDS = ["pa?ss", "pa#ss", "pa/ss", "p@ss", "pa%3Fss", "a:b", "Wr0ng?Xy7/Q#z:w"]


def forms(password: str) -> list[str]:
    """What a password may look like in text: as written, decoded, encoded."""
    from urllib.parse import unquote

    return [password, unquote(password), quote(password, safe="")]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("encode", [False, True])
def test_the_userinfo_is_split_before_the_options(password, encode):
    written = quote(password, safe="") if encode else password
    uri = StoreURI.parse(f"pgvector://app:{written}@127.0.0.1:5432/db?table=items&schema=s")
    assert uri.options == {"table": "items", "schema": "s"}
    assert uri.location == f"app:{written}@127.0.0.1:5432/db"
    assert uri.userinfo == f"app:{written}" and uri.host_location == "127.0.0.1:5432/db"
    shown = [str(uri), repr(uri), redact(uri.raw)]
    for text in shown:
        for form in forms(written):
            assert form not in text, text
        assert "app:***@127.0.0.1:5432/db?table=items&schema=s" in text, text


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_hides_the_password_values_inside_other_text(password):
    uri = StoreURI.parse(f"pgvector://app:{password}@h/db?table=t")
    message = f"connection to {password} failed; encoded {quote(password, safe='')}"
    shown = redact(message, uri.secrets)
    for form in forms(password):
        assert form not in shown, shown


def test_at_signs_after_the_host_are_not_userinfo():
    # '@' inside options (a jsonb operator, an address) or a path is not the end of a userinfo
    uri = StoreURI.parse("pgvector://app:pw@h:5432/db?query=SELECT * FROM t WHERE m @> '{}'")
    assert uri.userinfo == "app:pw" and uri.options == {"query": "SELECT * FROM t WHERE m @> '{}'"}
    uri = StoreURI.parse("pgvector://h:5432/db?query=SELECT 1 WHERE 'a@b.c' <> ''")
    assert uri.userinfo is None and uri.options["query"] == "SELECT 1 WHERE 'a@b.c' <> ''"
    uri = StoreURI.parse("lancedb://./data@v2/db?table=t")
    assert uri.userinfo is None and uri.location == "./data@v2/db" and uri.options == {"table": "t"}
    assert str(StoreURI.parse("lancedb:///a/b?table=t")) == "lancedb:///a/b?table=t"


def test_a_hash_is_no_fragment_that_swallows_options():
    uri = StoreURI.parse("pgvector://app@h/db?table=items#x&schema=s")
    assert uri.options == {"table": "items#x", "schema": "s"}
    assert "schema=s" in str(uri)


def test_unparsable_options_are_refused_without_the_password():
    with pytest.raises(StoreError) as caught:
        StoreURI.parse("pgvector://app:pa?ss@h/db?table=t&&")
    assert "pa?ss" not in str(caught.value) and "app:***@h/db" in str(caught.value)


def test_stores_declare_their_options():
    uri = StoreURI.parse("x://loc?table=t&tabel=u")
    uri.check_options({"table", "tabel"})
    with pytest.raises(StoreError, match=r"^x: unknown option 'tabel' \(known: table\)$"):
        uri.check_options({"table"})


def test_lancedb_object_store_credentials_never_show():
    """A LanceDB location on an object store may carry credentials; its errors (and the driver's echo
    of the location) show neither the password nor its encoded forms."""
    for uri in ("lancedb://s3://AKIAX:sekr3t%2Fpw@bucket/db?table=t",
                "lancedb://s3://AKIAX:sekr3t%2Fpw@127.0.0.1:9/db?table=t"):  # fmt: skip
        run = vecfmt_cli("export", uri, "/nonexistent/out", timeout=120)
        assert_one_clear_error(run, "cannot open LanceDB database s3://AKIAX:***@")
        assert "sekr3t" not in run.stdout + run.stderr
