"""Standard streams whose reader may be gone: `agentops up | tee log` after Ctrl-C killed
`tee`, `agentops tasks | head -1`.

Rules:
- A write or flush that fails (EPIPE, EIO of a hung-up terminal, a closed file) never raises
  to the caller: the stream is marked broken and its descriptor is pointed at /dev/null, so
  every later writer of that descriptor (structlog, print, the interpreter's flush at exit)
  succeeds without output instead of failing again.
- Only the process's own descriptor is redirected: children that inherited the pipe keep
  their own copy.
- Python ignores SIGPIPE, so a closed reader shows up as BrokenPipeError, never as a signal
  that kills the process mid-shutdown; nothing here changes that.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TextIO

# A write to a stream that cannot take it: OSError (EPIPE, EIO, ENOSPC) or ValueError
# (the file object was closed).
WRITE_ERRORS = (OSError, ValueError)


def silence(stream: TextIO) -> None:
    """Point `stream`'s descriptor at /dev/null (no-op for a stream without one)."""
    try:
        fd = stream.fileno()
    except WRITE_ERRORS:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class TolerantStream(io.TextIOBase):
    """A text stream over another that swallows write failures (see the module's rules)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.inner = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.inner.write(text)
            except WRITE_ERRORS:
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.inner.flush()
            except WRITE_ERRORS:
                self._break()

    def _break(self) -> None:
        self.broken = True
        silence(self.inner)
        # What is still buffered was meant for the gone reader; /dev/null takes it now.
        with contextlib.suppress(*WRITE_ERRORS):
            self.inner.flush()

    def isatty(self) -> bool:
        with contextlib.suppress(*WRITE_ERRORS):
            return not self.broken and self.inner.isatty()
        return False

    def fileno(self) -> int:
        return self.inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.inner.encoding


def guard_std_streams() -> None:
    """Make `sys.stdout` and `sys.stderr` tolerant; call it before loggers capture them."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, TolerantStream):
            setattr(sys, name, TolerantStream(stream))


def write_line(stream: TextIO | io.TextIOBase, text: str) -> None:
    """print() that never raises for a stream whose reader is gone."""
    with contextlib.suppress(*WRITE_ERRORS):
        print(text, file=stream, flush=True)
