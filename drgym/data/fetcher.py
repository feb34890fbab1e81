"""Verified downloads into a local cache, with an optional mirror (a folder or a server).

A file reaches the cache only whole and with the registry's sha256: it is streamed into a temporary file
beside its final place and renamed over it at the end, so an interrupted or corrupt download leaves nothing
behind. ``DRGYM_DATA_MIRROR`` points offline machines, CI and tests at a copy of the same layout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from drgym.data.registry import DataFile, get_file
from drgym.errors import ChecksumError, ConfigError, DataError, DownloadError

__all__ = [
    "ENV_HOME",
    "ENV_MIRROR",
    "afetch",
    "afetch_many",
    "cache_path",
    "data_home",
    "fetch",
    "fetch_many",
    "install_file",
    "is_available",
    "run_sync",
]

logger = logging.getLogger(__name__)

ENV_HOME = "DRGYM_HOME"
ENV_MIRROR = "DRGYM_DATA_MIRROR"

_CHUNK = 1 << 16  # bytes read from the socket at a time
_FLUSH = 1 << 20  # bytes hashed and written per worker-thread call
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_S = 0.5
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)

T = TypeVar("T")


def data_home() -> Path:
    """drgym's cache root: ``$DRGYM_HOME``, else the platform's user cache folder for ``drgym``."""
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs is a core dependency
        return Path("~/.cache/drgym").expanduser()
    return Path(platformdirs.user_cache_dir("drgym"))


def cache_path(relpath: str) -> Path:
    """Where a registered file is cached: ``data_home()/data/<relpath>``."""
    return data_home() / "data" / get_file(relpath).relpath


@dataclass(frozen=True)
class _Mirror:
    folder: Path | None = None
    base_url: str | None = None

    def url_for(self, relpath: str) -> str:
        assert self.base_url is not None
        return f"{self.base_url.rstrip('/')}/{quote(relpath)}"


def _mirror() -> _Mirror | None:
    """Parse ``DRGYM_DATA_MIRROR``: an http(s) URL, a ``file://`` URL or a folder."""
    value = os.environ.get(ENV_MIRROR, "").strip()
    if not value:
        return None
    scheme = urlsplit(value).scheme.lower()
    if scheme in ("http", "https"):
        return _Mirror(base_url=value)
    folder = Path(urlsplit(value).path if scheme == "file" else value).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{ENV_MIRROR}={value!r} is neither an http(s) URL nor an existing folder")
    return _Mirror(folder=folder)


# Files already hashed in this process, keyed by (path, size, mtime): re-hashing 40 MB on every load would
# cost more than parsing it, while a change of size or mtime (a corrupted or replaced file) re-checks it.
_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_FLUSH), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, entry: DataFile) -> None:
    """Raise ChecksumError unless ``path`` holds exactly the registered bytes."""
    key = _stat_key(path)
    with _verified_lock:
        if key in _verified:
            return
    if key[1] != entry.size:
        raise ChecksumError(f"{path} has {key[1]} bytes, expected {entry.size} for {entry.relpath}")
    actual = _sha256_of(path)
    if actual != entry.sha256:
        raise ChecksumError(f"{path} has sha256 {actual}, expected {entry.sha256} for {entry.relpath}")
    with _verified_lock:
        _verified.add(key)


def _cached_ok(target: Path, entry: DataFile) -> bool:
    """True when the cache holds a verified copy; a corrupt copy is removed so that it is fetched again."""
    if not target.is_file():
        return False
    try:
        _verify(target, entry)
    except ChecksumError as exc:
        logger.warning("discarding corrupt cached file, it will be fetched again: %s", exc)
        target.unlink(missing_ok=True)
        return False
    return True


def _local_copy(entry: DataFile) -> Path | None:
    """A verified local copy (cache first, then a mirror folder), or None when a download is needed."""
    target = data_home() / "data" / entry.relpath
    if _cached_ok(target, entry):
        return target
    mirror = _mirror()
    if mirror is not None and mirror.folder is not None:
        source = mirror.folder / entry.relpath
        if not source.is_file():
            raise DataError(f"{entry.relpath} is not in the mirror folder {mirror.folder} ({ENV_MIRROR})")
        _verify(source, entry)
        return source
    return None


def _source_url(entry: DataFile) -> str:
    mirror = _mirror()
    if mirror is not None and mirror.base_url is not None:
        return mirror.url_for(entry.relpath)
    if entry.url is None:
        raise DataError(f"{entry.relpath} cannot be downloaded automatically: {entry.how_to_get}")
    return entry.url


class _Transient(Exception):
    """A failure worth another try (connection fault, truncated body, 5xx, 429)."""


def _new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=8, limit_per_host=4)
    return aiohttp.ClientSession(
        timeout=_TIMEOUT, connector=connector, trust_env=True, headers={"User-Agent": "drgym-data"}
    )


async def _stream_to(session: aiohttp.ClientSession, url: str, fh, entry: DataFile) -> None:
    """Stream ``url`` into ``fh``, hashing as it goes; raise unless the bytes are exactly the registered ones."""
    digest = hashlib.sha256()
    received = 0
    pending = bytearray()

    def flush(block: bytes) -> None:
        digest.update(block)
        fh.write(block)

    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                message = f"HTTP {resp.status} for {url}"
                raise _Transient(message) if resp.status in _RETRY_STATUSES else DownloadError(message)
            async for chunk in resp.content.iter_chunked(_CHUNK):
                received += len(chunk)
                if received > entry.size:
                    raise ChecksumError(f"{url} sent more than the {entry.size} bytes of {entry.relpath}")
                pending += chunk
                if len(pending) >= _FLUSH:
                    await asyncio.to_thread(flush, bytes(pending))
                    pending.clear()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise _Transient(f"{type(exc).__name__} while reading {url}: {exc}") from exc
    if pending:
        await asyncio.to_thread(flush, bytes(pending))
    if received < entry.size:
        raise _Transient(f"{url} ended after {received} of {entry.size} bytes")
    if digest.hexdigest() != entry.sha256:
        raise ChecksumError(
            f"{url} has sha256 {digest.hexdigest()}, expected {entry.sha256} for {entry.relpath}"
        )


async def _download_once(session: aiohttp.ClientSession, url: str, target: Path, entry: DataFile) -> None:
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            await _stream_to(session, url, fh, entry)
        await asyncio.to_thread(os.replace, tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    with _verified_lock:
        _verified.add(_stat_key(target))


async def _download(
    url: str, target: Path, entry: DataFile, session: aiohttp.ClientSession | None, attempts: int
) -> None:
    own = session is None
    session = session if session is not None else _new_session()
    try:
        for attempt in range(1, attempts + 1):
            try:
                await _download_once(session, url, target, entry)
                logger.info("downloaded %s from %s", entry.relpath, url)
                return
            except _Transient as exc:
                if attempt >= attempts:
                    raise DownloadError(
                        f"could not download {entry.relpath} ({attempts} tries): {exc}"
                    ) from exc
                delay = _BACKOFF_S * 2 ** (attempt - 1)
                logger.warning("download of %s failed (%s), retrying in %.1f s", entry.relpath, exc, delay)
                await asyncio.sleep(delay)
    finally:
        if own:
            await session.close()


async def afetch(relpath: str, *, session: aiohttp.ClientSession | None = None, attempts: int = 3) -> Path:
    """Return a verified local path of a registered file, downloading it into the cache on first use.

    Args:
        relpath: The file's path relative to the data folder (a key of ``registry.FILES``).
        session: An aiohttp session to reuse (one per batch); a private one is opened and closed otherwise.
        attempts: Tries for transient faults (connection errors, truncated bodies, 5xx, 429).

    Raises:
        ConfigError: ``relpath`` is not registered, or ``DRGYM_DATA_MIRROR`` is malformed.
        ChecksumError: The bytes differ from the registry's (nothing is cached).
        DownloadError: HTTP error or truncated download after the retries (nothing is cached).
        DataError: The file is missing from the mirror folder, or has no download address.
    """
    entry = get_file(relpath)
    local = await asyncio.to_thread(_local_copy, entry)
    if local is not None:
        return local
    url = _source_url(entry)
    target = data_home() / "data" / entry.relpath
    await _download(url, target, entry, session, max(1, attempts))
    return target


async def afetch_many(relpaths: Iterable[str], *, attempts: int = 3) -> list[Path]:
    """Fetch several files concurrently over one session; paths come back in the order asked."""
    relpaths = list(relpaths)
    for relpath in relpaths:  # fail before any download starts when a file cannot be had at all
        entry = get_file(relpath)
        if not await asyncio.to_thread(_local_copy, entry):
            _source_url(entry)
    async with _new_session() as session:
        tasks = [asyncio.ensure_future(afetch(r, session=session, attempts=attempts)) for r in relpaths]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from synchronous code, also when the calling thread already runs an event loop.

    With no loop in this thread it uses ``asyncio.run``; otherwise the coroutine runs on a fresh loop in a
    worker thread (blocking the caller, so prefer the async variant from async code).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="drgym-data") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def fetch(relpath: str, *, attempts: int = 3) -> Path:
    """Synchronous :func:`afetch`; a cached or mirrored file is returned without starting an event loop."""
    local = _local_copy(get_file(relpath))
    if local is not None:
        return local
    return run_sync(lambda: afetch(relpath, attempts=attempts))


def fetch_many(relpaths: Iterable[str], *, attempts: int = 3) -> list[Path]:
    """Synchronous :func:`afetch_many`."""
    relpaths = list(relpaths)
    local = [_local_copy(get_file(r)) for r in relpaths]
    if all(p is not None for p in local):
        return [p for p in local if p is not None]
    return run_sync(lambda: afetch_many(relpaths, attempts=attempts))


def is_available(relpath: str) -> bool:
    """Whether a file is already cached or in the mirror folder (by presence only; no hashing)."""
    entry = get_file(relpath)
    if (data_home() / "data" / entry.relpath).is_file():
        return True
    try:
        mirror = _mirror()
    except ConfigError:
        return False
    return mirror is not None and mirror.folder is not None and (mirror.folder / entry.relpath).is_file()


def install_file(relpath: str, source: str | os.PathLike[str]) -> Path:
    """Verify a file obtained by hand and copy it into the cache (for files with no download address).

    ``source`` is the file itself, or an archive (a wheel or zip) holding it as the registry's
    ``archive_member``. Raises ChecksumError (and caches nothing) when the bytes differ.
    """
    entry = get_file(relpath)
    source = Path(source).expanduser()
    if not source.is_file():
        raise DataError(f"{source} does not exist")
    target = data_home() / "data" / entry.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if zipfile.is_zipfile(source) and entry.format != "zip":
                with zipfile.ZipFile(source) as archive:
                    if entry.archive_member not in archive.namelist():
                        raise DataError(
                            f"{source} does not contain {entry.archive_member or entry.relpath!r}"
                        )
                    with archive.open(entry.archive_member) as member:
                        shutil.copyfileobj(member, out)
            else:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out)
        _verify(tmp, entry)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    with _verified_lock:
        _verified.add(_stat_key(target))
    return target
