"""nonin-df7 parser: packets, sentinels, each flag mapping, resync, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocols.nonin_df7 import (
    ARTF,
    GREEN,
    OOT,
    RED,
    SNSA,
    SNSD,
    NoninParser,
    checksum,
    make_frame,
    make_packet,
)
from tests.fake_serial import pieces


def feed_all(data: bytes):
    parser = NoninParser("oxi")
    parsed, refusals = parser.feed(data)
    return parser, parsed, refusals


def test_packet_decodes_hr_spo2_including_high_hr_bits():
    _, parsed, refusals = feed_all(make_packet(72, 98) + make_packet(200, 91))
    assert [dict(p.values) for p in parsed] == [{"hr": 72, "spo2": 98}, {"hr": 200, "spo2": 91}]
    assert refusals == []


def test_checksum_rule():
    frame = make_frame(0x81, 0x1234, 0x05)
    assert frame[4] == (0x81 + 0x12 + 0x34 + 0x05) % 256 == checksum(frame)


@pytest.mark.parametrize("hr,spo2,values", [
    (511, 98, {"spo2": 98}), (72, 127, {"hr": 72}), (511, 127, {}),
])
def test_sentinels_are_no_value(hr, spo2, values):
    _, parsed, _ = feed_all(make_packet(hr, spo2))
    assert dict(parsed[0].values) == values
    assert parsed[0].storable == bool(values)


@pytest.mark.parametrize("status,stat2,flags", [
    (SNSD, 0, {"sensor_off"}), (OOT, 0, {"pulse_search"}), (ARTF, 0, {"artifact"}),
    (SNSA, 0, {"questionable"}), (RED, 0, {"low_perfusion"}), (GREEN, 0, set()),
    (GREEN | RED, 0, set()), (0, 0x01, {"low_battery"}), (0, 0x20, set()),
])
def test_flag_mapping(status, stat2, flags):
    _, parsed, _ = feed_all(make_packet(72, 98, status=status, stat2=stat2))
    assert parsed[0].flags == flags
    assert dict(parsed[0].values) == ({} if "sensor_off" in flags else {"hr": 72, "spo2": 98})


def test_sensor_off_with_sentinels_is_a_flag_only_reading():
    _, parsed, _ = feed_all(make_packet(511, 127, status=SNSD))
    assert dict(parsed[0].values) == {} and parsed[0].flags == {"sensor_off"}


def test_bad_checksum_drops_packet_and_recovers():
    good = make_packet(72, 98)
    bad = bytearray(make_packet(80, 97))
    bad[4 + 5 * 3] ^= 0xFF  # CHK of frame 4
    parser, parsed, refusals = feed_all(good + bytes(bad) + make_packet(75, 96))
    assert [dict(p.values) for p in parsed] == [{"hr": 72, "spo2": 98}, {"hr": 75, "spo2": 96}]
    assert "bad_checksum" in [r.reason for r in refusals]
    assert parser.bad_checksums == 1


def test_stray_byte_and_ack_nak_recover():
    a, b, c = make_packet(72, 98), make_packet(73, 97), make_packet(74, 96)
    stream = b"\x06" + a[:40] + b"\x15" + a[40:] + b[:52] + b"\x99" + b[52:] + c
    parser, parsed, refusals = feed_all(stream)
    hrs = [p.values["hr"] for p in parsed]
    assert hrs[0] == 72 and hrs[-1] == 74  # a survives ACK/NAK; b is lost to the stray byte; c decodes
    assert parser.control_bytes == 1
    assert {"lost_sync", "resync", "bad_checksum"} & {r.reason for r in refusals}


def test_missing_frames_discard_packet():
    a = make_packet(72, 98)
    parser, parsed, refusals = feed_all(a[:60] + make_packet(74, 96))
    assert [p.values["hr"] for p in parsed] == [74]
    assert "incomplete_packet" in [r.reason for r in refusals]


STREAM = b"".join(make_packet(60 + i, 90 + i) for i in range(6))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(data):
    NoninParser("oxi").feed(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_random_chunking_decodes_every_packet(cuts):
    parser = NoninParser("oxi")
    results = []
    for piece in pieces(STREAM, cuts):
        results += parser.feed(piece)[0]
    assert [p.values["hr"] for p in results] == [60 + i for i in range(6)]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(STREAM) - 1), st.integers(1, 60), st.binary(max_size=8))
def test_random_damage_keeps_every_intact_packet(at, length, junk):
    # Replace a span with junk: every packet the damage did not touch still decodes.
    damaged = STREAM[:at] + junk + STREAM[at + length:]
    results, _ = NoninParser("oxi").feed(damaged)
    got = {p.values["hr"] for p in results if "hr" in p.values}
    packet_len = len(STREAM) // 6
    for i in range(6):
        start, end = i * packet_len, (i + 1) * packet_len
        if end <= at or start >= at + length:
            assert 60 + i in got
