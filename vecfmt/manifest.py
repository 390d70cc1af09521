"""The manifest: the model of ``manifest.json``, its JSON (de)serialisation and versioning.

A dump is complete only when its manifest exists; the manifest lists every data file with its
row count, size and SHA-256, so a reader can tell a complete dump from a damaged one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import pyarrow as pa

from vecfmt import __version__
from vecfmt.errors import DumpError
from vecfmt.schema import (
    DOCUMENT,
    FORMAT_NAME,
    FORMAT_VERSION,
    SPARSE_VALUES,
    SUPPORTED_MAJOR,
    canonical_schema,
    namespace_dir,
)

MANIFEST_NAME = "manifest.json"

# Kinds of dump (spec 6.1). A full dump holds every row; a delta holds what changed since its base.
FULL = "full"
DELTA = "delta"
# The minor version that brought deltas. Full dumps stay 1.0: they use nothing 1.1 adds, so they read as
# before everywhere; a delta is 1.1 (spec 8).
DELTA_FORMAT_VERSION = "1.1"


@dataclass
class VectorSpec:
    """One dense vector per row: its name in the store, its column in the dump, and how it is compared."""

    name: str
    column: str
    dimension: int
    metric: str
    dtype: str = "float32"


@dataclass
class EmbeddingModel:
    """The model that made the vectors; may be unknown when exported and set later."""

    name: str | None = None
    provider: str | None = None
    dimension: int | None = None


@dataclass
class Source:
    """Where the dump came from: store kind and index/table/collection name. Never a secret."""

    kind: str
    name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class NamespaceEntry:
    name: str
    path: str
    rows: int  # rows in this dump's part files (in a delta: the rows added or changed)
    # A delta's only (spec 6.1): ids its deletes files remove, and the namespace's rows once it is applied.
    deleted: int | None = None
    rows_after: int | None = None


@dataclass
class FileEntry:
    path: str  # relative to the dump root, "/" separated
    namespace: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class BaseRef:
    """What a delta was made against: the base dump's URI as given (secrets redacted) and the SHA-256 of
    its manifest.json bytes, which names that dump's exact content (the manifest lists every file's
    SHA-256), so a chain cannot be assembled from the wrong parts."""

    uri: str
    manifest_sha256: str
    created_at: str
    kind: str = FULL


@dataclass
class Digests:
    """Row digests of a dump's state (a delta's: once applied), per namespace, in ``digests-NNNNN.parquet``
    files: what the next ``export --since`` compares the store with instead of reading every row again.
    ``algorithm`` names how they were computed (spec 6.2); a reader that does not know it ignores them."""

    algorithm: str
    files: list[FileEntry] = field(default_factory=list)


@dataclass
class Manifest:
    vectors: list[VectorSpec]
    namespaces: list[NamespaceEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    sparse_values: bool = False
    document: bool = False
    embedding_model: EmbeddingModel | None = None
    source: Source | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: _utc_now())
    producer: dict[str, str] = field(default_factory=lambda: {"name": "vecfmt", "version": __version__})
    format: str = FORMAT_NAME
    format_version: str = FORMAT_VERSION
    kind: str = FULL
    base: BaseRef | None = None  # a delta's
    deletes: list[FileEntry] = field(default_factory=list)  # a delta's files of deleted ids
    digests: Digests | None = None  # optional (1.1)

    @property
    def is_delta(self) -> bool:
        return self.kind == DELTA

    @property
    def total_rows(self) -> int:
        return sum(ns.rows for ns in self.namespaces)

    @property
    def primary(self) -> VectorSpec | None:
        return self.vectors[0] if self.vectors else None

    def vector(self, name: str | None = None) -> VectorSpec:
        if name is None and self.vectors:
            return self.vectors[0]
        for spec in self.vectors:
            if spec.name == name or spec.column == name:
                return spec
        raise DumpError(f"the dump has no vector named {name!r}")

    def namespace_names(self) -> list[str]:
        return [ns.name for ns in self.namespaces]

    def files_of(self, namespace: str) -> list[FileEntry]:
        return [f for f in self.files if f.namespace == namespace]

    def deletes_of(self, namespace: str) -> list[FileEntry]:
        return [f for f in self.deletes if f.namespace == namespace]

    @property
    def digest_files(self) -> list[FileEntry]:
        return [] if self.digests is None else self.digests.files

    def digests_of(self, namespace: str) -> list[FileEntry]:
        return [f for f in self.digest_files if f.namespace == namespace]

    def arrow_schema(self) -> pa.Schema:
        return canonical_schema(
            [(v.column, v.dimension) for v in self.vectors],
            sparse=self.sparse_values,
            document=self.document,
        )

    def columns(self) -> list[str]:
        names = ["id", *(v.column for v in self.vectors)]
        if self.sparse_values:
            names.append(SPARSE_VALUES)
        names.append("metadata")
        if self.document:
            names.append(DOCUMENT)
        return names

    def identity(self) -> str:
        """A digest naming this dump's content: what an interrupted import checks before resuming."""
        digest = hashlib.sha256(self.created_at.encode())
        for f in [*self.files, *self.deletes, *self.digest_files]:
            digest.update(f"{f.path}\0{f.sha256}\0".encode())
        return digest.hexdigest()

    def with_files(self, files: list[FileEntry]) -> Manifest:
        """This manifest listing ``files`` (sorted by path), with namespace counts derived from them. A delta
        keeps the namespaces it lists (those with only deletes, or no change, have no files) and their
        ``deleted`` and ``rows_after``."""
        files = sorted(files, key=lambda f: f.path)
        rows: dict[str, int] = {}
        for f in files:
            rows[f.namespace] = rows.get(f.namespace, 0) + f.rows
        listed = {ns.name: ns for ns in self.namespaces} if self.is_delta else {}
        namespaces = [
            replace(listed[ns], rows=rows.get(ns, 0)) if ns in listed
            else NamespaceEntry(ns, namespace_dir(ns), rows[ns])
            for ns in sorted(set(rows) | set(listed))
        ]
        return replace(self, files=files, namespaces=namespaces)

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object. A full dump's has no ``kind``, ``base`` or ``deletes`` (it reads as
        1.0 did); a delta's has all three, and each namespace its ``deleted`` and ``rows_after``."""
        d = asdict(self)
        ordered = {k: d[k] for k in ("format", "format_version")}
        if self.is_delta:
            ordered["kind"] = self.kind
            ordered["base"] = d["base"]
        ordered.update({k: d[k] for k in ("created_at", "producer", "source")})
        ordered["embedding_model"] = d["embedding_model"]
        ordered["vectors"] = d["vectors"]
        ordered["sparse_values"] = d["sparse_values"]
        ordered["document"] = d["document"]
        ordered["total_rows"] = self.total_rows
        ordered["namespaces"] = [{k: v for k, v in ns.items() if v is not None} for ns in d["namespaces"]]
        ordered["files"] = d["files"]
        if self.is_delta:
            ordered["deletes"] = d["deletes"]
        if self.digests is not None:
            ordered["digests"] = d["digests"]
        ordered["extra"] = d["extra"]
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, allow_delta: bool = False) -> Manifest:
        """Parse and check a manifest. A delta is refused unless ``allow_delta``: it holds only what changed,
        so every tool that reads a dump as a whole (import, diff, verify, ...) must not take it for one."""
        check_version(d)
        try:
            check_manifest_schema(d)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise DumpError(f"manifest.json is invalid at {where}: {exc.message}") from None
        if d.get("kind") == DELTA and not allow_delta:
            base = d["base"]
            raise DumpError(
                f"this is a delta dump (the changes since {base['uri']}, made {base['created_at']}): it is "
                "not a whole index; restore it after its base (vecfmt restore FULL DELTA... TARGET) or fold the "
                "chain into one dump (vecfmt compact FULL DELTA... OUT)"
            )
        model = d.get("embedding_model")
        source = d.get("source")
        base = d.get("base")
        digests = d.get("digests")
        manifest = cls(
            vectors=[VectorSpec(**v) for v in d["vectors"]],
            namespaces=[NamespaceEntry(**n) for n in d["namespaces"]],
            files=[FileEntry(**f) for f in d["files"]],
            sparse_values=d["sparse_values"],
            document=d["document"],
            embedding_model=EmbeddingModel(**model) if model else None,
            source=Source(**source) if source else None,
            extra=d.get("extra", {}),
            created_at=d["created_at"],
            producer=d["producer"],
            format=d["format"],
            format_version=d["format_version"],
            kind=d.get("kind", FULL),
            base=BaseRef(**base) if base else None,
            deletes=[FileEntry(**f) for f in d.get("deletes", [])],
            digests=None if digests is None else Digests(digests["algorithm"],
                                                         [FileEntry(**f) for f in digests["files"]]),
        )
        if manifest.total_rows != d["total_rows"]:
            raise DumpError("manifest.json is inconsistent: total_rows differs from the namespace counts")
        folders = {ns.name: ns.path for ns in manifest.namespaces}
        if len(folders) != len(manifest.namespaces) or len(set(folders.values())) != len(folders):
            raise DumpError("manifest.json is inconsistent: a namespace or its folder is listed twice")
        listed = [*manifest.files, *manifest.deletes, *manifest.digest_files]
        if len({f.path for f in listed}) != len(listed):
            raise DumpError("manifest.json is inconsistent: a file is listed twice")
        for f in listed:
            if f.namespace not in folders or f.path.split("/")[0] != folders[f.namespace]:
                raise DumpError(f"manifest.json is inconsistent: {f.path} is not in a folder of a listed namespace")
        for ns in manifest.namespaces:
            if sum(f.rows for f in manifest.files_of(ns.name)) != ns.rows:
                raise DumpError(
                    f"manifest.json is inconsistent: namespace {ns.name!r} rows differ from its files"
                )
            if manifest.is_delta and sum(f.rows for f in manifest.deletes_of(ns.name)) != ns.deleted:
                raise DumpError(
                    f"manifest.json is inconsistent: namespace {ns.name!r} deleted ids differ from its deletes files"
                )
            state = ns.rows_after if manifest.is_delta else ns.rows
            if manifest.digests is not None and sum(f.rows for f in manifest.digests_of(ns.name)) != state:
                raise DumpError(
                    f"manifest.json is inconsistent: namespace {ns.name!r} digests differ from its rows"
                )
        return manifest

    @classmethod
    def from_json(cls, text: str | bytes, *, allow_delta: bool = False) -> Manifest:
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DumpError(f"manifest.json is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise DumpError("manifest.json is not a JSON object")
        return cls.from_dict(d, allow_delta=allow_delta)


def check_version(d: dict[str, Any]) -> None:
    """Refuse what this reader cannot read: another format, or a newer major version."""
    if d.get("format") != FORMAT_NAME:
        raise DumpError(f"not a vecfmt manifest (format is {d.get('format')!r})")
    version = str(d.get("format_version", ""))
    major = version.split(".")[0]
    if not major.isdigit():
        raise DumpError(f"manifest.json has an invalid format_version {version!r}")
    if int(major) > SUPPORTED_MAJOR:
        raise DumpError(
            f"dump format version {version} is newer than this vecfmt reads "
            f"({SUPPORTED_MAJOR}.x); upgrade vecfmt"
        )
    if int(major) < 1:
        raise DumpError(f"unknown dump format version {version}")


@cache
def manifest_json_schema() -> dict[str, Any]:
    return json.loads(resources.files("vecfmt").joinpath("manifest.schema.json").read_text())


@cache
def _manifest_validator() -> Any:
    schema = manifest_json_schema()
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema)


def check_manifest_schema(d: dict[str, Any]) -> None:
    """``jsonschema.validate(d, manifest_json_schema())`` (the same error raised), without checking the schema
    itself again on every call: that took about 0.3 s, twice per export."""
    error = jsonschema.exceptions.best_match(_manifest_validator().iter_errors(d))
    if error is not None:
        raise error


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

