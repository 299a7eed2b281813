"""Table tests of the pure MQTT payload codecs (json, senml)."""

from __future__ import annotations

import json

import pytest

from devices.protocols import json_payload, senml
from devices.protocols.payload_checks import MAX_PAYLOAD_BYTES

RECV = 1_795_813_260_000  # receive time used throughout (ms)
T0 = 1_795_813_200_123  # a plausible device time one minute before


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def dec_json(payload: bytes):
    return json_payload.decode(payload, RECV, "room-1", "mon-1", "vw/room-1/mon-1")


def dec_senml(payload: bytes):
    return senml.decode(payload, RECV, "room-1", "nibp-1", "vw/room-1/nibp-1")


# --- json: accepted --------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload, ts_ms, values, flags",
    [
        (j({"ts": T0, "hr": 72, "spo2": 98}), T0, {"hr": 72, "spo2": 98}, set()),
        (j({"ts": T0, "hr": 72.5, "rr": 0, "temp": 36.6, "pi": 1.2}), T0,
         {"hr": 72.5, "rr": 0, "temp": 36.6, "pi": 1.2}, set()),
        (j({"ts": "2026-11-27T10:00:00.123+00:00", "sbp": 121, "dbp": 79, "map": 93}),
         1795773600123, {"sbp": 121, "dbp": 79, "map": 93}, set()),
        (j({"ts": "2026-11-27T03:00:00.123-07:00", "sbp": 121}), 1795773600123, {"sbp": 121}, set()),
        (j({"ts": "2026-11-27T10:00:00.123Z", "sbp": 121}), 1795773600123, {"sbp": 121}, set()),
        (j({"hr": 60}), RECV, {"hr": 60}, set()),  # no ts: receive time
        (j({"ts": T0, "hr": 80, "flags": ["low_perfusion", "artifact"]}), T0, {"hr": 80},
         {"low_perfusion", "artifact"}),
        (j({"ts": T0, "spo2": 97, "flags": ["sensor_off"]}), T0, {}, {"sensor_off"}),  # values dropped
        (j({"ts": T0 + 10 * 60_000, "hr": 70}), RECV, {"hr": 70}, {"clock_skew"}),  # ahead > 5 min
        (j({"ts": RECV - 25 * 3600_000, "hr": 70}), RECV, {"hr": 70}, {"clock_skew"}),  # behind > 24 h
        (j({"ts": 1795813200, "hr": 70}), RECV, {"hr": 70}, {"clock_skew"}),  # seconds by mistake
        (j({"ts": T0 + 0.6, "hr": 70}), T0 + 1, {"hr": 70}, set()),  # fractional ms rounds
    ],
)
def test_json_accepted(payload, ts_ms, values, flags):
    readings, refusals = dec_json(payload)
    assert refusals == []
    assert len(readings) == 1
    r = readings[0]
    assert (r.room, r.device, r.ts_ms) == ("room-1", "mon-1", ts_ms)
    assert dict(r.values) == values
    assert set(r.flags) == flags


# --- json: refused (whole message, or one value while the rest is kept) ------------------
@pytest.mark.parametrize(
    "payload, reasons, kept",
    [
        (b"x" * (MAX_PAYLOAD_BYTES + 1), ["too_large"], None),
        (b'{"hr": 72, "note": "\xff\xfe"}', ["bad_utf8"], None),
        (b'{"hr": 72', ["invalid_json"], None),
        (b"", ["invalid_json"], None),
        (b'{"hr": NaN}', ["invalid_json"], None),
        (b'{"hr": Infinity}', ["invalid_json"], None),
        (j([{"hr": 72}]), ["bad_shape"], None),
        (j(72), ["bad_shape"], None),
        (b'{"hr": 72, "hr": 73}', ["bad_shape"], None),
        (j({"ts": T0}), ["bad_shape"], None),  # nothing to store
        (j({"ts": T0, "hr": 72, "flags": "sensor_off"}), ["bad_shape"], None),
        (j({"ts": T0, "hr": 72, "flags": [1]}), ["bad_shape"], None),
        (j({"ts": "2026-11-27T10:00:00", "hr": 72}), ["bad_ts"], None),  # no offset
        (j({"ts": "yesterday", "hr": 72}), ["bad_ts"], None),
        (j({"ts": True, "hr": 72}), ["bad_ts"], None),
        (j({"ts": -5, "hr": 72}), ["bad_ts"], None),
        (j({"ts": [T0], "hr": 72}), ["bad_ts"], None),
        (j({"ts": T0, "hr": 72, "glucose": 5}), ["unknown_metric"], {"hr": 72}),
        (j({"ts": T0, "hr": 400, "spo2": 97}), ["out_of_range"], {"spo2": 97}),
        (j({"ts": T0, "spo2": 49.9, "sbp": 301}), ["out_of_range", "out_of_range"], None),
        (j({"ts": T0, "hr": "72"}), ["bad_value"], None),
        (j({"ts": T0, "hr": True, "rr": 12}), ["bad_value"], {"rr": 12}),
        (j({"ts": T0, "hr": 72, "flags": ["sensor_off", "on_fire"]}), ["unknown_flag"], {}),
        (j({"ts": T0 + 3600_000, "hr": 400}), ["out_of_range"], None),  # skew flag alone: no reading
    ],
)
def test_json_refused(payload, reasons, kept):
    readings, refusals = dec_json(payload)
    assert [r.reason for r in refusals] == reasons
    assert all(r.source == "vw/room-1/mon-1" and r.raw == payload and r.detail for r in refusals)
    if kept is None:
        assert readings == []
    else:
        assert len(readings) == 1 and dict(readings[0].values) == kept


# --- senml: accepted -----------------------------------------------------------------
BT = T0 / 1000


@pytest.mark.parametrize(
    "pack, expect",
    [
        # the CONTRACT example: one time, three records → one reading
        ([{"bn": "room-1/nibp-1/", "bt": BT, "n": "sbp", "u": "mmHg", "v": 121},
          {"n": "dbp", "u": "mmHg", "v": 79}, {"n": "map", "u": "mmHg", "v": 93}],
         [(T0, {"sbp": 121, "dbp": 79, "map": 93}, set())]),
        # different times → separate readings, in pack order; t is relative to bt
        ([{"bt": BT, "n": "hr", "u": "beat/min", "v": 70}, {"n": "hr", "u": "1/min", "v": 71, "t": 1},
          {"n": "spo2", "u": "%", "v": 97, "t": 1}],
         [(T0, {"hr": 70}, set()), (T0 + 1000, {"hr": 71, "spo2": 97}, set())]),
        # absolute t per record, no base time; full names without bn; units may be omitted
        ([{"n": "urn:dev:mon-1:rr", "u": "1/min", "v": 14, "t": BT},
          {"n": "temp", "v": 36.8, "t": BT}],
         [(T0, {"rr": 14, "temp": 36.8}, set())]),
        # no time at all → receive time; relative times (< 2**28) count from the receive time
        ([{"n": "hr", "v": 66}, {"n": "hr", "v": 65, "t": -5}],
         [(RECV, {"hr": 66}, set()), (RECV - 5000, {"hr": 65}, set())]),
        # bu and bv base unit/value; a base-only record is legal
        ([{"bu": "mmHg", "bv": 100, "bt": BT}, {"n": "sbp", "v": 21}, {"n": "dbp", "v": -21}],
         [(T0, {"sbp": 121, "dbp": 79}, set())]),
        # flags record
        ([{"bt": BT, "n": "spo2", "u": "%", "v": 95}, {"n": "flags", "vs": "low_perfusion,artifact"}],
         [(T0, {"spo2": 95}, {"low_perfusion", "artifact"})]),
        ([{"bt": BT, "n": "spo2", "v": 95}, {"n": "flags", "vs": "sensor_off"}],
         [(T0, {}, {"sensor_off"})]),
        # clock skew: two bad device times stay two readings, 1 ms apart, at receive time
        ([{"bt": BT + 3600, "n": "hr", "v": 70}, {"n": "hr", "v": 71, "t": 1}],
         [(RECV, {"hr": 70}, {"clock_skew"}), (RECV + 1, {"hr": 71}, {"clock_skew"})]),
        # unknown non-"_" fields are ignored (RFC 8428 §4.4)
        ([{"bver": 10, "n": "hr", "v": 70, "t": BT, "x-vendor": 1}], [(T0, {"hr": 70}, set())]),
    ],
)
def test_senml_accepted(pack, expect):
    readings, refusals = dec_senml(j(pack))
    assert refusals == []
    got = [(r.ts_ms, dict(r.values), set(r.flags)) for r in readings]
    assert got == expect
    assert all(r.room == "room-1" and r.device == "nibp-1" for r in readings)


@pytest.mark.parametrize(
    "payload, reasons, kept",
    [
        (b"[" + b" " * MAX_PAYLOAD_BYTES + b"]", ["too_large"], []),
        (b'[{"n":"hr","v":70,"x":"\xc3"}]', ["bad_utf8"], []),
        (b'[{"n":"hr","v":70}', ["invalid_json"], []),
        (j({"n": "hr", "v": 70}), ["bad_shape"], []),  # an object, not a pack
        (j([]), ["bad_shape"], []),
        (j([{"n": "hr", "v": 70}, 5]), ["bad_shape"], []),
        (j([{"n": "hr", "v": 70, "t": BT, "ext_": 1}]), ["bad_shape"], []),  # must-understand
        (j([{"bt": "now", "n": "hr", "v": 70}]), ["bad_ts"], []),
        (j([{"bn": 5, "n": "hr", "v": 70}]), ["bad_shape"], []),
        (j([{"bt": BT, "n": "hr", "v": 70}, {"n": "hr", "v": 72, "t": "later"}]), ["bad_ts"], [{"hr": 70}]),
        (j([{"bt": BT, "n": "hr", "u": "Hz", "v": 1.2}, {"n": "spo2", "u": "%", "v": 97}]),
         ["bad_unit"], [{"spo2": 97}]),
        (j([{"bt": BT, "n": "sbp", "u": "kPa", "v": 16}]), ["bad_unit"], []),
        (j([{"bt": BT, "n": "glucose", "v": 5}, {"n": "hr", "v": 70}]), ["unknown_metric"], [{"hr": 70}]),
        (j([{"bt": BT, "n": "hr", "v": 310}, {"n": "spo2", "v": 97}]), ["out_of_range"], [{"spo2": 97}]),
        (j([{"bt": BT, "n": "hr", "vs": "72"}]), ["bad_value"], []),
        (j([{"bt": BT, "n": "hr"}]), ["bad_shape"], []),
        (j([{"bt": BT, "n": "hr", "v": 70}, {"n": "hr", "v": 71}]), ["bad_shape"], [{"hr": 70}]),
        (j([{"bt": BT, "n": "hr", "s": 70}]), ["bad_shape"], []),
        (j([{"bt": BT, "n": "", "v": 70}]), ["bad_shape"], []),
        (j([{"bt": BT, "n": "flags", "v": 1}]), ["bad_shape"], []),
        (j([{"bt": BT, "n": "hr", "v": 70}, {"n": "flags", "vs": "on_fire"}]), ["unknown_flag"], [{"hr": 70}]),
        (j([{"bt": BT}]), ["bad_shape"], []),  # nothing to store
    ],
)
def test_senml_refused(payload, reasons, kept):
    readings, refusals = dec_senml(payload)
    assert [r.reason for r in refusals] == reasons
    assert all(r.source == "vw/room-1/nibp-1" and r.detail for r in refusals)
    assert [dict(r.values) for r in readings] == kept
