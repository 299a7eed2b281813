"""ansar-b parser: the real Ivy 450C capture, line rules, the NIBP repeat rule, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocols.ansar_b import HEADER, WAVE_LEN, AnsarBParser, parse_lines
from tests.fake_serial import CAPTURE, pieces

DATA = CAPTURE.read_bytes()
CAPTURE_TEXT = (b"HR=1;80;ECG-II-DIAG;\rRR=1;35;APNEA: 20 SEC;\rETCO2=1;;;\rSPO2=1;100;PR=80 ;\r"
                b"NIBP=4;121;75;92;80;;\rP1=3;111;73;88;;\rP2=3;;;;NO TRANSDUCER;\rT1=1;;;\rT2=1;;;\r")


def message(text: bytes, wave: bytes = bytes(range(256)) + bytes(144)) -> bytes:
    assert len(wave) == WAVE_LEN
    return HEADER + wave + text + b"\xfe"


def test_capture_gives_27_readings_and_the_nibp_once():
    parser = AnsarBParser("ivy")
    parsed, refusals = parser.feed(DATA)
    assert parser.frames == 27
    assert len(parsed) == 27  # one reading per whole message
    assert all({"hr": 80, "rr": 35, "spo2": 100}.items() <= dict(p.values).items() for p in parsed)
    nibp = [p for p in parsed if "sbp" in p.values]
    assert len(nibp) == 1 and nibp[0] is parsed[0]  # rides in the first message's reading
    assert dict(nibp[0].values) == {"hr": 80, "rr": 35, "spo2": 100, "sbp": 121, "dbp": 75, "map": 92}
    assert nibp[0].flags == {"questionable"}
    assert all(not p.flags for p in parsed[1:])
    assert [r.reason for r in refusals] == ["partial_frame"]  # the cut first message


@pytest.mark.parametrize("chunk", [1, 13, 562, 4096])
def test_capture_in_chunks(chunk):
    parser = AnsarBParser("ivy")
    parsed = []
    for i in range(0, len(DATA), chunk):
        parsed += parser.feed(DATA[i:i + chunk])[0]
    assert len(parsed) == 27 and parser.frames == 27


def test_line_table():
    values, flags, refusals = parse_lines(CAPTURE_TEXT)
    assert values == {"hr": 80, "rr": 35, "spo2": 100, "sbp": 121, "dbp": 75, "map": 92}
    assert flags == set() and refusals == []


@pytest.mark.parametrize("text,values,flags", [
    (b"HR=1;;ECG;\rSPO2=1;97;PR=64 ;\r", {"spo2": 97, "hr": 64}, set()),  # PR stands in for HR
    (b"HR=1;70;ECG;\rSPO2=1;97;PR=64 ;\r", {"spo2": 97, "hr": 70}, set()),
    (b"HR=1;130;ECG-II;HR HIGH;\r", {"hr": 130}, {"device_alarm"}),
    (b"RR=1;4;APNEA: 20 SEC;APNEA;\r", {"rr": 4}, {"device_alarm"}),
    (b"T1=1;36.8;;\r", {"temp": 36.8}, set()),
    (b"NIBP=4;180;110;133;90;;NIBP SYS HIGH;\r", {"sbp": 180, "dbp": 110, "map": 133}, {"device_alarm"}),
    (b"HR=1;80\r", {"hr": 80}, set()),  # fewer fields than expected
    (b"HR=\rSPO2\rXYZ=1;2;\r", {}, set()),
])
def test_line_rules(text, values, flags):
    got, got_flags, _ = parse_lines(text)
    assert got == values and got_flags == flags


def test_non_numeric_value_refused():
    values, _, refusals = parse_lines(b"HR=1;abc;ECG;\rSPO2=1;98;PR=80 ;\r")
    assert values == {"spo2": 98, "hr": 80}
    assert [r.reason for r in refusals] == ["bad_value"]


def test_nibp_emitted_again_only_when_it_changes():
    a = message(CAPTURE_TEXT)
    b = message(CAPTURE_TEXT.replace(b"121;75;92", b"140;90;107"))
    parsed, _ = AnsarBParser("ivy").feed(a + a + b + b + a)
    nibp = [(dict(p.values), p.flags) for p in parsed if "sbp" in p.values]
    assert nibp[0] == ({"hr": 80, "rr": 35, "spo2": 100, "sbp": 121, "dbp": 75, "map": 92}, {"questionable"})
    assert nibp[1][0] == {"hr": 80, "rr": 35, "spo2": 100, "sbp": 140, "dbp": 90, "map": 107}
    assert nibp[1][1] == frozenset()  # a new measurement rides in its message's reading
    assert len(nibp) == 3  # back to 121/75/92 is a change too
    assert len(parsed) == 5  # one reading per message


def test_waveform_with_ff_fe_and_a_fake_header():
    wave = (HEADER + b"\xfe\xff" * 100)[:WAVE_LEN].ljust(WAVE_LEN, b"\xfe")
    parsed, refusals = AnsarBParser("ivy").feed(message(CAPTURE_TEXT, wave) * 2)
    assert len([p for p in parsed if "hr" in p.values]) == 2 and refusals == []


def test_broken_message_does_not_hide_the_next():
    good = message(CAPTURE_TEXT)
    cut = good[:300]  # cut inside the waveform: the next header lands in "waveform"
    parsed, refusals = AnsarBParser("ivy").feed(cut + good + good)
    assert len([p for p in parsed if "hr" in p.values]) == 2
    assert refusals and all(r.reason == "partial_frame" for r in refusals)


STREAM = DATA[252:252 + 562 * 5]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_random_bytes_never_raise(data):
    parser = AnsarBParser("ivy")
    parser.feed(data)
    parser.feed(HEADER + data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=20), st.integers(0, len(STREAM) - 1),
       st.integers(0, 600), st.binary(max_size=20))
def test_random_cuts_keep_every_intact_message(cuts, at, length, junk):
    damaged = STREAM[:at] + junk + STREAM[at + length:]
    parser = AnsarBParser("ivy")
    for piece in pieces(damaged, cuts):
        parser.feed(piece)
    intact = sum(1 for i in range(5) if (i + 1) * 562 <= at or i * 562 >= at + length)
    if not junk and length == 0:
        intact = 5
    assert parser.frames >= intact
