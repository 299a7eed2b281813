"""masimo-ascii parser: every public example line, each flag mapping, resync, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocols.masimo_ascii import MasimoParser, parse_line
from tests.fake_serial import MASIMO_LINES, pieces

EX1, EX2, EX3 = MASIMO_LINES


def one(line: bytes):
    parsed, refusals = parse_line(line, "oxi")
    assert len(parsed) == 1
    return parsed[0], refusals


def test_public_example_1_sensor_off_drops_values():
    # EXC 0x820 = Masimo SET (no flag) + 0x20 sensor off: the values on the line are not trusted
    p, refusals = one(EX1)
    assert dict(p.values) == {} and p.flags == {"sensor_off"}
    assert p.info["serial"] == "0123456789" and p.device_clock == "12/01/05 11:56:29"
    assert refusals == []


def test_public_example_2_values_and_normal_bits():
    p, refusals = one(EX2)
    assert dict(p.values) == {"spo2": 97, "hr": 64, "pi": 11.82}
    assert p.flags == frozenset()  # ALARM 0x20 (silenced) and EXC 0x800 raise no flag
    assert refusals == []


def test_public_example_3_all_dashes_stores_nothing():
    p, refusals = one(EX3)
    assert not p.storable and refusals == []


@pytest.mark.parametrize("exc,flag", [
    ("000001", "no_sensor"), ("000002", "no_sensor"), ("000004", "low_perfusion"),
    ("000008", "pulse_search"), ("000010", "interference"), ("000020", "sensor_off"),
    ("000040", "interference"), ("000080", "no_sensor"), ("000100", "no_sensor"),
    ("000400", "low_signal_iq"), ("001000", "no_sensor"), ("002000", "no_sensor"),
    ("020000", "questionable"),
])
def test_exc_flag_mapping(exc, flag):
    p, _ = one(b"09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=0000 EXC=" + exc.encode())
    assert p.flags == {flag}
    if flag in ("no_sensor", "sensor_off"):
        assert dict(p.values) == {}
    else:
        assert dict(p.values) == {"spo2": 97, "hr": 64, "pi": 11.82}


@pytest.mark.parametrize("alarm,flags", [
    ("0001", set()), ("0002", set()), ("0004", set()), ("0008", set()), ("0010", {"device_alarm"}),
    ("0020", set()), ("0040", {"low_battery"}), ("50", {"device_alarm", "low_battery"}),
])
def test_alarm_flag_mapping(alarm, flags):
    p, _ = one(b"09/15/10 15:10:29 SPO2=097% BPM=064 ALARM=" + alarm.encode() + b" EXC=800")
    assert p.flags == flags


def test_tags_in_any_order_unknown_tags_and_pi_without_percent():
    p, _ = one(b"01/02/24 10:00:00 FOO=1 PI=02.30 EXC1=0 BPM=072 SPO2=098%")
    assert dict(p.values) == {"pi": 2.3, "hr": 72, "spo2": 98}


def test_out_of_range_value_refused_others_kept():
    p, refusals = one(b"01/02/24 10:00:00 SPO2=045% BPM=072 EXC=000")
    assert dict(p.values) == {"hr": 72}
    assert [r.reason for r in refusals] == ["out_of_range"]


def test_non_numeric_value_refused():
    p, refusals = one(b"01/02/24 10:00:00 SPO2=9x% BPM=072 EXC=zz")
    assert dict(p.values) == {"hr": 72}
    assert sorted(r.reason for r in refusals) == ["bad_value", "bad_value"]


def test_cut_first_line_noise_and_glued_garbage_resync():
    parser = MasimoParser("oxi")
    stream = (b"29 SPO2=098% BPM=072\r\n" + b"\x00\xff\x13noise\r\n" + b"\x8f\x01" + EX2 + b"\r\n"
              + b"12/01/05 11:5" + EX2 + b"\r\n" + EX2 + b"\r\n")
    parsed, refusals = parser.feed(stream)
    assert [dict(p.values) for p in parsed] == [{"spo2": 97, "hr": 64, "pi": 11.82}] * 3
    assert [r.reason for r in refusals] == ["bad_line", "bad_line", "garbage", "garbage"]
    assert parser.frames == 3


def test_overlong_line_refused_then_recovers():
    parser = MasimoParser("oxi")
    parsed, refusals = parser.feed(b"x" * 3000)
    assert [r.reason for r in refusals] == ["line_too_long"]
    parsed, refusals = parser.feed(b"\r\n" + EX2 + b"\r\n")
    assert len(parsed) == 1


STREAM = b"".join(line + b"\r\n" for line in MASIMO_LINES * 3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(data):
    parser = MasimoParser("oxi")
    parser.feed(data)
    parser.feed(data[::-1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_random_chunking_decodes_every_line(cuts):
    parser = MasimoParser("oxi")
    results = []
    for piece in pieces(STREAM, cuts):
        results += parser.feed(piece)[0]
    assert [p.device_clock for p in results] == [line[:17].decode() for line in MASIMO_LINES * 3]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(STREAM) - 1), st.integers(1, 200))
def test_random_deletion_keeps_every_intact_line(at, length):
    # Remove a random span: every line not touched by it (its bytes and the LF before it)
    # is still decoded with the same values.
    damaged = STREAM[:at] + STREAM[at + length:]
    parser = MasimoParser("oxi")
    results, _ = parser.feed(damaged)
    got = [(p.device_clock, dict(p.values), p.flags) for p in results]
    offset = 0
    for line in [line_ + b"\r\n" for line_ in MASIMO_LINES * 3]:
        start, end = offset, offset + len(line)
        offset = end
        untouched = end <= at or start - 1 >= at + length
        if untouched and (start == 0 or start - 1 < at or start - 1 >= at + length):
            expect = one(line[:-2])[0]
            assert (expect.device_clock, dict(expect.values), expect.flags) in got
