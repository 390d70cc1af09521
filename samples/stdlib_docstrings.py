"""Real English text for the vecfmt samples and benchmarks: CPython stdlib docstrings.

The passages are the first paragraph of the docstrings of the Python standard
library's modules, classes, functions and methods (dunder names excluded), collected
with ``inspect`` from the interpreter that runs this file (the figures in
``samples/README.md`` come from CPython 3.11.7). The text is part of the CPython
source code and is distributed under the PSF License Agreement (version 2), see
``LICENSE.txt`` in the stdlib directory or https://docs.python.org/3/license.html.

Collection is deterministic for a given Python build: modules, members and methods
are visited in sorted order, passages are deduplicated by their normalised text
(first occurrence wins) and filtered to plain prose of 1-3 sentences and 40-600
characters. What a stdlib module holds can depend on what else was imported before
(e.g. ``typing_extensions`` rebinds helpers in ``typing``), so this module uses the
standard library only and is meant to run in a fresh ``python -I -S`` process::

    .venv/bin/python -I -S samples/stdlib_docstrings.py > passages.json
    .venv/bin/python -I -S samples/stdlib_docstrings.py --count

``stdlib_corpus.collect`` does exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import pkgutil
import re
import sys
import types
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
    """(qualname, kind, object) of the classes/functions/methods defined in mod (no dunders)."""
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the stdlib docstring passages as JSON.")
    parser.add_argument("--count", action="store_true", help="print only counts per kind")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # a module printing on import must not spoil the JSON
        pool = list(iter_passages())
    if args.count:
        kinds: dict[str, int] = {}
        for p in pool:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        print(f"{len(pool)} passages: {kinds}")
    else:
        json.dump([asdict(p) for p in pool], sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
