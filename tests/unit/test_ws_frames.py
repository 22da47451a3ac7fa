"""The edge's prebuilt WebSocket text frames: the header RFC 6455 gives each payload length."""

from __future__ import annotations

import pytest

from agentops.edge.feed import text_frame


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65_535, b"\x81\x7e\xff\xff"),
        (65_536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_has_fin_text_opcode_no_mask_and_the_length(length: int, header: bytes) -> None:
    """FIN + text opcode, no mask bit, and the 7-, 16- or 64-bit length, then the payload."""
    payload = b"x" * length
    assert text_frame(payload) == header + payload
