"""Weaviate's facts and vecfmt's rules for it: distances, the id rule (UUIDs as they are, other ids as
UUIDv5 with the original kept in a property, spec appendix A), property types inferred from metadata, and
metadata <-> gRPC properties (driven by the collection's property types, so ints stay ints)."""

from __future__ import annotations

import base64
import re
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from vecfmt.errors import InvalidDataError, StoreError

# canonical <-> Weaviate distance names (spec section 5)
TO_WEAVIATE = {"cosine": "cosine", "dot": "dot", "euclidean": "l2-squared", "manhattan": "manhattan",
               "hamming": "hamming"}  # fmt: skip
FROM_WEAVIATE = {v: k for k, v in TO_WEAVIATE.items()}

# The id rule (spec appendix A): the UUIDv5 namespace, uuid5(NAMESPACE_URL, "vecfmt:id").
ID_NAMESPACE = uuid.UUID("caaac9a8-4798-542f-b4b1-133f62df7883")
ID_PROPERTY = "vecfmt_id"
ID_DESCRIPTION = "vecfmt: the original id (not a UUID) of this object"
DOCUMENT_PROPERTY = "document"
DOCUMENT_DESCRIPTION = "vecfmt: the dump's document column"
DEFAULT_TENANT = "__default__"  # the default namespace as a tenant of a multi-tenant collection
PROPERTY_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,230}$")
RESERVED = {"id", "_id", "_additional", "vector", "vectors"}


def metric_to_weaviate(metric: str) -> str:
    if metric not in TO_WEAVIATE:
        raise StoreError(f"weaviate: Weaviate has no {metric!r} distance")
    return TO_WEAVIATE[metric]


def metric_from_weaviate(name: str) -> str:
    if name not in FROM_WEAVIATE:
        raise StoreError(f"weaviate: distance {name!r} has no vecfmt name (known: {sorted(FROM_WEAVIATE)})")
    return FROM_WEAVIATE[name]


def tenant_of(namespace: str) -> str:
    return namespace or DEFAULT_TENANT


def namespace_of(tenant: str) -> str:
    return "" if tenant == DEFAULT_TENANT else tenant


def object_uuid(record_id: str) -> tuple[str, bool]:
    """The object's UUID and whether the id had to be mapped (then it goes into ``ID_PROPERTY``).

    An id is kept as the UUID only in its canonical text form (lower-case, hyphenated), so that an
    export gives back exactly the same string; any other id becomes uuid5(ID_NAMESPACE, id)."""
    if len(record_id) == 36:
        try:
            if str(uuid.UUID(record_id)) == record_id:
                return record_id, False
        except ValueError:
            pass
    return str(uuid.uuid5(ID_NAMESPACE, record_id)), True


# --- property types ---------------------------------------------------------------------------------


@dataclass
class Prop:
    """One property: Weaviate's data type (``text``, ``int[]``, ``object``, ...) and nested properties."""

    name: str
    data_type: str
    nested: dict[str, Prop] = field(default_factory=dict)
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dataType": [self.data_type]}
        if self.description:
            out["description"] = self.description
        if self.nested:
            out["nestedProperties"] = [p.to_dict() for p in self.nested.values()]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prop:
        kind = data["dataType"][0] if isinstance(data.get("dataType"), list) else str(data.get("dataType"))
        nested = {p["name"]: cls.from_dict(p) for p in data.get("nestedProperties") or []}
        return cls(data["name"], kind, nested, data.get("description") or None)


SCALAR = {bool: "boolean", int: "int", float: "number", str: "text"}


def infer(value: Any, key: str, record_id: str) -> Prop | None:
    """The property type a metadata value needs; None when the value says nothing (null, [])."""
    if value is None:
        return None
    kind = SCALAR.get(type(value))
    if kind is not None:
        return Prop(key, kind)
    if isinstance(value, dict):
        return Prop(key, "object", _infer_fields(value, record_id))
    if isinstance(value, list):
        items = [v for v in value if v is not None]
        if len(items) < len(value):
            raise _refuse(record_id, key, "a list holding null", "Weaviate lists have no nulls")
        if not items:
            return None
        kinds = {type(v) for v in items}
        if kinds == {dict}:
            nested: dict[str, Prop] = {}
            for item in items:
                nested = _merge_fields(nested, _infer_fields(item, record_id), record_id)
            return Prop(key, "object[]", nested)
        if kinds <= {int, float} and kinds:
            return Prop(key, "int[]" if kinds == {int} else "number[]")
        if len(kinds) == 1 and next(iter(kinds)) in (bool, str):
            return Prop(key, SCALAR[next(iter(kinds))] + "[]")
        what = "a list of lists" if list in kinds else "a list mixing " + ", ".join(sorted(k.__name__ for k in kinds))
        raise _refuse(record_id, key, what, "Weaviate has no property type for it")
    raise _refuse(record_id, key, type(value).__name__, "Weaviate has no property type for it")


def _infer_fields(value: dict[str, Any], record_id: str) -> dict[str, Prop]:
    out: dict[str, Prop] = {}
    for k, v in value.items():
        check_property_name(k, record_id)
        prop = infer(v, k, record_id)
        if prop is not None:
            out[k] = prop
    return out


def merge(old: Prop | None, new: Prop | None, record_id: str) -> Prop | None:
    """One type for values seen so far; int and number merge into number, other mixes are refused."""
    if old is None or new is None:
        return old or new
    if old.data_type == new.data_type:
        if old.data_type.startswith("object"):
            return Prop(old.name, old.data_type, _merge_fields(old.nested, new.nested, record_id), old.description)
        return old
    numbers = {"int", "number"}
    if {old.data_type, new.data_type} == numbers or {old.data_type, new.data_type} == {"int[]", "number[]"}:
        return Prop(old.name, "number[]" if old.data_type.endswith("[]") else "number", description=old.description)
    raise _refuse(record_id, old.name, new.data_type,
                  f"other objects hold {old.data_type} there (one type per property)")


def _merge_fields(a: dict[str, Prop], b: dict[str, Prop], record_id: str) -> dict[str, Prop]:
    out = dict(a)
    for k, p in b.items():
        merged = merge(out.get(k), p, record_id)
        assert merged is not None
        out[k] = merged
    return out


def check_property_name(key: str, record_id: str) -> None:
    if not PROPERTY_NAME.match(key) or key in RESERVED:
        raise InvalidDataError(f"weaviate: object {record_id!r}: metadata key {key!r} cannot be a Weaviate "
                               "property name (a letter or _, then letters, digits or _; not id, _id, _additional, "
                               "vector)")


def _refuse(record_id: str, key: str, what: str, why: str) -> InvalidDataError:
    return InvalidDataError(f"weaviate: object {record_id!r}: metadata key {key!r} holds {what}; {why}")


def fits(prop: Prop, value: Any) -> bool:
    """Can ``value`` go into ``prop`` and come back as the same JSON (checked before sending)?"""
    kind = prop.data_type
    if value is None:
        return True
    if kind.endswith("[]") and not isinstance(value, list):
        return False
    if kind in ("text", "date", "uuid"):
        return isinstance(value, str)
    if kind == "int":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float)
    if kind == "boolean":
        return type(value) is bool
    if kind == "object":
        return isinstance(value, dict) and all(k in prop.nested and fits(prop.nested[k], v) for k, v in value.items())
    if kind.endswith("[]"):
        item = Prop(prop.name, kind[:-2], prop.nested)
        return all(v is not None and fits(item, v) for v in value)
    return False  # geoCoordinates, phoneNumber, blob, references: not written from metadata


# --- metadata -> gRPC properties -------------------------------------------------------------------


class Encoder:
    """Metadata dicts into ``BatchObject.Properties``, each value in the wire form its property's type
    needs (an int property gets the int; int[] goes as int64, number[] as float64 bytes)."""

    def __init__(self, batch_pb2: Any, base_pb2: Any) -> None:
        self.batch_pb2 = batch_pb2
        self.base_pb2 = base_pb2

    def properties(self, values: dict[str, Any], props: dict[str, Prop]) -> Any:
        return self.batch_pb2.BatchObject.Properties(**self._fields(values, props))

    def _fields(self, values: dict[str, Any], props: dict[str, Prop]) -> dict[str, Any]:
        from google.protobuf.struct_pb2 import Struct

        b = self.base_pb2
        scalars: dict[str, Any] = {}
        out: dict[str, list[Any]] = {
            name: [] for name in ("number_array_properties", "int_array_properties", "text_array_properties",
                                  "boolean_array_properties", "object_properties", "object_array_properties",
                                  "empty_list_props")
        }
        for key, value in values.items():
            if value is None:
                continue
            kind = props[key].data_type
            if isinstance(value, list) and not value:
                out["empty_list_props"].append(key)
            elif kind == "object":
                nested = self._fields(value, props[key].nested)
                value_pb = b.ObjectPropertiesValue(**nested)
                out["object_properties"].append(b.ObjectProperties(prop_name=key, value=value_pb))
            elif kind == "object[]":
                items = [b.ObjectPropertiesValue(**self._fields(v, props[key].nested)) for v in value]
                out["object_array_properties"].append(b.ObjectArrayProperties(prop_name=key, values=items))
            elif kind == "number[]":
                packed = struct.pack(f"<{len(value)}d", *value)
                out["number_array_properties"].append(b.NumberArrayProperties(prop_name=key, values_bytes=packed))
            elif kind == "int[]":
                out["int_array_properties"].append(b.IntArrayProperties(prop_name=key, values=value))
            elif kind in ("text[]", "date[]", "uuid[]"):
                out["text_array_properties"].append(b.TextArrayProperties(prop_name=key, values=value))
            elif kind == "boolean[]":
                out["boolean_array_properties"].append(b.BooleanArrayProperties(prop_name=key, values=value))
            else:
                scalars[key] = value
        struct_ = Struct()
        if scalars:
            struct_.update(scalars)
        return {"non_ref_properties": struct_, **{k: v for k, v in out.items() if v}}


# --- gRPC properties -> metadata -------------------------------------------------------------------


def decode(properties: Any, order: dict[str, Prop] | None) -> dict[str, Any]:
    """A search result's ``Properties`` as a JSON-ready dict, keys in the collection's property order
    (so that a dump written by vecfmt comes back with its keys in their first-seen order)."""
    fields = properties.fields
    out: dict[str, Any] = {}
    names = [n for n in order if n in fields] if order else []
    names += sorted(k for k in fields if not order or k not in order)
    for name in names:
        value = _value(fields[name], order[name].nested if order and name in order else None)
        if value is not None:
            out[name] = value
    return out


def _value(v: Any, nested: dict[str, Prop] | None) -> Any:
    kind = v.WhichOneof("kind")
    if kind in (None, "null_value"):
        return None
    if kind in ("text_value", "bool_value", "number_value", "date_value", "uuid_value"):
        return getattr(v, kind)
    if kind == "int_value":
        return int(v.int_value)
    if kind == "object_value":
        return decode(v.object_value, nested)
    if kind == "list_value":
        return _list(v.list_value, nested)
    if kind == "blob_value":
        return v.blob_value if isinstance(v.blob_value, str) else base64.b64encode(v.blob_value).decode()
    if kind == "geo_value":
        return {"latitude": v.geo_value.latitude, "longitude": v.geo_value.longitude}
    if kind == "phone_value":
        p = v.phone_value
        return {"input": p.input, "defaultCountry": p.default_country, "internationalFormatted":
                p.international_formatted, "countryCode": p.country_code, "national": p.national,
                "nationalFormatted": p.national_formatted, "valid": p.valid}  # fmt: skip
    return None


def _list(lv: Any, nested: dict[str, Prop] | None) -> list[Any]:
    kind = lv.WhichOneof("kind")
    if kind is None:
        return []
    if kind == "number_values":
        data = lv.number_values.values
        return list(struct.unpack(f"<{len(data) // 8}d", data))
    if kind == "int_values":
        data = lv.int_values.values
        return list(struct.unpack(f"<{len(data) // 8}q", data))
    if kind == "object_values":
        return [decode(p, nested) for p in lv.object_values.values]
    return list(getattr(lv, kind).values)
