"""Extracting an uploaded archive (`.tar.gz` / `.tgz` / `.zip`) safely into a new directory.

Rules:
- The format comes from the magic bytes (gzip `1f 8b`, zip `PK\\3\\4` or `PK\\5\\6`), never the
  name; anything else is `not_an_archive`.
- Extraction goes to a private staging directory beside the destination and is renamed into
  place only when every entry passed: a refused archive leaves nothing behind. The destination
  must be missing or an empty directory (`destination_exists`).
- Each refusal is an `ArchiveError(code, message)` that names the entry (also in `details`):
  `absolute_path`, `path_traversal` (a `..` component), `invalid_entry` (control characters,
  a name that clashes with an earlier entry, a path through a link), `link_outside` (a
  symlink whose target is absolute or climbs out, `tree.link_stays_inside`; a hard link to
  anything but a regular file extracted before it), `special_file` (device, FIFO, socket),
  `encrypted_entry`, `too_many_entries`, `too_large` (uncompressed total), `compression_ratio`
  (a zip entry over 1 MiB that inflates more than `max_ratio` times: a zip bomb),
  `corrupt_archive`.
- Sizes are enforced on what is really read, not only on what headers declare: a tar.gz is
  decompressed through a counter capped at the limit, and a zip entry is read at most to its
  declared size (zipfile checks the CRC at the end).
- Hard links are extracted as copies (a file with other links is refused by the file tools).
  Entries under a `.git` directory are skipped (a workspace never holds one). Files keep
  their modification time and executable bit; no other mode bit (setuid, sticky) survives.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol

from agentops.protocol.errors import PermanentError
from agentops.workspaces.tree import has_git_component, link_stays_inside

Format = Literal["tar.gz", "zip"]
_CHUNK = 64 * 1024
_RATIO_FLOOR = 1024 * 1024  # a small file may compress very well; only larger ones count
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveError(PermanentError):
    """An archive refused; the message (and `details["entry"]`) names the entry."""

    code = "archive_error"

    def __init__(self, code: str, message: str, entry: str | None = None) -> None:
        super().__init__(message, code=code, details={"entry": entry} if entry else None)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_entries: int = 20_000
    max_total_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 100.0


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(slots=True)
class Extracted:
    """What an extraction made: regular files, links, bytes written, entries skipped."""

    files: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def detect(head: bytes) -> Format | None:
    """The archive format the first bytes of a file announce, or None."""
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    return None


def extract(archive: Path, dest: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> Extracted:
    """Extract `archive` into `dest` (made by this call) under `limits`, or raise
    `ArchiveError` and leave nothing."""
    with open(archive, "rb") as fh:
        fmt = detect(fh.read(4))
    if fmt is None:
        raise ArchiveError("not_an_archive", "the upload is not a .tar.gz or .zip archive")
    if dest.exists() and (not dest.is_dir() or any(os.scandir(dest))):
        raise ArchiveError("destination_exists", f"{dest.name!r} already has files")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        writer = _Writer(stage, limits)
        try:
            if fmt == "zip":
                _extract_zip(archive, writer)
            else:
                _extract_tar(archive, writer)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile) as exc:
            raise ArchiveError("corrupt_archive", f"the archive is damaged: {exc}") from None
        except OSError as exc:
            raise ArchiveError("corrupt_archive", f"cannot read the archive: {exc}") from None
        stage.chmod(0o755)
        os.rename(stage, dest)  # replaces an empty directory atomically
        return writer.done
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ---- checks shared by both formats ----
def _entry_path(name: str) -> str:
    """The checked relative path of an entry named `name` ("" for the root itself)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ArchiveError("invalid_entry", f"entry {name!r} has control characters", name)
    text = name.replace("\\", "/")
    if text.startswith("/"):
        raise ArchiveError("absolute_path", f"entry {name!r} is an absolute path", name)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(
            "path_traversal", f"entry {name!r} leaves the archive's directory ('..')", name
        )
    return "/".join(parts)


class _Writer:
    """Creates the checked entries inside the staging directory and keeps the counts."""

    def __init__(self, root: Path, limits: ArchiveLimits) -> None:
        self.root = root
        self.limits = limits
        self.done = Extracted()
        self.entries = 0
        self.files: set[str] = set()
        self.links: set[str] = set()

    def admit(self, name: str, declared: int = 0) -> str | None:
        """The entry's path if it is to be made, None if skipped; counts it and its size."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(
                "too_many_entries",
                f"the archive has more than {self.limits.max_entries} entries (at {name!r})",
                name,
            )
        path = _entry_path(name)
        if has_git_component(path):
            self.done.skipped.append(path)
            return None
        self._count(name, declared)
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.links | self.files:
                raise ArchiveError(
                    "invalid_entry", f"entry {name!r} lies below a link or a file", name
                )
        return path

    def _count(self, name: str, size: int) -> None:
        if self.done.bytes + size > self.limits.max_total_bytes:
            raise ArchiveError(
                "too_large",
                f"the archive unpacks to more than {self.limits.max_total_bytes} bytes "
                f"(at {name!r})",
                name,
            )

    def directory(self, path: str, name: str) -> None:
        if path:
            self._parent(self.root / path, name, make_self=True)

    def file(self, path: str, name: str, src: IO[bytes], mode: int, mtime: float) -> None:
        if not path:
            raise ArchiveError("invalid_entry", f"entry {name!r} has no file name", name)
        target = self.root / path
        self._parent(target.parent, name)
        try:
            fd = os.open(target, _WRITE_FLAGS, 0o755 if mode & 0o111 else 0o644)
        except OSError:
            raise ArchiveError(
                "invalid_entry", f"entry {name!r} clashes with an earlier entry", name
            ) from None
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self._count(name, len(chunk))
                self.done.bytes += len(chunk)
                out.write(chunk)
        os.utime(target, (mtime, mtime))
        self.files.add(path)
        self.done.files += 1

    def symlink(self, path: str, name: str, link_target: str) -> None:
        if not path or not link_stays_inside(path, link_target):
            raise ArchiveError(
                "link_outside",
                f"entry {name!r} is a symlink to {link_target!r}, outside the archive",
                name,
            )
        target = self.root / path
        self._parent(target.parent, name)
        try:
            os.symlink(link_target, target)
        except OSError:
            raise ArchiveError(
                "invalid_entry", f"entry {name!r} clashes with an earlier entry", name
            ) from None
        self.links.add(path)
        self.done.links += 1

    def hardlink(self, path: str, name: str, link_name: str, mtime: float) -> None:
        try:
            source = _entry_path(link_name)
        except ArchiveError:
            source = ""
        if source not in self.files:
            raise ArchiveError(
                "link_outside",
                f"entry {name!r} is a hard link to {link_name!r}, not a file of the archive",
                name,
            )
        with open(self.root / source, "rb") as src:
            mode = os.fstat(src.fileno()).st_mode
            self.file(path, name, src, mode, mtime)

    def _parent(self, directory: Path, name: str, make_self: bool = False) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise ArchiveError(
                "invalid_entry", f"entry {name!r} clashes with an earlier entry", name
            ) from None
        if make_self and not directory.is_dir():
            raise ArchiveError(
                "invalid_entry", f"entry {name!r} clashes with an earlier entry", name
            )


# ---- tar.gz ----
class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Capped:
    """A read-only stream that fails once more than `cap` bytes came out of it."""

    def __init__(self, inner: _Readable, cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.seen = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.seen += len(data)
        if self.seen > self.cap:
            raise ArchiveError("too_large", f"the archive unpacks to more than {self.cap} bytes")
        return data


def _extract_tar(archive: Path, writer: _Writer) -> None:
    limits = writer.limits
    # Headers and padding: at most ~1.5 KiB per entry beyond the data itself.
    cap = limits.max_total_bytes + 2048 * limits.max_entries + 1024 * 1024
    with gzip.open(archive, "rb") as unzipped:
        stream = _Capped(unzipped, cap)
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in _members(tar):
                _tar_member(tar, member, writer)


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, writer: _Writer) -> None:
    name = member.name
    if (
        member.ischr()
        or member.isblk()
        or member.isfifo()
        or not (member.isreg() or member.isdir() or member.issym() or member.islnk())
    ):
        raise ArchiveError(
            "special_file", f"entry {name!r} is a device, FIFO or other special file", name
        )
    path = writer.admit(name, member.size if member.isreg() else 0)
    if path is None:
        return
    if member.isdir():
        writer.directory(path, name)
    elif member.issym():
        writer.symlink(path, name, member.linkname)
    elif member.islnk():
        writer.hardlink(path, name, member.linkname, member.mtime)
    else:
        src = tar.extractfile(member)
        assert src is not None
        with contextlib.closing(src):
            writer.file(path, name, src, member.mode, member.mtime)


# ---- zip ----
def _extract_zip(archive: Path, writer: _Writer) -> None:
    limits = writer.limits
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            mode = (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0
            kind = stat.S_IFMT(mode)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                raise ArchiveError(
                    "special_file", f"entry {name!r} is a device, FIFO or socket", name
                )
            if info.flag_bits & 0x1:
                raise ArchiveError("encrypted_entry", f"entry {name!r} is encrypted", name)
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR and ratio > limits.max_ratio:
                raise ArchiveError(
                    "compression_ratio",
                    f"entry {name!r} inflates {ratio:.0f} times ({info.compress_size} to "
                    f"{info.file_size} bytes), over the limit of {limits.max_ratio:g}: "
                    "a zip bomb is refused",
                    name,
                )
            path = writer.admit(name, info.file_size)
            if path is None:
                continue
            mtime = _zip_mtime(info)
            if info.is_dir() or kind == stat.S_IFDIR:
                writer.directory(path, name)
            elif kind == stat.S_IFLNK:
                with zf.open(info) as src:
                    target = src.read(4097).decode("utf-8", errors="replace")
                writer.symlink(path, name, target)
            else:
                with zf.open(info) as src:
                    writer.file(path, name, src, mode, mtime)


def _zip_mtime(info: zipfile.ZipInfo) -> float:
    try:
        return datetime.datetime(*info.date_time).timestamp()
    except (ValueError, OverflowError):
        return 0.0
