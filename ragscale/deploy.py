"""Deployment mode: what a page viewer may make the app server open, write or call.

Every path, URL or query value a viewer types into a page is hostile, and the app runs in one
of two modes, read from the environment at each call (so tests and operators can change them):

``RAGSCALE_MODE=local`` (default) — one person on their own machine, app on 127.0.0.1.
    Any regular file may be opened by path (``~`` expanded), any results file written, any
    http(s) engine URL used, except link-local hosts (169.254.0.0/16, fe80::/10: cloud
    metadata services, never an inference server).
``RAGSCALE_MODE=shared`` — a server that strangers can reach.
    Dataset files only under ``RAGSCALE_DATA_ROOTS``; results files only under
    ``RAGSCALE_RESULTS_DIR`` (plus the shipped ``data/`` for viewing); symlinks are resolved
    first, so a link or ``..`` out of a root is refused like any other outside path, with the
    same wording whether or not the file exists. Sweeps started from a page write only
    ``*.sqlite`` files directly in the results folder. Engine URLs only on loopback or listed
    in ``RAGSCALE_ALLOWED_URLS``.

In both modes only regular files are opened (never a FIFO or a device), files read whole are
capped at ``RAGSCALE_MAX_FILE_MB``, and results stores a viewer names are opened read-only.
The command line is the operator's own and is not confined (it still gets the size cap and the
regular-file check through the loaders).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

from ragscale.config import DATA_DIR, SHARED_DATASETS_DIR, cache_dir
from ragscale.errors import UserError

MODES = ("local", "shared")
KINDS = ("dataset", "results")
# Files read whole (dataset JSON) above this are refused; SQLite stores are read by page.
DEFAULT_MAX_FILE_MB = {"local": 1024, "shared": 64}
# Space all uploaded datasets together may take; the least recently used go first.
DEFAULT_UPLOADS_MB = {"local": 2048, "shared": 256}
MAX_TYPED_LENGTH = 1024  # characters of a typed path or URL worth looking at


def mode() -> str:
    value = os.environ.get("RAGSCALE_MODE", "local").strip().lower() or "local"
    if value not in MODES:
        raise UserError(f"RAGSCALE_MODE must be one of {', '.join(MODES)}, got {value!r}")
    return value


def shared() -> bool:
    return mode() == "shared"


def results_dir() -> Path:
    """Where sweeps started from a page write (``RAGSCALE_RESULTS_DIR``, default <cache>/results)."""
    override = os.environ.get("RAGSCALE_RESULTS_DIR")
    return Path(override).expanduser() if override else cache_dir() / "results"


def uploads_dir() -> Path:
    """Where dataset files uploaded on a page are kept (always one of the dataset roots)."""
    return cache_dir() / "uploads"


def data_roots() -> list[Path]:
    """Folders a viewer may open dataset files from in shared mode (``RAGSCALE_DATA_ROOTS``,
    separated by ``os.pathsep``; default: the shared samples and the shipped ``data/``)."""
    listed = os.environ.get("RAGSCALE_DATA_ROOTS")
    roots = [Path(p).expanduser() for p in listed.split(os.pathsep) if p.strip()] if listed else [SHARED_DATASETS_DIR, DATA_DIR]
    return roots + [uploads_dir()]


def roots(kind: str) -> list[Path]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return data_roots() if kind == "dataset" else [results_dir(), DATA_DIR]


def max_file_bytes() -> int:
    return _megabytes("RAGSCALE_MAX_FILE_MB", DEFAULT_MAX_FILE_MB)


def uploads_quota_bytes() -> int:
    return _megabytes("RAGSCALE_UPLOADS_MB", DEFAULT_UPLOADS_MB)


def _megabytes(variable: str, defaults: dict[str, int]) -> int:
    text = os.environ.get(variable)
    try:
        megabytes = float(text) if text else defaults[mode()]
    except ValueError:
        megabytes = float("nan")
    if not 0 < megabytes < 1e9:  # also refuses nan and inf
        raise UserError(f"{variable} must be a positive number of megabytes, got {text!r}")
    return int(megabytes * 1024 * 1024)


# ---- paths ----------------------------------------------------------------------------------

def _typed(text: str, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise UserError(f"give a {what}")
    if "\x00" in text or len(text) > MAX_TYPED_LENGTH:
        raise UserError(f"that is not a usable {what}")
    return text


def _inside(path: Path, folders: list[Path]) -> bool:
    for folder in folders:
        try:
            path.relative_to(folder.resolve())
            return True
        except (ValueError, OSError, RuntimeError):
            continue
    return False


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str, limit: int = 80) -> str:
    """A value another server sent (a model name), cut to one short printable line."""
    cleaned = "".join(c if c.isprintable() else " " for c in str(text)).strip()
    return _shorten(cleaned, limit) or "unknown"


def viewer_path(text: str, kind: str) -> Path:
    """The regular file a viewer asked for, resolved; ``kind`` is "dataset" or "results".

    Local mode: any regular file. Shared mode: only under ``roots(kind)`` after resolving
    symlinks and ``..``; relative paths are looked up under each root in turn. Every refusal
    in shared mode has the same wording, so it never tells whether a file exists elsewhere.
    """
    folders = roots(kind)
    text = _typed(text, f"{kind} file path")
    if not shared():
        path = Path(text).expanduser()
        try:
            info = path.stat()
        except (OSError, ValueError):
            missing = "no results file at" if kind == "results" else "no such dataset file:"
            raise UserError(f"{missing} {_shorten(text)}") from None
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{_shorten(text)} is not a regular file")
        return path.resolve()
    refusal = UserError(f"{_shorten(text)!r} is not a {kind} file this server offers; "
                        f"give a file under {', '.join(str(f) for f in folders)}")
    typed = Path(text)
    candidates = [typed] if typed.is_absolute() else [folder / typed for folder in folders]
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
            if _inside(resolved, folders) and stat.S_ISREG(resolved.stat().st_mode):
                return resolved
        except (OSError, ValueError, RuntimeError):
            continue
    raise refusal


def viewer_folder(text: str) -> Path:
    """A folder a viewer named (a tokenizer's, say), resolved: any folder in local mode, one
    under the dataset roots in shared mode (same uniform refusal as ``viewer_path``)."""
    folders = data_roots()
    text = _typed(text, "folder path")
    typed = Path(text).expanduser() if not shared() else Path(text)
    candidates = [typed] if typed.is_absolute() or not shared() else [folder / typed for folder in folders]
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
            if resolved.is_dir() and (not shared() or _inside(resolved, folders)):
                return resolved
        except (OSError, ValueError, RuntimeError):
            continue
    if not shared():
        raise UserError(f"no such folder: {_shorten(text)}")
    raise UserError(f"{_shorten(text)!r} is not a folder this server offers; "
                    f"give a folder under {', '.join(str(f) for f in folders)}")


def sweep_output_path(text: str) -> Path:
    """Where a sweep started from a page may write its results store.

    Local mode: any path (a relative one is under the results folder). Shared mode: a
    ``*.sqlite`` file directly in ``results_dir()``, new or existing; no folders are created.
    """
    text = _typed(text, "results file name")
    folder = results_dir()
    typed = Path(text).expanduser() if not shared() else Path(text)
    path = typed if typed.is_absolute() else folder / typed
    if path.resolve() == (DATA_DIR / "demo_results.sqlite").resolve():
        raise UserError("the shipped demo results are read-only here; choose another results file")
    if shared():
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            resolved = None
        if (resolved is None or resolved.parent != folder.resolve() or resolved.suffix != ".sqlite"
                or (resolved.exists() and not resolved.is_file())):
            raise UserError(f"{_shorten(text)!r}: sweeps here write a .sqlite file directly in {folder} "
                            "(give a name like my_sweep.sqlite)")
        folder.mkdir(parents=True, exist_ok=True)  # the configured folder itself, never a typed one
        return resolved
    if path.is_dir():
        raise UserError(f"{_shorten(text)} is a folder; give a results file name")
    return path.resolve()


def read_file_capped(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, at most ``limit`` (default ``max_file_bytes()``).

    Opened without blocking and checked on the open descriptor, so a FIFO, a device such as
    /dev/zero or a file swapped in after a check is refused before anything is read.
    Raises ``UserError`` with a one-line reason.
    """
    path = Path(path)
    limit = max_file_bytes() if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise UserError(f"{path.name} is a folder; give a file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise UserError(f"{path.name} is {info.st_size / 2**20:,.1f} MB; files over "
                            f"{limit / 2**20:,.0f} MB are not read here (RAGSCALE_MAX_FILE_MB)")
        # Still non-blocking: a regular file ignores it, and a /proc file that would wait
        # for data (such as /proc/kmsg) fails instead of hanging.
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except BlockingIOError:
        raise UserError(f"{path.name} cannot be read without waiting; give a regular file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while we read
        raise UserError(f"{path.name} is over {limit / 2**20:,.0f} MB; not read (RAGSCALE_MAX_FILE_MB)")
    return data


def read_text_capped(path: str | Path, limit: int | None = None) -> str:
    """``read_file_capped`` decoded as UTF-8 (``UserError`` when it is not)."""
    data = read_file_capped(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{Path(path).name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded dataset under ``uploads_dir()``, named by its content (never by the
    browser's file name alone, which may be ``..`` or a path). All uploads together stay within
    ``RAGSCALE_UPLOADS_MB``: the least recently used are removed to make room."""
    limit = min(max_file_bytes(), uploads_quota_bytes())
    if len(data) > limit:
        raise UserError(f"the upload is {len(data) / 2**20:,.1f} MB; the limit here is {limit / 2**20:,.0f} MB")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name or "upload").name).strip("._") or "upload"
    suffix = ".jsonl" if stem.lower().endswith(".jsonl") else ".json"
    stem = re.sub(r"\.(jsonl|json)$", "", stem, flags=re.IGNORECASE)[:60] or "upload"
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    if target.exists():
        os.utime(target)  # used again: the last to be removed
        return target
    _make_room(folder, len(data), uploads_quota_bytes())
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _make_room(folder: Path, incoming: int, quota: int) -> None:
    """Remove the least recently used uploads (and pieces of interrupted ones) until ``incoming``
    more bytes fit in ``quota``. A dataset is read whole when a sweep starts, so removing its
    file later takes nothing from a running sweep."""
    entries = []
    for path in folder.iterdir():
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            entries.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda entry: entry[0]):
        if total + incoming <= quota:
            break
        path.unlink(missing_ok=True)
        total -= size


# ---- engine URLs ----------------------------------------------------------------------------

def allowed_urls() -> list[str]:
    """``RAGSCALE_ALLOWED_URLS``: comma-separated engine URLs allowed besides loopback."""
    listed = os.environ.get("RAGSCALE_ALLOWED_URLS", "")
    return [_normal(u) for u in listed.split(",") if u.strip()]


def _normal(url: str) -> str:
    parts = urlsplit(url.strip())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []  # unresolvable: the client will say it cannot reach it
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def _plain(address):
    # ::ffff:169.254.169.254 is the IPv4 address in disguise
    return getattr(address, "ipv4_mapped", None) or address


def _is_loopback_literal(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_engine_url(url: str) -> str:
    """``check_server_url`` for an inference engine (SGLang server or router)."""
    return check_server_url(url, "engine", "http://127.0.0.1:30000")


def check_server_url(url: str, what: str = "engine", example_url: str = "http://127.0.0.1:30000") -> str:
    """The URL cleaned (no trailing slash), or ``UserError`` when a viewer may not use it.

    ``what`` names the kind of server in messages ("engine", "Chroma server").

    Always: http(s), a host, no user name or password, no query or fragment (which would let a
    caller pick the exact path the server requests). Local mode: any host except link-local
    ones. Shared mode: loopback (scheme, host and port only) or a URL listed in
    ``RAGSCALE_ALLOWED_URLS``.
    """
    text = _typed(url, "server URL")
    example = f"give a URL like {example_url}"
    try:
        parts = urlsplit(text)
        parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise UserError(f"{_shorten(text)!r} is not a URL; {example}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in text):
        raise UserError(f"{_shorten(text)!r} is not a URL; {example}")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment or "#" in text or "?" in text:
        raise UserError(f"{_shorten(text)!r}: a server URL has no user name, query or fragment; {example}")
    cleaned = text.rstrip("/")
    if shared():
        if _is_loopback_literal(host) and parts.path.strip("/") == "":
            return cleaned
        if _normal(text) not in allowed_urls():
            raise UserError(f"{_shorten(text)!r} is not {_article(what)} {what} this server may call: only loopback "
                            "(http://127.0.0.1:PORT) and the URLs in RAGSCALE_ALLOWED_URLS")
    addresses = [_plain(a) for a in _addresses(host)]
    if any(a.is_link_local or a.is_multicast or a.is_unspecified for a in addresses):
        raise UserError(f"{_shorten(text)!r} is a link-local, multicast or unspecified address, never {_article(what)} {what}")
    return cleaned


def check_server_given_url(url: str, what: str = "engine") -> str:
    """A URL another server told the app to call (a router's worker): the checks of a typed one,
    and no path, so the server never chooses which path the app requests from another host."""
    cleaned = check_server_url(url, what)
    if urlsplit(cleaned).path.strip("/"):
        raise UserError(f"{_shorten(cleaned)!r}: a server-given {what} URL is scheme, host and port only")
    return cleaned


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def viewer_model(text: str) -> str | None:
    """The embedded engine's model a viewer named (``--model`` on the page): None for the default
    SmolLM2, else a checked .gguf file or Hugging Face folder. Shared mode: only under the data
    roots, like every other path a viewer types."""
    if not text or not text.strip():
        return None
    from ragscale.engines.model_files import resolve_model

    path = viewer_path(text, "dataset") if text.strip().lower().endswith(".gguf") else viewer_folder(text)
    return str(resolve_model(path).path)
