"""Request validation against Pinecone's published OpenAPI files (``../shared/reference/pinecone-api/``).

Bodies are checked with ``jsonschema`` (Draft 4, what OpenAPI 3.0 schemas are) over the spec's own
component schemas. The files are API version 2026-04 while SDK 10.2 speaks 2026-07; where the two
disagree the SDK wins, and each such place is listed in ``SDK_2026_07`` below with the SDK model it
follows. Everything else (ids <= 512 chars, topK 1..10000, required fields, types) comes from the spec.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from tests.servers.pinecone.store import ApiError, bad_request

REPO_ROOT = Path(__file__).resolve().parents[3]
SPEC_DIR_ENV = "VECFMT_PINECONE_SPEC_DIR"


def spec_dir() -> Path:
    """``../shared/reference/pinecone-api`` beside the clone (CI has it), or ``$VECFMT_PINECONE_SPEC_DIR``."""
    return Path(os.environ.get(SPEC_DIR_ENV) or REPO_ROOT.parent / "shared" / "reference" / "pinecone-api")


@functools.cache
def load_spec(plane: str) -> dict[str, Any]:
    with open(spec_dir() / f"db_{plane}_2026-04.oas.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


_SPARSE = {
    "type": "object",
    "required": ["indices", "values"],
    "properties": {
        "indices": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 4294967295}},
        "values": {"type": "array", "items": {"type": "number"}},
    },
}

# Where SDK 10.2 (API 2026-07) and the 2026-04 files disagree, the SDK's request models win:
SDK_2026_07: dict[str, dict[str, Any]] = {
    # pinecone.models.indexes.requests.CreateIndexRequest: `schema` + `deployment` replace
    # `dimension`/`metric`/`spec`/`vector_type` (2026-04 requires `spec`); `name` keeps its 2026-04 rules.
    "CreateIndexRequest": {
        "type": "object",
        "required": ["schema", "deployment"],
        "properties": {
            "name": {"$ref": "#/components/schemas/CreateIndexRequest/properties/name"},
            "deletion_protection": {"$ref": "#/components/schemas/DeletionProtection"},
            "tags": {"$ref": "#/components/schemas/IndexTags"},
            "schema": {
                "type": "object",
                "required": ["fields"],
                "properties": {
                    "fields": {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {
                                "type": {
                                    "enum": [
                                        "dense_vector",
                                        "sparse_vector",
                                        "string",
                                        "string_list",
                                        "boolean",
                                        "integer",
                                        "float",
                                        "semantic_text",
                                    ]
                                },
                                "dimension": {"type": "integer", "minimum": 1, "maximum": 20000},
                                "metric": {"enum": ["cosine", "euclidean", "dotproduct"]},
                            },
                        },
                    }
                },
            },
            "deployment": {
                "type": "object",
                "required": ["deployment_type"],
                "properties": {"deployment_type": {"enum": ["managed", "pod", "byoc"]}},
            },
            "read_capacity": {"type": "object"},
        },
    },
    # pinecone.models.documents.requests.*: the Documents API is not in the 2026-04 files at all.
    "UpsertDocumentsRequest": {
        "type": "object",
        "required": ["documents"],
        "properties": {
            "documents": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["_id"],
                    "properties": {
                        "_id": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[\\x01-\\x7F]+$"}
                    },
                },
            }
        },
    },
    "SearchDocumentsRequest": {
        "type": "object",
        "required": ["score_by", "top_k"],
        "properties": {
            "score_by": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {"type": "object", "required": ["type"]},
            },
            "top_k": {"type": "integer", "minimum": 1, "maximum": 10000},
            "include_fields": {"type": "array", "items": {"type": "string"}},
            "filter": {"type": "object"},
        },
    },
    "FetchDocumentsRequest": {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "maxItems": 1000, "items": {"type": "string"}},
            "filter": {"type": "object"},
            "include_fields": {"type": "array", "items": {"type": "string"}},
            "pagination_token": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
    },
    "ListDocumentsRequest": {
        "type": "object",
        "properties": {
            "prefix": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "pagination_token": {"type": "string"},
        },
    },
    "DeleteDocumentsRequest": {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "maxItems": 1000, "items": {"type": "string"}},
            "filter": {"type": "object"},
            "delete_all": {"type": "boolean"},
        },
    },
    # 2026-04 declares array lengths with minLength/maxLength (string keywords, ignored on arrays by any
    # validator); the service's limits on them are checked in app.py instead.
    "SparseValues": _SPARSE,
}


@functools.cache
def _validator(plane: str, name: str) -> jsonschema.Draft4Validator:
    components = load_spec(plane)["components"]
    schema = SDK_2026_07.get(name) or {"$ref": f"#/components/schemas/{name}"}
    root = {**schema, "components": components}
    jsonschema.Draft4Validator.check_schema(root)
    return jsonschema.Draft4Validator(root)


def validate(plane: str, name: str, body: Any) -> None:
    """Raise a 400 naming the first place ``body`` breaks schema ``name`` of the ``plane`` ("data"/"control")."""
    error = jsonschema.exceptions.best_match(_validator(plane, name).iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "body"
        message = error.message if len(error.message) <= 300 else f"{error.message[:100]}...{error.message[-80:]}"
        raise bad_request(f"Invalid request: {where}: {message}")


def float_array(value: Any, where: str) -> np.ndarray:
    """``value`` as float32, refusing anything that is not a flat list of JSON numbers.

    The vector arrays are checked this way rather than item by item through jsonschema (the schema
    says ``items: {type: number}``): the same rule, a thousand times faster on 1,000 x 768 values.
    """
    if not isinstance(value, list):
        raise bad_request(f"Invalid request: {where}: {str(value)[:60]!r} is not of type 'array'")
    arr = np.array(value) if value else np.zeros(0, dtype=np.float64)
    if arr.ndim != 1 or arr.dtype.kind not in "if":
        raise bad_request(f"Invalid request: {where}: items must be of type 'number'")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise bad_request(f"Invalid request: {where}: values must be finite 32-bit floats")
    return out


def require(condition: bool, message: str, status: int = 400, code: str = "INVALID_ARGUMENT") -> None:
    if not condition:
        raise ApiError(status, code, message)
