"""Chroma's facts: distance spaces, collection names (and the collection of each namespace), and the
metadata rule (the dump's JSON kept whole under one key, flat copies of its scalar keys beside it)."""

from __future__ import annotations

import json
import re
from typing import Any

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.schema import parse_metadata_json

try:  # a dependency of chromadb: parses a small metadata object some 20x faster than json, once per record
    import orjson
except ImportError:  # without chromadb there is nothing to import or export; json alone still parses
    orjson = None  # type: ignore[assignment]

# Chroma's spaces <-> the format's metrics (l2 is squared L2 in Chroma's distances; the metric is the same)
SPACES = {"cosine": "cosine", "l2": "euclidean", "ip": "dot"}
METRIC_TO_SPACE = {metric: space for space, metric in SPACES.items()}
DEFAULT_SPACE = "l2"  # Chroma's default

# What vecfmt writes beside a collection's own metadata.
NAMESPACE_OF = "vecfmt:of"  # the collection of a namespace: which collection it belongs to
NAMESPACE_KEY = "vecfmt:namespace"  # ... and its namespace
DOCUMENT_KEY = "vecfmt:document"  # whether the dump had a document column
MARKERS = (NAMESPACE_OF, NAMESPACE_KEY, DOCUMENT_KEY)

# A record's metadata: the dump's JSON text, exactly as it was, under this key.
JSON_KEY = "_vecfmt_metadata"
STAGED = ".vecfmt-staged-"  # a replace's collections until the swap
RETIRED = ".vecfmt-old-"  # the replaced collection during the swap

# Chroma 1.x: 3-512 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit, no "..".
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
INT64 = (-(2**63), 2**63)
# orjson reads an integer beyond 64 bits as a float: texts with 19 digits in a row are left to json
LONG_NUMBER = re.compile(r"[0-9]{19}")
_MISSING = object()


def space_to_metric(space: str, where: str) -> str:
    if space not in SPACES:
        raise StoreError(f"{where} uses the space {space!r}, which vecfmt does not know (cosine, l2, ip)")
    return SPACES[space]


def metric_to_space(metric: str) -> str:
    if metric not in METRIC_TO_SPACE:
        raise StoreError(f"chroma: the dump's metric {metric!r} has no Chroma space (Chroma has cosine, l2 for "
                         "euclidean, ip for dot)")
    return METRIC_TO_SPACE[metric]


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name) or ".." in name:
        raise StoreError(f"chroma: {name!r} is not a valid collection name (3-512 letters, digits, '.', '_' or '-', "
                         "starting and ending with a letter or digit, no '..')")
    return name


def collection_for(name: str, namespace: str) -> str:
    """The collection holding ``namespace`` of the collection ``name``: ``name`` itself for the default
    namespace, ``name.namespace`` for the others (marked in their metadata so an export finds them)."""
    if not namespace:
        return name
    if not NAMESPACE_NAME.match(namespace) or ".." in namespace:
        raise StoreError(f"chroma: the namespace {namespace!r} cannot be part of a collection name (letters, digits, "
                         "'.', '_' or '-', starting and ending with a letter or digit): import it with --namespace "
                         "into a collection of its own")
    return check_collection_name(f"{name}.{namespace}")


# --- metadata ------------------------------------------------------------------------------------------


def parse_json(text: str) -> Any:
    """``parse_metadata_json(text)``, sooner: orjson where it gives the same value (strict RFC 8259 alike,
    same floats and duplicate keys; no integer of 19 digits or more), json for the rest and for every text
    orjson refuses (NaN, 1e400, lone surrogates, deep nesting), which then fails or not as it always did."""
    if orjson is not None and not LONG_NUMBER.search(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return parse_metadata_json(text)


def _flat_value(value: Any) -> bool:
    """A value Chroma stores as it is: str, bool, int64, float, or a non-empty list of one of those types."""
    kind = type(value)
    if kind is str or kind is float or kind is bool:
        return True
    if kind is int:
        return INT64[0] <= value < INT64[1]
    if kind is list and value:
        first = type(value[0])
        if first not in (str, bool, int, float) or any(type(v) is not first for v in value):
            return False
        return first is not int or all(INT64[0] <= v < INT64[1] for v in value)
    return False


def flat_key(key: str) -> bool:
    # "#" and "$" start Chroma's own keys and operators, "chroma:" is reserved, and ours holds the JSON.
    return bool(key) and key[0] not in "#$" and not key.startswith("chroma:") and key != JSON_KEY


def flat_part(value: Any) -> dict[str, Any]:
    """The keys of a metadata object that Chroma can hold (and filter on) as they are. Runs once per record
    both ways, so the common kinds (str, float, bool, int64) are tested inline."""
    if type(value) is not dict:
        return {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        kind = type(item)
        if kind is int:
            if not INT64[0] <= item < INT64[1]:
                continue
        elif kind is not str and kind is not float and kind is not bool and not _flat_value(item):
            continue
        if key and key[0] not in "#$" and key != JSON_KEY and not key.startswith("chroma:"):  # flat_key, inline
            flat[key] = item
    return flat


def to_chroma(text: str | None, record_id: str) -> dict[str, Any] | None:
    """One row's metadata for Chroma: the JSON text under ``_vecfmt_metadata`` plus its flat keys."""
    if text is None:
        return None
    try:
        value = parse_json(text)
    except (ValueError, InvalidDataError):
        raise InvalidDataError(f"chroma: record {record_id!r}: metadata is not valid JSON") from None
    flat = flat_part(value)
    flat[JSON_KEY] = text
    return flat


def _holds(metadata: dict[str, Any], flat: dict[str, Any]) -> bool:
    """``metadata`` (a record as Chroma gives it back) is ``flat`` plus the JSON key, with JSON types kept
    (Python's == has 1 == 1.0 == True): the same keys, values and their types, and the element type of
    lists (which are of one type here)."""
    if len(metadata) != len(flat) + 1 or JSON_KEY not in metadata:
        return False
    for key, value in flat.items():
        other = metadata.get(key, _MISSING)
        if type(value) is not type(other) or value != other:
            return False
        if type(value) is list and any(type(x) is not type(y) for x, y in zip(value, other, strict=True)):
            return False
    return True



def from_chroma(metadata: dict[str, Any] | None, record_id: str) -> str | None:
    """One record's metadata as the dump's JSON text: the text vecfmt kept, when the record's flat keys are
    still what that text says; otherwise the keys as Chroma holds them win (nested values from the text)."""
    if not metadata:
        return None
    text = metadata.get(JSON_KEY)
    kept: Any = _MISSING
    if isinstance(text, str):
        try:
            kept = parse_json(text)
        except (ValueError, InvalidDataError):
            pass
        else:
            if _holds(metadata, flat_part(kept)):
                return text  # as vecfmt wrote it (the common case, once per record: no copy of the record)
    held = {k: v for k, v in metadata.items() if k != JSON_KEY}
    if kept is _MISSING:
        return _dumps(held, record_id)
    # Changed in Chroma since vecfmt wrote it: Chroma's keys win; nested (unfilterable) values stay.
    merged = {k: v for k, v in kept.items() if k in held or not (flat_key(k) and _flat_value(v))} \
        if isinstance(kept, dict) else {}  # fmt: skip
    for key, value in held.items():
        merged[key] = value
    return _dumps(merged, record_id)


def _dumps(value: dict[str, Any], record_id: str) -> str | None:
    if not value:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidDataError(f"chroma: record {record_id!r}: metadata holds NaN or Infinity") from None
