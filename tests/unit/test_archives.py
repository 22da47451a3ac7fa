"""Archives in (safe extraction of uploads) and out (streamed tar.gz and zip of a workspace)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agentops.workspaces.archive_stream import Format, archive_chunks, pump
from agentops.workspaces.archives import (
    DEFAULT_LIMITS,
    ArchiveError,
    ArchiveLimits,
    detect,
    extract,
)


def tar_gz(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def zip_file(path: Path, *entries: tuple[zipfile.ZipInfo | str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def zip_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def refused(archive: Path, dest: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> ArchiveError:
    with pytest.raises(ArchiveError) as info:
        extract(archive, dest, limits)
    assert not dest.exists(), "a refused archive leaves nothing behind"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".extract-")]
    return info.value


Maker = Callable[[Path], Path]
MALICIOUS: dict[str, tuple[Maker, str, str]] = {
    "zip slip": (
        lambda p: zip_file(p / "a.zip", ("ok.txt", b"ok"), ("../evil.txt", b"x")),
        "path_traversal", "../evil.txt",
    ),
    "tar slip": (
        lambda p: tar_gz(p / "a.tgz", (member("a/../../evil"), b"x")),
        "path_traversal", "a/../../evil",
    ),
    "absolute tar": (
        lambda p: tar_gz(p / "a.tgz", (member("/etc/evil"), b"x")),
        "absolute_path", "/etc/evil",
    ),
    "absolute zip": (
        lambda p: zip_file(p / "a.zip", ("/tmp/evil", b"x")),
        "absolute_path", "/tmp/evil",
    ),
    "symlink out": (
        lambda p: tar_gz(p / "a.tgz", (member("etc", tarfile.SYMTYPE, "/etc"), None)),
        "link_outside", "etc",
    ),
    "symlink climbing out": (
        lambda p: tar_gz(p / "a.tgz", (member("d/up", tarfile.SYMTYPE, "../../x"), None)),
        "link_outside", "d/up",
    ),
    "symlink through a link": (
        lambda p: tar_gz(p / "a.tgz", (member("s", tarfile.SYMTYPE, "."), None),
                         (member("x", tarfile.SYMTYPE, "s/.."), None)),
        "link_outside", "x",
    ),
    "file under a link": (
        lambda p: tar_gz(p / "a.tgz", (member("dir"), b""),
                         (member("l", tarfile.SYMTYPE, "dir"), None), (member("l/f"), b"x")),
        "invalid_entry", "l/f",
    ),
    "zip symlink out": (
        lambda p: zip_file(p / "a.zip", (zip_entry("pw", stat.S_IFLNK | 0o777), b"/etc/passwd")),
        "link_outside", "pw",
    ),
    "hard link out": (
        lambda p: tar_gz(p / "a.tgz", (member("h", tarfile.LNKTYPE, "/etc/passwd"), None)),
        "link_outside", "h",
    ),
    "character device": (
        lambda p: tar_gz(p / "a.tgz", (member("null", tarfile.CHRTYPE), None)),
        "special_file", "null",
    ),
    "fifo": (
        lambda p: tar_gz(p / "a.tgz", (member("pipe", tarfile.FIFOTYPE), None)),
        "special_file", "pipe",
    ),
    "zip device": (
        lambda p: zip_file(p / "a.zip", (zip_entry("dev", stat.S_IFBLK | 0o600), b"")),
        "special_file", "dev",
    ),
    "zip bomb": (
        lambda p: zip_file(p / "a.zip", ("small.txt", b"hi"), ("bomb.bin", bytes(20_000_000))),
        "compression_ratio", "bomb.bin",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_entries_are_refused_naming_the_entry(case: str, tmp_path: Path) -> None:
    """Each hostile entry is refused with its code, its name in the message and details."""
    make, code, entry = MALICIOUS[case]
    exc = refused(make(tmp_path), tmp_path / "out")
    assert exc.code == code
    assert repr(entry) in exc.message
    assert exc.details == {"entry": entry}


def test_limits_on_entries_and_total_size(tmp_path: Path) -> None:
    """Too many entries, or more bytes than the limit, are refused."""
    many = tar_gz(tmp_path / "m.tgz", *((member(f"f{i}"), b"x") for i in range(6)))
    assert refused(many, tmp_path / "o", ArchiveLimits(max_entries=5)).code == "too_many_entries"
    big = zip_file(tmp_path / "b.zip", ("a", os.urandom(3000)), ("b", os.urandom(3000)))
    exc = refused(big, tmp_path / "o", ArchiveLimits(max_total_bytes=5000))
    assert (exc.code, exc.details) == ("too_large", {"entry": "b"})


def test_format_comes_from_the_magic_bytes_not_the_name(tmp_path: Path) -> None:
    """A tar.gz named .zip extracts as tar.gz; a text file named .zip is not an archive."""
    disguised = tar_gz(tmp_path / "really-a-tar.zip", (member("a.txt"), b"a"))
    extract(disguised, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"a"
    text = tmp_path / "fake.zip"
    text.write_text("hello")
    assert refused(text, tmp_path / "o2").code == "not_an_archive"
    assert detect(b"PK\x03\x04rest") == "zip" and detect(b"\x1f\x8b\x08") == "tar.gz"
    damaged = tmp_path / "damaged.tgz"
    damaged.write_bytes(disguised.read_bytes()[:30])
    assert refused(damaged, tmp_path / "o3").code == "corrupt_archive"


def test_destination_with_files_is_refused(tmp_path: Path) -> None:
    """Extraction never mixes into a directory that has files."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine").write_text("keep")
    archive = tar_gz(tmp_path / "a.tgz", (member("a.txt"), b"a"))
    with pytest.raises(ArchiveError) as info:
        extract(archive, tmp_path / "out")
    assert info.value.code == "destination_exists"
    assert (tmp_path / "out" / "mine").read_text() == "keep"


def test_inside_links_git_entries_and_modes(tmp_path: Path) -> None:
    """Links inside are kept, hard links become copies, .git is skipped, setuid is dropped."""
    exe = member("bin/run")
    exe.mode = 0o4755
    archive = tar_gz(
        tmp_path / "a.tgz",
        (member("lib/real.py"), b"code"),
        (member("lib/alias.py", tarfile.SYMTYPE, "real.py"), None),
        (member("copy.py", tarfile.LNKTYPE, "lib/real.py"), None),
        (exe, b"#!/bin/sh\n"),
        (member(".git/config"), b"[core]\n"),
        (member("sub/.GIT/hooks/x"), b"x"),
    )
    done = extract(archive, tmp_path / "out")
    out = tmp_path / "out"
    assert os.readlink(out / "lib" / "alias.py") == "real.py"
    assert (out / "copy.py").read_bytes() == b"code" and (out / "copy.py").stat().st_nlink == 1
    assert stat.S_IMODE((out / "bin" / "run").stat().st_mode) == 0o755
    assert not (out / ".git").exists() and not (out / "sub" / ".GIT").exists()
    assert (done.files, done.links, sorted(done.skipped)) == (
        3, 1, [".git/config", "sub/.GIT/hooks/x"]
    )  # fmt: skip


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src" / "pkg").mkdir(parents=True)
    (ws / "empty").mkdir()
    (ws / "README.md").write_text("# hi\n")
    (ws / "src" / "pkg" / "data.bin").write_bytes(os.urandom(300_000))
    (ws / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (ws / "run.sh").chmod(0o755)
    (ws / "docs").symlink_to("src/pkg")
    (ws / "passwd").symlink_to("/etc/passwd")  # a link out: left out of archives
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("[core]\n")
    os.link(ws / "README.md", ws / "hardlinked.md")  # may be a link to a file outside
    os.mkfifo(ws / "fifo")
    return ws


def snapshot(root: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_fifo():
            found[rel] = "fifo"
        else:
            found[rel] = (path.read_bytes(), path.stat().st_mode & 0o111 != 0)
    return found


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_archive_round_trips_without_git_links_out_or_specials(fmt: Format, tmp_path: Path) -> None:
    """extract(archive(ws)) holds exactly the workspace's files, dirs and inside links."""
    ws = workspace(tmp_path)
    chunks = list(archive_chunks(str(ws), fmt))
    assert len(chunks) > 1 and max(map(len, chunks)) < 512 * 1024  # streamed, not one blob
    archive = tmp_path / "a.bin"
    archive.write_bytes(b"".join(chunks))
    extract(archive, tmp_path / "out")
    # Left out: .git, the link out, the FIFO, and both names of the hard-linked file.
    left_out = (".git", "passwd", "fifo", "hardlinked.md", "README.md")
    expected = {k: v for k, v in snapshot(ws).items() if not k.startswith(left_out)}
    assert snapshot(tmp_path / "out") == expected


async def test_pump_feeds_an_async_writer(tmp_path: Path) -> None:
    """pump drives the chunk iterator in a thread and awaits the writer per chunk."""
    ws = workspace(tmp_path)
    received = bytearray()

    async def write(chunk: bytes) -> None:
        received.extend(chunk)

    total = await pump(archive_chunks(str(ws), "zip"), write)
    assert total == len(received)
    assert "src/pkg/data.bin" in zipfile.ZipFile(io.BytesIO(bytes(received))).namelist()
