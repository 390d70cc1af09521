"""Where dumps live: a URI (local path, ``file://``, ``s3://``, ``gs://``, ...) resolved to a
``pyarrow.fs`` filesystem. Credentials come from the environment, never from the URI."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO
from urllib.parse import quote, quote_plus, unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from vecfmt.errors import DumpError, first_line

OBJECT_STORES = ("s3", "gcs", "abfs")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


_SECRET_PARAM = re.compile(r"(?i)([?&][^=&]*(?:secret|key|token|password|credential)[^=&]*=)[^&]*")
# What may follow a userinfo's "@": a host list (names, IPv4/IPv6, ports, commas), then "/", "?" or the end.
_HOST_PART = re.compile(r"[\w.~%:,\[\]-]*(?:[/?]|$)")


def split_userinfo(rest: str) -> tuple[str | None, str]:
    """``(userinfo, the rest)`` of what follows ``SCHEME://``; userinfo is None when there is none.

    The userinfo ends at the LAST "@" that is followed by a host part, so an unencoded password may hold
    "?", "#", "/", ":" or "@" and is never mistaken for options or a path; an "@" after the host (in an
    option such as ``query=... @> ...``, or a path ``./data@v2``) is not taken for one."""
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) >= 0:
        user = rest[:at].partition(":")[0]
        if not any(c in user for c in "/?#") and _HOST_PART.match(rest, at + 1):
            return rest[:at], rest[at + 1:]
    return None, rest


def userinfo_secrets(userinfo: str | None) -> tuple[str, ...]:
    """Every form the password of ``USER:PASSWORD`` may take in text: as written, percent-decoded, and
    percent-encoded (as a driver's connection string holds it)."""
    if userinfo is None or ":" not in userinfo:
        return ()
    return secret_forms(userinfo.partition(":")[2])


def secret_forms(secret: str | None) -> tuple[str, ...]:
    """Every form ``secret`` may take in text, longest first: as written, percent-decoded, and
    percent-encoded the ways URLs, query strings and drivers encode it."""
    if not secret:
        return ()
    forms = set()
    for value in (secret, unquote(secret)):
        forms |= {value, quote(value, safe=""), quote(value), quote_plus(value)}
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value replaced (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def secrets_of(uri: str) -> list[str]:
    """The password values in ``uri``'s userinfo (as written, decoded, encoded); none for other text."""
    if not _SCHEME.match(uri):
        return []
    return list(userinfo_secrets(split_userinfo(uri.partition("://")[2])[0]))


def redact(uri: str, secrets: Iterable[str] = ()) -> str:
    """The URI (or any text) with any password (``user:secret@``), secret-looking query values
    (``secret_key=``, ``session_token=``, ...) and the given ``secrets`` values replaced, fit for
    messages and manifests."""
    found = [*secrets, *secrets_of(uri)]
    if _SCHEME.match(uri):
        head, _, rest = uri.partition("://")
        userinfo, after = split_userinfo(rest)
        if userinfo is not None and ":" in userinfo:
            uri = f"{head}://{userinfo.partition(':')[0]}:***@{after}"
        uri = _SECRET_PARAM.sub(r"\1***", uri)
    return scrub(uri, found)


@dataclass(frozen=True)
class Location:
    """A directory on some filesystem: the root of a dump."""

    fs: pafs.FileSystem
    root: str  # path inside ``fs``, no trailing slash
    uri: str  # as the user gave it (redacted)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def size(self, relative: str) -> int | None:
        info = self.fs.get_file_info(self.path(relative))
        return None if info.type == pafs.FileType.NotFound else info.size

    def read_bytes(self, relative: str) -> pa.Buffer:
        # Read, not memory-mapped: a file truncated while mapped would kill the process with SIGBUS.
        with self.fs.open_input_file(self.path(relative)) as f:
            return f.read_buffer()

    def sha256(self, relative: str) -> str:
        """The file's SHA-256, streamed (8 MiB at a time)."""
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(relative)) as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def listdir(self) -> list[str]:
        """Relative paths of every file below the root."""
        return sorted(self.sizes())

    def sizes(self) -> dict[str, int]:
        """Every file below the root with its size, from one listing (one request on object storage)."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        prefix = len(self.root) + 1 if self.root else 0
        return {
            info.path[prefix:]: info.size
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        }

    def makedirs(self, relative: str = "") -> None:
        if self.fs.type_name in OBJECT_STORES:
            return  # folders are implicit there; marker objects would only clutter the dump
        self.fs.create_dir(self.path(relative) if relative else self.root, recursive=True)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def sync(self, relative: str = "") -> None:
        """Flush a file, or a folder's entries, to disk, so that a crash cannot lose what a later write
        (the manifest) vouches for. Only local disks need it: an object store has an object once its PUT
        returns."""
        if not self.local:
            return
        fd = os.open(self.path(relative) if relative else self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_atomic(self, relative: str, data: bytes) -> None:
        """Make ``relative`` appear whole or not at all: temp file + rename on a local disk (then the
        folder synced, so the rename itself survives a crash), one PUT on object storage (an object store
        never shows a half-written object)."""
        target = self.path(relative)
        if self.local:
            temp = f"{target}.tmp-{uuid.uuid4().hex}"
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
            self.sync(relative.rpartition("/")[0])
        else:
            with self.fs.open_output_stream(target) as out:
                out.write(data)

    def delete(self, relative: str) -> None:
        self.fs.delete_file(self.path(relative))


def exclusive_lock(folder: str, name: str) -> IO[str] | None:
    """An exclusive ``flock`` on ``<folder>/.<name>.vecfmt-lock`` (the folder and file made if missing), held
    by the returned open file until it is closed, or None when another process holds it. The OS releases
    it when its process ends, so a killed run leaves no stale lock (the empty file stays)."""
    os.makedirs(folder, exist_ok=True)
    handle = open(os.path.join(folder, f".{name}.vecfmt-lock"), "a")  # noqa: SIM115 (held until the caller closes it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def lock_for_writing(location: Location) -> IO[str] | None:
    """One writer of a dump at a time on a local disk: ``exclusive_lock`` on ``.<folder>.vecfmt-lock`` beside
    the dump folder (None elsewhere: object stores have no such lock). Two runs writing one folder (two
    ``--resume`` of one interrupted export, say) would delete each other's files and commit a manifest
    over files that are gone."""
    if not location.local:
        return None
    parent, name = os.path.split(location.root.rstrip("/"))
    try:
        handle = exclusive_lock(parent or ".", name)
    except OSError as exc:
        raise DumpError(f"{location.uri}: cannot write there: {first_line(exc)}") from None
    if handle is None:
        raise DumpError(f"{location.uri}: another vecfmt run is writing this dump; this one changed nothing: "
                        "re-run it once the other is done")
    return handle


def resolve(uri: str) -> Location:
    """Resolve a dump URI. Plain paths are local; anything with a scheme goes to ``pyarrow.fs``."""
    shown = redact(uri)
    if _SCHEME.match(uri) and (split_userinfo(uri.partition("://")[2])[0] is not None
                               or "@" in urlsplit(uri).netloc):
        raise DumpError(
            f"{shown}: credentials do not belong in a dump URI; set them in the environment "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)"
        )
    if not _SCHEME.match(uri):
        root = os.path.abspath(os.path.expanduser(uri))
        return Location(pafs.LocalFileSystem(), root.rstrip("/") or "/", shown)
    if uri.startswith("s3://") and "allow_delayed_open" not in uri:
        # small objects (the manifest) then go up in one PUT instead of a three-request multipart upload
        uri += ("&" if "?" in uri else "?") + "allow_delayed_open=true"
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise DumpError(f"cannot open {shown}: {first_line(exc)}") from None
    return Location(fs, path.rstrip("/"), shown)


class HashingSink:
    """A writable file that forwards to a pyarrow output stream and computes SHA-256 and size on the way,
    so a file's checksum costs no second pass over its bytes. Hashing runs in a background thread
    (hashlib releases the GIL), beside the Parquet encoding."""

    def __init__(self, out: pa.NativeFile) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self._hashed: Future[None] | None = None
        self.bytes = 0
        self.closed = False

    def write(self, data: bytes | memoryview | pa.Buffer) -> int:
        chunk = bytes(data)  # Arrow may reuse its buffer once write() returns
        self._out.write(chunk)
        self._hashed = _hash_thread.submit(self._hash.update, chunk)  # one worker: updates stay in order
        self.bytes += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self.closed:
            self._out.close()
            self.closed = True

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        if self._hashed is not None:
            self._hashed.result()
        return self._hash.hexdigest()


_hash_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecfmt-sha256")

