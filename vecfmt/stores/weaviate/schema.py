"""What a collection is (its REST definition read through the client): vectors and their distances,
properties and their types, multi-tenancy and tenants; and how a definition is made for a dump."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from vecfmt.errors import StoreError
from vecfmt.manifest import Manifest
from vecfmt.stores.weaviate.catalog import (
    DOCUMENT_DESCRIPTION,
    DOCUMENT_PROPERTY,
    ID_DESCRIPTION,
    ID_PROPERTY,
    Prop,
    metric_from_weaviate,
    metric_to_weaviate,
)
from vecfmt.stores.weaviate.connect import SCHEME, Target

LEGACY = ""  # the name of a collection's single unnamed vector (created without named vectors)


@dataclass
class Collection:
    name: str
    definition: dict[str, Any]  # as GET /v1/schema/{name} gives it (through the client)
    vectors: dict[str, str] = field(default_factory=dict)  # vector name (LEGACY: unnamed) -> canonical metric
    props: dict[str, Prop] = field(default_factory=dict)
    multi_tenant: bool = False

    @classmethod
    def parse(cls, definition: dict[str, Any]) -> Collection:
        c = cls(definition["class"], definition)
        for name, config in (definition.get("vectorConfig") or {}).items():
            index = config.get("vectorIndexConfig") or {}
            if (index.get("multivector") or {}).get("enabled"):  # a dump column holds one vector per row
                raise StoreError(f"weaviate: collection {c.name!r}: vector {name!r} is a multi-vector "
                                 "(several vectors per object), which a vecfmt dump cannot hold")
            c.vectors[name] = metric_from_weaviate(index.get("distance") or "cosine")
        if not c.vectors and definition.get("vectorIndexType"):
            distance = (definition.get("vectorIndexConfig") or {}).get("distance") or "cosine"
            c.vectors[LEGACY] = metric_from_weaviate(distance)
        c.props = {p["name"]: Prop.from_dict(p) for p in definition.get("properties") or []}
        c.multi_tenant = bool((definition.get("multiTenancyConfig") or {}).get("enabled"))
        return c

    def marked(self, description: str) -> str | None:
        """The property vecfmt made for a purpose (it says so in its description)."""
        return next((n for n, p in self.props.items() if p.description == description), None)


def read(target: Target) -> Collection | None:
    target.client()  # connects and checks the key first, for a clear error
    definition = target.definition(target.collection)
    return None if definition is None else Collection.parse(definition)


def tenants(target: Target) -> list[str]:
    client = target.client()
    with target.errors("cannot list the tenants"):
        found = client.collections.use(target.collection).tenants.get()
    return sorted(found)


def definition_for(target: Target, manifest: Manifest, *, multi_tenant: bool, document: str | None) -> dict[str, Any]:
    """A collection definition for a dump: the one it was exported with when it came from Weaviate (its
    index settings and property types; vectorizers and sharding left out: none run here), else one made
    from the manifest. Always named vectors, no vectorizer, plus vecfmt's id property."""
    saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else None
    original = copy.deepcopy(saved.get("collection")) if saved and isinstance(saved.get("collection"), dict) else {}
    vector_config: dict[str, Any] = {}
    old = original.get("vectorConfig") or {}
    for spec in manifest.vectors:
        name = spec.name
        config = copy.deepcopy(old.get(name)) or {"vectorIndexType": "hnsw", "vectorIndexConfig": {}}
        if name == "default" and not old and original.get("vectorIndexType"):  # was a legacy unnamed vector
            config = {"vectorIndexType": original["vectorIndexType"],
                      "vectorIndexConfig": copy.deepcopy(original.get("vectorIndexConfig") or {})}
        config["vectorizer"] = {"none": {}}
        config.setdefault("vectorIndexConfig", {})["distance"] = metric_to_weaviate(spec.metric)
        vector_config[name] = config
    props = [p for p in original.get("properties") or [] if p.get("name") not in (ID_PROPERTY,)]
    names = {p["name"] for p in props}
    props.insert(0, Prop(ID_PROPERTY, "text", description=ID_DESCRIPTION).to_dict())
    if document and document not in names:
        props.append(Prop(document, "text", description=DOCUMENT_DESCRIPTION).to_dict())
    for p in props:
        if p["name"] == document:
            p["description"] = DOCUMENT_DESCRIPTION
        p.pop("moduleConfig", None)  # no modules run here
    out: dict[str, Any] = {"class": target.collection, "vectorConfig": vector_config, "properties": props,
                           "multiTenancyConfig": {"enabled": multi_tenant, "autoTenantCreation": False,
                                                  "autoTenantActivation": False}}  # fmt: skip
    if original.get("invertedIndexConfig"):
        out["invertedIndexConfig"] = original["invertedIndexConfig"]
    if original.get("description"):
        out["description"] = original["description"]
    return out


def primary_vector(collection: Collection, wanted: str | None) -> str:
    """Which vector is the dump's ``values``: the ``vector=`` option, else ``default``, else the first."""
    names = list(collection.vectors)
    if not names:
        raise StoreError(f"weaviate: collection {collection.name!r} has no vector index to export")
    if wanted is not None:
        if wanted not in collection.vectors:
            raise StoreError(f"weaviate: collection {collection.name!r} has no vector {wanted!r} (it has "
                             f"{[n or 'the unnamed one' for n in names]})")
        return wanted
    return "default" if "default" in collection.vectors else names[0]


def document_property(collection: Collection, option: str | None) -> str | None:
    if option is not None:
        prop = collection.props.get(option)
        if prop is None or prop.data_type != "text":
            raise StoreError(f"weaviate: collection {collection.name!r} has no text property {option!r} for "
                             "document=")
        return option
    return collection.marked(DOCUMENT_DESCRIPTION)


def id_property(collection: Collection, option: str | None) -> str | None:
    return option or collection.marked(ID_DESCRIPTION)


DEFAULT_DOCUMENT = DOCUMENT_PROPERTY
