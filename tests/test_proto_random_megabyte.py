"""1,000,000 random bytes into each serial parser: zero exceptions, valid frames still found."""

from __future__ import annotations

import random

import pytest

from devices.protocols.ansar_b import HEADER, AnsarBParser
from devices.protocols.masimo_ascii import MasimoParser
from devices.protocols.nibp_un300 import NibpParser, encode_reply
from devices.protocols.nonin_df7 import NoninParser, make_packet
from tests.fake_serial import CAPTURE, MASIMO_LINES

MESSAGE = CAPTURE.read_bytes()[252:252 + 562]
CASES = {
    "masimo-ascii": (MasimoParser, b"\r\n" + MASIMO_LINES[1] + b"\r\n"),
    "nonin-df7": (NoninParser, make_packet(72, 98)),
    "nibp-un300": (NibpParser, encode_reply(0, "00", 120, 80, 93, 70)),
    "ansar-b": (AnsarBParser, MESSAGE),
}


@pytest.mark.parametrize("protocol", CASES)
def test_one_million_random_bytes(protocol):
    parser_cls, _ = CASES[protocol]
    rng = random.Random(protocol)
    data = rng.randbytes(1_000_000)
    parser = parser_cls("x")
    i = 0
    while i < len(data):
        k = rng.randint(1, 4096)
        parser.feed(data[i:i + k])  # must not raise
        i += k


@pytest.mark.parametrize("protocol", CASES)
def test_valid_frames_survive_among_random_bytes(protocol):
    parser_cls, frame = CASES[protocol]
    rng = random.Random(protocol + "mix")
    # header-like bytes make the ANSAR-B framer work hardest: sprinkle them into the noise
    noise = lambda: rng.randbytes(rng.randint(0, 300)) + (HEADER if rng.random() < 0.2 else b"")  # noqa: E731
    parts = []
    for _ in range(200):
        parts += [noise(), frame]
    parser = parser_cls("x")
    decoded = 0
    for part in parts + [frame]:
        decoded += sum(1 for r in parser.feed(part)[0] if getattr(r, "storable", True))  # a last clean frame flushes any half-framed noise before it
    # Noise can eat the frame after it only when the noise ends in what looks like an
    # unfinished frame (a header, STX, a SYNC byte…): nearly all 201 must decode.
    assert decoded >= 195
