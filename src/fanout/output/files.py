"""Saving response bodies under ``--out-dir``: safe names and atomic writes.

A URL maps to a relative path that mirrors the site, with a hash of the full
URL in the file name::

    https://Example.com:8443/docs/API%20guide/v2.json?page=2#top
    → example.com_8443/docs/API_guide/v2__page=2-43b79ba681dda6b2.json

    <host>[_<port>]/<dir>/.../<name>[__<query>]-<hash16>.<ext>

- ``hash16`` is 16 hex digits of SHA-256 over the URL exactly as given, so
  URLs that differ only in case, query, fragment or characters that sanitise
  alike still get different files, and a URL gets the same file in every run.
  A URL's credentials (``user:password@``) never reach a name, not even
  through the hash: for such a URL it is taken over the URL with ``***@`` and
  a slow scrypt digest of the credentials
  (:func:`fanout.output.credentials.stored_key`), so names tell passwords apart
  without offering a fast hash to guess them from.
- Only letters, digits, marks and ``-_.=+,~@`` are kept; anything else
  (separators, ``%2f`` once decoded, control characters, ``:``, ``*``,
  spaces...) becomes ``_``. Segments ``.``, ``..`` and empty ones (also when
  percent-encoded) are dropped, so a URL can never climb out of its host.
- A component never starts with ``.`` (no hidden files, nothing for ``.tmp``
  files to collide with); Windows device names (``CON``, ``NUL``...) get a
  ``_``; a directory never looks like a file name, so a file and a directory
  can never want the same name.
- Each component is at most ``max_component`` UTF-8 bytes and the path at most
  ``max_path``: directory segments beyond that are dropped (the hash still
  tells the files apart).
- A path ending in ``/`` (or empty) is named ``index``; the extension comes
  from the URL's last segment, else from the Content-Type when given, else
  ``html`` for an index and ``bin`` otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from fanout.errors import ConfigError, SinkError
from fanout.output.credentials import KeySource, stored_key

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = ["STAGING", "safe_relpath", "staging_dir", "write_atomic"]

_HASH_HEX: Final = 16
_O_BINARY: Final[int] = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
_EXT_RE: Final = re.compile(r"[A-Za-z0-9]{1,8}")
_SAFE_PUNCTUATION: Final = frozenset("-_.=+,~@")
# Fixed, so a URL keeps its name across runs; scrypt still makes each guess slow.
_NAME_SALT: Final = b"fanout --out-dir names"
# A directory component that ends like a file name would ("-<hash16>.<ext>")
# gets a "_", so no URL's directory can take the name of another URL's file.
_FILE_LIKE_RE: Final = re.compile(r"-[0-9a-f]{16}\.[a-z0-9]{1,8}$", re.IGNORECASE)
_WINDOWS_DEVICES: Final = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
# Fixed here rather than from `mimetypes`, whose answers depend on the machine.
_CONTENT_TYPE_EXT: Final = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/json": "json",
    "text/plain": "txt",
    "text/css": "css",
    "text/csv": "csv",
    "text/javascript": "js",
    "application/javascript": "js",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/gzip": "gz",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/svg+xml": "svg",
}


def _truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def _clean(text: str) -> str:
    """Keep letters, digits, marks and a little punctuation; everything else is ``_``."""
    text = unicodedata.normalize("NFC", text)
    chars = [
        c if c in _SAFE_PUNCTUATION or unicodedata.category(c)[0] in "LNM" else "_" for c in text
    ]
    if chars and chars[0] == ".":
        chars[0] = "_"
    return "".join(chars)


def _component(text: str, limit: int) -> str:
    """A safe, non-empty name of at most ``limit`` bytes, usable as a directory."""
    # Two bytes spare: at most two of the fixes below ("_" before, "_" after) apply.
    name = _truncate(_clean(text), limit - 2) or "_"
    if name.rstrip(". ") != name:  # Windows drops trailing dots and spaces
        name += "_"
    if name.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        name = "_" + name
    if _FILE_LIKE_RE.search(name):
        name += "_"
    return name


def _split_ext(segment: str) -> tuple[str, str | None]:
    stem, dot, ext = segment.rpartition(".")
    if dot and stem and _EXT_RE.fullmatch(ext):
        return stem, ext.lower()
    return segment, None


def _ext_for(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    found = _CONTENT_TYPE_EXT.get(media)
    if found is None and media.endswith("+json"):
        return "json"
    if found is None and media.endswith("+xml"):
        return "xml"
    return found


def _host_label(host: str | None, port: int | None, scheme: str) -> str:
    if not host:
        return "_"
    default = {"http": 80, "https": 443}.get(scheme)
    return host if port is None or port == default else f"{host}_{port}"


def safe_relpath(
    url: str,
    *,
    content_type: str | None = None,
    max_component: int = 100,
    max_path: int = 240,
) -> str:
    """Map a URL to a safe, deterministic relative path (POSIX separators).

    The path never holds ``.``/``..``/empty components, NUL or control
    characters, credentials or absolute parts, and stays within the byte
    limits; see the module docstring for the scheme. Never raises for any
    ``url`` string; a bad limit raises :class:`~fanout.errors.ConfigError`.

    >>> safe_relpath("https://example.com/a/../../etc/passwd")
    'example.com/a/etc/passwd-6045b335c3ce241e.bin'
    >>> safe_relpath("http://example.com:8080/")
    'example.com_8080/index-4cc86262d3ada872.html'
    """
    if max_component < 40:
        raise ConfigError(f"max_component must be >= 40, got {max_component!r}")
    if max_path < 2 * max_component + 1:
        raise ConfigError(f"max_path must be >= 2 * max_component + 1, got {max_path!r}")
    keyed = stored_key(url, KeySource.URL, _NAME_SALT)  # the URL itself when it has no "@"
    digest = hashlib.sha256(keyed.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    # The hash covers the URL exactly; the parsed parts below only make the name readable.
    safe_url = url.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    try:
        parts = urlsplit(safe_url)
        host, port, scheme = parts.hostname, parts.port, parts.scheme.lower()
        raw_path, query = parts.path, parts.query
    except ValueError:
        host, port, scheme, raw_path, query = None, None, "", safe_url, ""
    host_part = _component(_host_label(host, port, scheme), max_component)

    segments = [unquote(s, errors="replace") for s in raw_path.split("/")]
    is_index = not segments or segments[-1] in ("", ".", "..")
    kept = [s for s in segments if s not in ("", ".", "..")]
    last = "" if is_index or not kept else kept.pop()

    if is_index:
        stem, ext = "index", None
    else:
        stem, ext = _split_ext(last)
    if ext is None:
        ext = _ext_for(content_type) or ("html" if is_index else "bin")
    name = _clean(stem)
    if query:
        name += "__" + _clean(unquote(query, errors="replace"))
    suffix = f"-{digest}.{ext}"
    name = _truncate(name, max_component - len(suffix)) or "_"
    file_part = name + suffix

    dirs: list[str] = []
    used = len(host_part.encode()) + 1 + len(file_part.encode())
    for segment in kept:
        component = _component(segment, max_component)
        size = len(component.encode()) + 1
        if used + size > max_path:
            break
        dirs.append(component)
        used += size
    return "/".join([host_part, *dirs, file_part])


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(
    root: Path, relpath: str, data: bytes, *, fsync: bool = False, temp_dir: Path | None = None
) -> Path:
    """Write ``data`` to ``root / relpath`` so the final name never holds a partial file.

    Parent directories are created; the data goes to a temporary file, then
    ``os.replace`` gives it its name. The temporary file is made in
    ``temp_dir`` when given (on the same file system, such as a run's
    :func:`staging_dir`), else hidden in the target's directory. With
    ``fsync=True`` the file and its directory are synced first (durable
    across power loss, but slower). The target must resolve inside ``root``.
    On any error the temporary file is removed and
    :class:`~fanout.errors.SinkError` names the path and the reason.
    Blocking: from async code, run it in a thread.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> write_atomic(root, "h.example/a-0123.bin", b"hi").read_bytes()
    b'hi'
    """
    if not relpath or "\x00" in relpath or Path(relpath).is_absolute():
        raise SinkError(f"refusing to write {relpath!r}: not a relative path")
    target = root / relpath
    temp: Path | None = None
    try:
        base = root.resolve()
        target = base / relpath
        resolved = target.resolve()
        if resolved == base or not resolved.is_relative_to(base):
            # "..", or a symlink on the way that leads out
            raise SinkError(f"refusing to write {str(target)!r}: outside {str(base)!r}")
        target = resolved
        directory = resolved.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = _create_temporary(temp_dir or directory, resolved.name)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp, resolved)
        temp = None
        if fsync:
            _fsync_dir(directory)
    except OSError as exc:
        raise SinkError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # a symlink loop, on Pythons before 3.13
        raise SinkError(f"cannot write {str(target)!r}: {exc}") from None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink()
    return resolved


def _create_temporary(directory: Path, name: str) -> tuple[int, Path]:
    """A new temporary file in ``directory``: its descriptor and path.

    Created with O_EXCL and the umask's mode, unlike mkstemp's 0600."""
    for _ in range(16):
        temp = directory / f".{_truncate(name, 64)}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {str(directory)!r}")


STAGING: Final = ".fanout-tmp"
"""The directory under ``--out-dir`` that holds the temporary files of runs."""


@contextlib.contextmanager
def staging_dir(root: Path) -> Iterator[Path]:
    """The directory for a run's temporary files: ``root/.fanout-tmp`` (no
    saved file can have that name: a component never starts with ``.``).

    Each run holds a shared lock on ``.fanout-tmp/lock`` while it lasts (a
    lock that any exit releases, kill -9 included). The first run to take it
    exclusively, none other being there, removes the temporary files that
    killed runs left; the last one out removes the directory. Where the file
    system has no locks, nothing is removed. A failure to make the directory
    raises :class:`~fanout.errors.SinkError` naming it.
    """
    staging = root / STAGING
    fd = _enter_staging(staging)
    try:
        yield staging
    finally:
        _leave_staging(staging, fd)


def _enter_staging(staging: Path) -> int:
    """Make ``staging`` and hold its lock shared, having cleaned it when alone;
    return the lock's descriptor."""
    lock = staging / "lock"
    for _ in range(64):
        try:
            staging.mkdir(parents=True, exist_ok=True)
            if staging.is_symlink():  # its leftovers are removed: never through a link
                raise SinkError(f"cannot use {str(staging)!r}: it is a symlink")
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | _O_BINARY | _O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise SinkError(f"cannot make {str(staging)!r}: {exc.strerror or exc}") from None
        if fcntl is None:  # pragma: no cover (Windows)
            return fd
        try:
            if _lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) and _current(fd, lock):
                _remove_leftovers(staging)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:  # no locks on this file system: leave everything as it is
            return fd
        if _current(fd, lock):
            return fd
        os.close(fd)  # the last run out removed the directory meanwhile: make it again
    raise SinkError(f"cannot make {str(staging)!r}: it keeps being removed")


def _leave_staging(staging: Path, fd: int) -> None:
    """Release the lock; remove the directory when no other run is using it."""
    lock = staging / "lock"
    try:
        if fcntl is not None and _lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) and _current(fd, lock):
            _remove_leftovers(staging)
            with contextlib.suppress(OSError):
                lock.unlink()
                staging.rmdir()
    except OSError:  # no locks here after all: leave the directory
        pass
    finally:
        os.close(fd)


def _lock(fd: int, operation: int) -> bool:
    """``flock``; False when another process holds a conflicting lock."""
    assert fcntl is not None
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        return False
    return True


def _current(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the one at ``path`` (not removed
    by a run that left meanwhile)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _remove_leftovers(staging: Path) -> None:
    """Remove everything in ``staging`` but its lock (with the lock held exclusively)."""
    for entry in staging.iterdir():
        if entry.name != "lock":
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
