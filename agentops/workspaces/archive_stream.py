"""Archives of a workspace going out: tar.gz and zip, chunk by chunk, never whole in memory.

Rules:
- What goes in is `tree.walk`'s view of the workspace: directories, regular files, and
  symlinks whose target stays inside (`tree.link_stays_inside`, so `archives.extract` takes
  them back); never a `.git` path, a link out, a file with other hard links or a device.
- `archive_chunks(root, fmt)` yields the archive as it is produced: memory holds one file
  chunk and the compressor's window. tar.gz is written here (headers from
  `tarfile.TarInfo.tobuf`, data, padding, gzip by zlib); zip by `zipfile` writing to an
  unseekable sink (it then uses data descriptors, as zip allows). `pump` feeds any chunk
  iterator (an archive, a diff) to an async writer, one chunk per thread hop.
- A file that changes while it is archived keeps the archive well-formed: tar declares the
  size seen by stat, pads a file that shrank with zeros and cuts one that grew.
- Names are relative UTF-8 paths (a name that is not valid UTF-8 is left out of a zip), mtimes
  are kept, modes are 0644/0755 (directories 0755), owners 0.
"""

from __future__ import annotations

import asyncio
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Literal

from agentops.workspaces.tree import Entry, link_stays_inside, walk

Format = Literal["tar.gz", "zip"]
CHUNK = 64 * 1024
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def archive_chunks(root: str, fmt: Format) -> Generator[bytes, None, None]:
    """The archive of the workspace at `root` (its real path), chunk by chunk."""
    if fmt == "zip":
        return _zip(root)
    return _gzip(_tar(root))


def write_archive(root: str, fmt: Format, sink: Callable[[bytes], object]) -> int:
    """Write the archive to `sink` (e.g. a file's `write`); returns the bytes written."""
    total = 0
    for chunk in archive_chunks(root, fmt):
        sink(chunk)
        total += len(chunk)
    return total


async def pump(chunks: Iterator[bytes], write: Callable[[bytes], Awaitable[object]]) -> int:
    """Drive a blocking chunk iterator in a thread and await `write` for each chunk (e.g. an
    aiohttp `StreamResponse.write`); the iterator is closed however this ends."""
    total = 0
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await write(chunk)
            total += len(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
    return total


def _members(root: str) -> Iterator[Entry]:
    for entry in walk(root, dirs=True):
        if entry.kind != "link" or link_stays_inside(entry.path, entry.target or ""):
            yield entry


def _file_mode(entry: Entry) -> int:
    if entry.kind == "dir":
        return 0o755
    if entry.kind == "link":
        return 0o777
    return 0o755 if entry.mode & 0o111 else 0o644


def _read(entry: Entry, size: int) -> Iterator[bytes]:
    """At most `size` bytes of the file, chunk by chunk; nothing if it cannot be opened."""
    try:
        fd = entry.open()
    except OSError:
        return
    with open(fd, "rb") as fh:
        left = size
        while left > 0 and (chunk := fh.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


# ---- tar.gz ----
def _tar(root: str) -> Iterator[bytes]:
    written = 0
    for entry in _members(root):
        info = tarfile.TarInfo(entry.path)
        info.mtime = int(entry.mtime)
        info.mode = _file_mode(entry)
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif entry.kind == "link":
            info.type, info.linkname = tarfile.SYMTYPE, entry.target or ""
        else:
            info.size = entry.size
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        yield header
        written += len(header)
        if entry.kind == "file":
            sent = 0
            for chunk in _read(entry, entry.size):
                sent += len(chunk)
                yield chunk
            padding = (entry.size - sent) + (-entry.size % _BLOCK)
            yield bytes(padding)
            written += entry.size + -entry.size % _BLOCK
    end = 2 * _BLOCK
    yield bytes(end + (-(written + end) % _RECORD))


def _gzip(raw: Iterator[bytes]) -> Generator[bytes, None, None]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pending = bytearray()
    for data in raw:
        pending += compressor.compress(data)
        if len(pending) >= CHUNK:
            yield bytes(pending)
            pending.clear()
    pending += compressor.flush()
    yield bytes(pending)


# ---- zip ----
class _Sink:
    """An unseekable stream that keeps what was written until it is taken (no `tell`, so
    zipfile streams with data descriptors)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


def _zip_info(entry: Entry, name: str) -> zipfile.ZipInfo:
    when = time.localtime(max(entry.mtime, 315532800))[:6]  # zip dates start in 1980
    info = zipfile.ZipInfo(name, date_time=when)
    kind = {"dir": stat.S_IFDIR, "link": stat.S_IFLNK, "file": stat.S_IFREG}[entry.kind]
    info.create_system = 3  # unix: the mode below is read from the high bits
    info.external_attr = ((kind | _file_mode(entry)) << 16) | (0x10 if entry.kind == "dir" else 0)
    info.compress_type = zipfile.ZIP_DEFLATED if entry.kind == "file" else zipfile.ZIP_STORED
    return info


def _zip(root: str) -> Generator[bytes, None, None]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as zf:
        for entry in _members(root):
            try:
                entry.path.encode("utf-8")
            except UnicodeEncodeError:
                continue
            if entry.kind == "dir":
                zf.writestr(_zip_info(entry, entry.path + "/"), b"")
            elif entry.kind == "link":
                zf.writestr(_zip_info(entry, entry.path), (entry.target or "").encode())
            else:
                info = _zip_info(entry, entry.path)
                info.file_size = entry.size
                with zf.open(info, "w", force_zip64=entry.size >= zipfile.ZIP64_LIMIT) as out:
                    for chunk in _read(entry, entry.size):
                        out.write(chunk)
                        if len(sink.data) >= CHUNK:
                            yield sink.take()
            if len(sink.data) >= CHUNK:
                yield sink.take()
    yield sink.take()
