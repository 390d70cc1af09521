"""Import: the collection created from the dump (or checked against it), then gRPC ``BatchObjects`` requests
built from NumPy bytes with several in flight. Every per-object error in a reply fails the import, naming the
ids and reasons. Writes are upserts by UUID (the id rule makes them deterministic), so a resumed import
rewrites at most the requests that were in flight; rows acknowledged in dump order are kept in a small local
state file, which is what ``resume`` reads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.schema import DOCUMENT, ID, METADATA, vectors_numpy
from vecfmt.stores.base import AcknowledgedWrites, IfExists, StoreURI
from vecfmt.stores.weaviate import schema
from vecfmt.stores.weaviate.catalog import (
    DEFAULT_TENANT,
    ID_PROPERTY,
    PROPERTY_NAME,
    Encoder,
    Prop,
    check_property_name,
    fits,
    infer,
    merge,
    metric_to_weaviate,
    object_uuid,
    tenant_of,
)
from vecfmt.stores.weaviate.connect import SCHEME, Target, log, proto
from vecfmt.stores.weaviate.search import identity, nearest

MAX_ERRORS_SHOWN = 3


class WeaviateImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        self.document_option = uri.option("document")
        self.id_property = uri.option("id_property") or ID_PROPERTY
        if not PROPERTY_NAME.match(self.id_property):
            raise StoreError(f"weaviate: id_property {self.id_property!r} is not a valid property name")
        self.primary_option = uri.option("vector")
        self.writes = AcknowledgedWrites(SCHEME, t.concurrency)
        self.collection: schema.Collection | None = None
        self.props: dict[str, Prop] = {}
        self.vector_names: dict[str, str] = {}  # dump column -> Weaviate vector name ("" for an unnamed one)
        self.document: str | None = None
        self.multi_tenant = False
        self.encoder: Encoder | None = None

    def identity(self) -> tuple[str, ...]:
        return identity(self.target)

    # --- prepare -----------------------------------------------------------------------------------

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        if manifest.primary is None or manifest.sparse_values:
            raise StoreError(f"{t.label}: Weaviate holds dense vectors only; the dump has sparse values")
        for spec in manifest.vectors:
            metric_to_weaviate(spec.metric)
            if not PROPERTY_NAME.match(spec.name):
                raise StoreError(f"weaviate: the dump's vector name {spec.name!r} is not a valid Weaviate vector name")
        saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else {}
        names = [ns.name for ns in manifest.namespaces]
        was_mt = bool(((saved.get("collection") or {}).get("multiTenancyConfig") or {}).get("enabled"))
        self.multi_tenant = was_mt or any(names)
        if self.document_option is not None:
            self.document = self.document_option
        elif manifest.document:
            self.document = saved.get("document_property") or schema.DEFAULT_DOCUMENT
        if self.document is not None:
            check_property_name(self.document, "(document=)")
        self.writes.track(self.identity(), manifest)  # a dump's import (a copy has no files and cannot resume)
        done = self.writes.saved() if resume else None
        resuming = done is not None
        existing = schema.read(t)
        resuming = resuming and existing is not None  # a collection dropped since: start over
        if existing is not None and not resuming:
            existing = self._clear_or_refuse(existing, manifest, if_exists)
        if existing is None:
            definition = schema.definition_for(t, manifest, multi_tenant=self.multi_tenant, document=self.document)
            log.info("weaviate: creating collection %s", t.collection)
            with t.errors("cannot create the collection"):
                t.client().collections.create_from_dict(definition)
            existing = schema.read(t)
            assert existing is not None
        self.collection = existing
        self._check(existing, manifest)
        self.props = dict(existing.props)
        if self.id_property not in self.props:
            self._add_property(Prop(self.id_property, "text", description=schema.ID_DESCRIPTION))
        if self.document is not None and self.document not in self.props:
            self._add_property(Prop(self.document, "text", description=schema.DOCUMENT_DESCRIPTION))
        if self.multi_tenant:
            self._ensure_tenants(names)
        base_pb2, batch_pb2, *_ = proto()
        self.encoder = Encoder(batch_pb2, base_pb2)
        if done is not None and resuming:
            log.info("weaviate: resuming after %d rows", done)
            return done
        self.writes.acknowledged = 0
        self.writes.save()  # before the first batch: a run killed at once still resumes (from 0)
        return 0

    def _clear_or_refuse(
        self, c: schema.Collection, manifest: Manifest, if_exists: IfExists
    ) -> schema.Collection | None:
        t = self.target
        if if_exists == IfExists.REPLACE:
            if c.multi_tenant:  # only the dump's tenants, nothing else of the collection
                tenants = [tenant_of(ns.name) for ns in manifest.namespaces]
                held = set(schema.tenants(t))
                with t.errors("cannot clear the tenants"):
                    t.client().collections.use(t.collection).tenants.remove([x for x in tenants if x in held])
                return c
            log.info("weaviate: replace: deleting collection %s", t.collection)
            with t.errors("cannot delete the collection"):
                t.client().collections.delete(t.collection)
            return None
        if if_exists == IfExists.FAIL and self._holds_objects(c, manifest):
            raise StoreError(f"{t.label} already holds objects: choose if_exists upsert (append is the same on "
                             "Weaviate: objects are written by UUID) or replace")
        return c

    def _holds_objects(self, c: schema.Collection, manifest: Manifest) -> bool:
        t = self.target
        handle = t.client().collections.use(t.collection)
        with t.errors("cannot count the objects"):
            if not c.multi_tenant:
                return bool(handle.aggregate.over_all(total_count=True).total_count)
            held = set(schema.tenants(t))
            return any(handle.with_tenant(tenant_of(ns.name)).aggregate.over_all(total_count=True).total_count
                       for ns in manifest.namespaces if tenant_of(ns.name) in held)  # fmt: skip

    def _check(self, c: schema.Collection, manifest: Manifest) -> None:
        """The dump must fit the collection as it is: refused before anything is written."""
        t = self.target
        if c.multi_tenant != self.multi_tenant:
            if c.multi_tenant and not any(ns.name for ns in manifest.namespaces):
                self.multi_tenant = True  # the default namespace goes to the tenant __default__
            else:
                raise StoreError(f"{t.label} is not multi-tenant; the dump has namespaces "
                                 f"{[ns.name for ns in manifest.namespaces]} (each would be a tenant): import into "
                                 "another collection")
        legacy = list(c.vectors) == [schema.LEGACY]
        for spec in manifest.vectors:
            name = schema.LEGACY if legacy and spec.column == "values" else spec.name
            if legacy and spec.column != "values":
                raise StoreError(f"{t.label} has one unnamed vector; the dump also has the named vector {spec.name!r}")
            if name not in c.vectors:
                held = sorted(n or "unnamed" for n in c.vectors)
                raise StoreError(f"{t.label} has no vector {spec.name!r} (it has {held})")
            if c.vectors[name] != spec.metric:
                raise StoreError(f"{t.label}: vector {spec.name!r} uses distance "
                                 f"{metric_to_weaviate(c.vectors[name])}, the dump {spec.metric}; nothing was written")
            self.vector_names[spec.column] = name
        held = self._dimensions(c)
        for spec in manifest.vectors:
            dim = held.get(self.vector_names[spec.column])
            if dim is not None and dim != spec.dimension:
                raise StoreError(f"{t.label}: vector {spec.name!r} holds {dim}-dimensional vectors, the dump's have "
                                 f"{spec.dimension}; nothing was written")

    def _dimensions(self, c: schema.Collection) -> dict[str, int]:
        """The dimension of each vector as the objects already held have it (Weaviate fixes it at the first)."""
        t = self.target
        _, _, _, search_get_pb2, _ = proto()
        tenants = schema.tenants(t) if c.multi_tenant else [""]
        found: dict[str, int] = {}
        for tenant in tenants[:20]:  # enough to find a populated one in practice; a mismatch also fails per object
            request = search_get_pb2.SearchRequest(
                collection=t.collection, tenant=tenant, limit=1,
                metadata=search_get_pb2.MetadataRequest(uuid=True, vector=schema.LEGACY in c.vectors,
                                                        vectors=[n for n in c.vectors if n]),
                uses_123_api=True, uses_125_api=True, uses_127_api=True)  # fmt: skip
            for r in t.rpc("cannot read an object", t.stub().Search, request).results:
                for v in r.metadata.vectors:
                    found.setdefault(v.name, len(v.vector_bytes) // 4)
                if r.metadata.vector_bytes:
                    found.setdefault(schema.LEGACY, len(r.metadata.vector_bytes) // 4)
            if len(found) == len(c.vectors):
                break
        return found

    def _ensure_tenants(self, namespaces: list[str]) -> None:
        t = self.target
        wanted = [tenant_of(n) for n in namespaces]
        held = set(schema.tenants(t))
        missing = [x for x in wanted if x not in held]
        if missing:
            from weaviate.classes.tenants import Tenant

            with t.errors("cannot create the tenants (a letter, digit, - or _, at most 64)"):
                t.client().collections.use(t.collection).tenants.create([Tenant(name=x) for x in missing])

    def _add_property(self, prop: Prop) -> None:
        t = self.target
        weaviate_classes = _property_class()
        with t.errors(f"cannot add the property {prop.name!r}"):
            t.client().collections.use(t.collection).config.add_property(weaviate_classes(prop))
        self.props[prop.name] = prop

    # --- writing -----------------------------------------------------------------------------------

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        assert self.encoder is not None
        t = self.target
        _, batch_pb2, *_ = proto()
        base_pb2 = self.encoder.base_pb2
        ids = batch.column(ID).to_pylist()
        metadata = self._metadata(batch, ids)
        documents = batch.column(DOCUMENT).to_pylist() if DOCUMENT in batch.schema.names and self.document else None
        tenant = tenant_of(namespace) if self.multi_tenant else ""
        if self.multi_tenant and not namespace:
            tenant = DEFAULT_TENANT
        # Each vector column once as little-endian float32 bytes; rows are byte slices of it (no lists).
        vectors = []
        for column, name in self.vector_names.items():
            matrix = np.ascontiguousarray(vectors_numpy(batch.column(column)), dtype="<f4")
            valid = batch.column(column).is_valid().to_numpy(zero_copy_only=False)
            vectors.append((name, memoryview(matrix.tobytes()), matrix.shape[1] * 4, valid))
        objects = []
        # One protobuf object per row: the gRPC API takes nothing coarser.
        for i, record_id in enumerate(ids):
            uuid_text, mapped = object_uuid(record_id)
            values = dict(metadata[i]) if metadata[i] else {}
            if mapped:
                values[self.id_property] = record_id
            if documents is not None and documents[i] is not None:
                values[self.document] = documents[i]  # type: ignore[index]
            named = []
            single = b""
            for name, buf, size, valid in vectors:
                if not valid[i]:
                    continue
                data = bytes(buf[i * size:(i + 1) * size])
                if name:
                    named.append(base_pb2.Vectors(name=name, vector_bytes=data,
                                                  type=base_pb2.Vectors.VECTOR_TYPE_SINGLE_FP32))
                else:
                    single = data
            objects.append(batch_pb2.BatchObject(
                uuid=uuid_text, collection=t.collection, tenant=tenant, vector_bytes=single, vectors=named,
                properties=self.encoder.properties(values, self.props)))  # fmt: skip
        starts = range(0, len(objects), t.batch)
        for n, start in enumerate(starts):
            part = objects[start:start + t.batch]
            self.writes.submit(rows_done if n == len(starts) - 1 else None,
                               self._send, part, ids[start:start + t.batch], namespace)  # fmt: skip
        self.writes.drain(2 * t.concurrency)

    def _metadata(self, batch: pa.RecordBatch, ids: list[str]) -> list[dict[str, Any] | None]:
        """Each row's metadata as a dict (json.loads per row: protobuf wants per-object values), checked
        against the collection's property types; new keys become properties before anything is sent."""
        out: list[dict[str, Any] | None] = []
        found: dict[str, Prop] = {}
        reserved = {self.id_property, self.document}
        for text, record_id in zip(batch.column(METADATA).to_pylist(), ids, strict=True):
            if not text:
                out.append(None)
                continue
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise InvalidDataError(f"weaviate: object {record_id!r}: metadata is not a JSON object")
            for key, item in value.items():
                if key in reserved:
                    raise InvalidDataError(f"weaviate: object {record_id!r}: metadata key {key!r} is the property "
                                           "vecfmt keeps the id or document in (id_property=, document= to rename)")
                check_property_name(key, record_id)
                prop = self.props.get(key)
                if prop is None:
                    merged = merge(found.get(key), infer(item, key, record_id), record_id)
                    if merged is not None:
                        found[key] = merged
                elif not fits(prop, item):
                    raise InvalidDataError(f"weaviate: object {record_id!r}: metadata key {key!r} holds "
                                           f"{json.dumps(item)[:60]}, which the collection's {prop.data_type} "
                                           "property cannot hold as it is")
            out.append(value)
        for prop in found.values():
            self._add_property(prop)
        return out

    def _send(self, objects: list[Any], ids: list[str], namespace: str) -> None:
        t = self.target
        _, batch_pb2, *_ = proto()
        reply = t.rpc("batch import failed", t.stub().BatchObjects, batch_pb2.BatchObjectsRequest(objects=objects))
        if reply.errors:
            shown = "; ".join(f"{ids[e.index]!r}: {t.clean(e.error)}" for e in list(reply.errors)[:MAX_ERRORS_SHOWN])
            more = len(reply.errors) - MAX_ERRORS_SHOWN
            where = f" in namespace {namespace!r}" if namespace else ""
            raise StoreError(f"{t.label}: {len(reply.errors)} object(s){where} refused: {shown}"
                             + (f" (and {more} more)" if more > 0 else ""))

    def rows_committed(self) -> int | None:
        return self.writes.rows_committed()

    def finish(self) -> None:
        self.writes.finish()

    def abort(self) -> None:
        self.writes.abort()

    def close(self) -> None:
        self.writes.close()
        self.target.close()

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        name = self.vector_names.get("values", self.primary_option or "default")
        return nearest(self.target, self.multi_tenant, name, self.id_property, vector, k, namespace)


def _property_class() -> Any:
    from weaviate.classes.config import DataType, Property

    def build(prop: Prop) -> Any:
        nested = [build(p) for p in prop.nested.values()] or None
        return Property(name=prop.name, data_type=DataType(prop.data_type), nested_properties=nested,
                        description=prop.description)

    return build
