"""Standard streams whose reader is gone: writes are dropped, never raised."""

from __future__ import annotations

import io
import os

from agentops.streams import TolerantStream, write_line


def test_a_write_to_a_pipe_without_reader_is_dropped_and_the_descriptor_goes_to_devnull() -> None:
    """EPIPE marks the stream broken and points its descriptor at /dev/null."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    inner = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        stream = TolerantStream(inner)
        assert stream.write("line\n") == 5
        stream.flush()
        assert stream.broken
        assert os.path.samestat(os.fstat(write_fd), os.stat(os.devnull))
        stream.write("more\n")  # no error, no output
        stream.flush()
        assert not stream.isatty()
    finally:
        inner.close()


def test_a_closed_file_is_dropped_too() -> None:
    """A stream closed under the writer (ValueError) is swallowed like a broken pipe."""
    inner = io.StringIO()
    inner.close()
    stream = TolerantStream(inner)
    stream.write("x")
    stream.flush()
    write_line(inner, "x")
    assert stream.broken


def test_a_healthy_stream_passes_writes_through() -> None:
    """Writes reach the stream underneath while it works."""
    inner = io.StringIO()
    stream = TolerantStream(inner)
    write_line(stream, "hello")
    assert inner.getvalue() == "hello\n"
    assert not stream.broken
