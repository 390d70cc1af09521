"""vecfmt: a portable Arrow/Parquet dump format for vector embeddings."""

__version__ = "0.1.0"

from vecfmt.errors import DumpError, InvalidDataError, StoreError, VecfmtError
from vecfmt.manifest import (
    EmbeddingModel,
    FileEntry,
    Manifest,
    NamespaceEntry,
    Source,
    VectorSpec,
)
from vecfmt.reader import Dump, open_dump
from vecfmt.writer import DumpWriter, ParquetOptions, PartWriter, commit_manifest, write_dump

__all__ = [
    "Dump",
    "DumpError",
    "DumpWriter",
    "EmbeddingModel",
    "FileEntry",
    "InvalidDataError",
    "Manifest",
    "NamespaceEntry",
    "ParquetOptions",
    "PartWriter",
    "Source",
    "StoreError",
    "VecfmtError",
    "VectorSpec",
    "commit_manifest",
    "open_dump",
    "write_dump",
]
