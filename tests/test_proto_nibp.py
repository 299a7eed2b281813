"""nibp-un300: command encoder, reply parser, and the polling state machine on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocols.nibp_un300 import (
    Measured,
    MeasureFailed,
    MeasureTimedOut,
    NibpParser,
    NibpPoller,
    encode_command,
    encode_reply,
)
from tests.fake_serial import pieces

START, MANUAL, STATUS = encode_command("01;;"), encode_command("03;;"), encode_command("18;;")
EXAMPLE = b"\x02S0;A0;C00;M00;P128082097;R074;T6890;;"


def test_documented_command_frames():
    assert START == b"\x0201;;D7\x03"
    assert MANUAL == b"\x0203;;D9\x03"
    assert STATUS == b"\x0218;;DF\x03"


def test_profile_example_reply_with_its_checksum():
    body = EXAMPLE[1:]
    frame = EXAMPLE + b"%02X" % (sum(body) % 256) + b"\x03\r"
    replies, refusals = NibpParser("bp").feed(frame)
    assert refusals == []
    r = replies[0]
    assert (r.status, r.error, r.sbp, r.dbp, r.map, r.pulse) == (0, "00", 128, 82, 97, 74)


def test_bad_checksum_refused():
    replies, refusals = NibpParser("bp").feed(EXAMPLE + b"00\x03\r")
    assert replies == [] and [r.reason for r in refusals] == ["bad_checksum"]


@pytest.mark.parametrize("p,values", [
    (b"P999999999", (None, None, None)), (b"P---------", (None, None, None)),
    (b"P120999090", (120, None, 90)),
])
def test_no_value_groups(p, values):
    body = b"S0;A0;C00;M00;" + p + b";R999;T1;;"
    frame = b"\x02" + body + b"%02X" % (sum(body) % 256) + b"\x03\r"
    (r,), _ = NibpParser("bp").feed(frame)
    assert (r.sbp, r.dbp, r.map, r.pulse) == (*values, None)


def test_garbage_partial_frames_and_resync():
    good = encode_reply(0, "00", 120, 80, 93, 70)
    stream = b"\x00junk" + good[:12] + good + b"\r\r" + b"zz" + good
    replies, refusals = NibpParser("bp").feed(stream)
    assert len(replies) == 2
    assert [r.reason for r in refusals] == ["garbage", "partial_frame", "garbage"]


def test_malformed_payload_refused():
    body = b"X;Y;;"
    replies, refusals = NibpParser("bp").feed(b"\x02" + body + b"%02X" % (sum(body) % 256) + b"\x03")
    assert replies == [] and refusals[0].reason == "bad_frame"


STREAM = b"".join(encode_reply(i % 2, "00", 100 + i, 60 + i, 80 + i, 70) for i in range(8))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data):
    NibpParser("bp").feed(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=20), st.integers(0, len(STREAM) - 1),
       st.integers(0, 40))
def test_random_cuts_keep_every_intact_frame(cuts, at, length):
    damaged = STREAM[:at] + STREAM[at + length:]
    parser = NibpParser("bp")
    got = []
    for piece in pieces(damaged, cuts):
        got += [r.sbp for r in parser.feed(piece)[0]]
    frame_len = len(STREAM) // 8
    for i in range(8):
        start, end = i * frame_len, (i + 1) * frame_len
        if length == 0 or end <= at or start >= at + length:
            assert 100 + i in got


# --- the poller, on a fake clock ------------------------------------------------------
def reply(status, error="00", bp=(121, 79, 93, 72)):
    (r,), _ = NibpParser("bp").feed(encode_reply(status, error, *bp))
    return r


def started(**kw) -> NibpPoller:
    """A poller connected at 0 s that sent its first START then (a measurement under way)."""
    p = NibpPoller(**kw)
    p.connect(0.0)
    p.tick(0.0)
    return p


def measured_once(cycle_s: float, done_s: float) -> NibpPoller:
    """A `started` poller whose first measurement was seen (S1 at 1 s) and finished at `done_s`."""
    p = started(cycle_s=cycle_s)
    p.on_reply(reply(1), 1.0)
    p.on_reply(reply(0), done_s)
    return p


def test_connect_manual_mode_then_first_measurement_and_polls():
    p = NibpPoller(cycle_s=300)
    assert p.connect(0.0) == [MANUAL]
    send, events = p.tick(0.0)
    assert send == [START] and events == []
    assert p.tick(0.5) == ([], [])
    assert p.tick(1.0) == ([STATUS], [])
    assert p.tick(2.0) == ([STATUS], [])


def test_result_only_after_s1_then_s0():
    p = started(cycle_s=300)
    assert p.on_reply(reply(0, bp=(110, 70, 80, 60)), 0.1) == []  # the old result: not new
    assert p.on_reply(reply(1), 1.0) == []
    (ev,) = p.on_reply(reply(0), 30.0)
    assert isinstance(ev, Measured) and ev.ts_s == 30.0
    assert dict(ev.parsed.values) == {"sbp": 121, "dbp": 79, "map": 93, "hr": 72}
    assert not p.measuring


def test_s0_accepted_after_grace_without_s1():
    p = started()
    assert p.on_reply(reply(0), 4.9) == []
    (ev,) = p.on_reply(reply(0), 5.0)
    assert isinstance(ev, Measured)


def test_m_error_is_a_failed_measurement():
    p = started()
    p.on_reply(reply(1), 1.0)
    (ev,) = p.on_reply(reply(0, error="03", bp=(None,) * 4), 20.0)
    assert isinstance(ev, MeasureFailed) and ev.error == "03"


def test_timeout_after_120_s():
    p = started()
    t = 1.0
    while t < 119.5:
        send, events = p.tick(t)
        assert send == [STATUS] and events == []
        p.on_reply(reply(1), t)
        t += 1.0
    send, events = p.tick(120.0)
    assert isinstance(events[0], MeasureTimedOut) and events[0].started_s == 0.0


def test_idle_polls_every_5_s_and_cycle_restarts():
    p = measured_once(60, 10.0)
    assert p.tick(12.0) == ([], [])
    assert p.tick(15.0) == ([STATUS], [])
    assert p.tick(20.0) == ([STATUS], [])
    send, _ = p.tick(60.0)
    assert send == [START]


def test_measure_now_and_set_cycle():
    p = measured_once(900, 30.0)
    p.request_now()
    assert p.tick(31.0)[0][0] == START
    p.on_reply(reply(1), 32.0)
    p.on_reply(reply(0), 60.0)
    p.set_cycle(300)
    assert START not in p.tick(299.0)[0]
    assert p.tick(331.0)[0][0] == START  # 300 s after the last start (31 s)


def test_reconnect_does_not_reinflate_within_the_cycle():
    p = measured_once(300, 30.0)
    assert p.connect(100.0) == [MANUAL]
    assert START not in p.tick(100.0)[0]
    assert START in p.tick(300.0)[0]


# --- session phase → cycle (devices/drivers.py) -----------------------------------------
from devices.drivers import cycle_for  # noqa: E402
from monitor.model.config import DeviceConfig  # noqa: E402
from monitor.sessions.phase import session_phase  # noqa: E402

NOW = 10_000_000


@pytest.mark.parametrize("session,phase", [
    (None, "idle"),
    ({"state": "ended", "first_dose_ms": str(NOW)}, "idle"),
    ({"state": "open"}, "pre-dose"),
    ({"state": "open", "first_dose_ms": str(NOW - 39 * 60_000)}, "dosing"),
    ({"state": "open", "first_dose_ms": str(NOW - 40 * 60_000)}, "observation"),
    ({"state": "open", "first_dose_ms": "garbage"}, "pre-dose"),
])
def test_session_phase(session, phase):
    assert session_phase(session, NOW).nibp == phase


def test_cycle_for_phase_falls_back_to_cycle_s():
    dev = DeviceConfig(id="bp", protocol="nibp-un300", transport="serial", port="/dev/null", cycle_s=600,
                       cycle_by_phase_s={"dosing": 300})
    assert cycle_for(dev, "dosing") == 300 and cycle_for(dev, "observation") == 600
    plain = DeviceConfig(id="bp", protocol="nibp-un300", transport="serial", port="/dev/null")
    assert cycle_for(plain, "dosing") == 300.0


def test_driver_turns_timeout_and_error_into_status_fields():
    from devices.drivers import NibpDriver

    d = NibpDriver(NibpPoller(cycle_s=300), "bp")
    assert d.open(0.0).send == [MANUAL, START]
    step = d.tick(120.0)
    assert step.status["nibp_timeout_ms"] == 120_000 and "timed out" in (step.detail or "")
    d.poller.request_now()
    d.tick(121.0)
    d.feed(encode_reply(1), 122.0)
    step = d.feed(encode_reply(0, "07"), 130.0)
    (parsed, ts_s), = step.results
    assert parsed.flags == {"measurement_error"} and dict(parsed.values) == {} and ts_s == 130.0
    assert step.status["nibp_error"] == "07" and "nibp_timeout_ms" in step.clear_status
