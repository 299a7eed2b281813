"""Pure tier: stream codec round trip and the acceptance rules of readings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.model.codec import escape_raw, from_fields, identity, reading_identity, reject_fields, to_fields
from monitor.model.readings import FLAGS, METRICS, Reading, Refusal, accept, settle_ts

NOW = 1_795_813_200_123


def _value(metric: str) -> st.SearchStrategy[float]:
    m = METRICS[metric]
    return st.one_of(
        st.integers(int(m.low), int(m.high)).map(float),
        st.floats(m.low, m.high, allow_nan=False, allow_infinity=False),
    )


readings = st.builds(
    lambda vals, flags, ts, dev: Reading("room-1", dev, ts, vals, frozenset(flags)),
    st.dictionaries(st.sampled_from(sorted(METRICS)), st.just(0.0)).flatmap(
        lambda d: st.fixed_dictionaries({k: _value(k) for k in d})),
    st.sets(st.sampled_from(sorted(FLAGS))),
    st.integers(0, 2**45),
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
)


@given(readings)
def test_codec_round_trip(r: Reading) -> None:
    fields = to_fields(r)
    assert all(isinstance(v, str) for v in fields.values())
    back = from_fields("room-1", fields)
    assert back == r
    for metric in METRICS:  # a missing value is an absent field, never 0
        assert (metric in fields) == (metric in r.values)


def test_fields_are_contract_names() -> None:
    r = Reading("room-1", "oxi-1", NOW, {"hr": 72.0, "spo2": 98.0, "temp": 36.6}, frozenset({"artifact", "low_perfusion"}))
    assert to_fields(r) == {"ts": str(NOW), "dev": "oxi-1", "hr": "72", "spo2": "98", "temp": "36.6",
                            "flags": "artifact,low_perfusion"}


@pytest.mark.parametrize(("values", "flags", "kept", "kept_flags", "reasons"), [
    ({"hr": 72, "spo2": 98}, set(), {"hr": 72, "spo2": 98}, set(), []),
    ({"hr": 511, "spo2": 98}, set(), {"spo2": 98}, set(), ["out_of_range"]),  # other values kept
    ({"hr": 19.9}, set(), None, None, ["out_of_range"]),
    ({"hr": 300, "spo2": 50, "rr": 0, "pi": 20}, set(), {"hr": 300, "spo2": 50, "rr": 0, "pi": 20}, set(), []),
    ({"hr": 72}, {"sensor_off"}, {}, {"sensor_off"}, []),  # flags kept, values dropped
    ({"spo2": 97}, {"no_sensor", "low_battery"}, {}, {"no_sensor", "low_battery"}, []),
    ({}, set(), None, None, []),  # neither values nor flags: not stored
    ({"glucose": 5}, set(), None, None, ["unknown_metric"]),
    ({"hr": float("nan")}, set(), None, None, ["bad_value"]),
    ({"hr": True}, set(), None, None, ["bad_value"]),
    ({"hr": 80}, {"wobbly"}, {"hr": 80}, set(), ["unknown_flag"]),
    ({"hr": 80}, {"artifact"}, {"hr": 80}, {"artifact"}, []),
])
def test_accept_rules(values, flags, kept, kept_flags, reasons) -> None:
    r, refusals = accept("room-1", "d", NOW, values, flags)
    assert [x.reason for x in refusals] == reasons
    if kept is None:
        assert r is None
    else:
        assert r is not None and dict(r.values) == kept and set(r.flags) == kept_flags


@pytest.mark.parametrize(("dev_ts", "ts", "flags"), [
    (None, NOW, set()),
    (NOW - 1000, NOW - 1000, set()),
    (NOW + 2000, NOW + 2000, set()),  # within the 2 s tolerance ahead: the device's label
    (NOW + 2001, NOW, {"clock_skew"}),  # later than that cannot be a measurement yet
    (NOW + 290_000, NOW, {"clock_skew"}),
    (NOW + 5 * 60_000 + 1, NOW, {"clock_skew"}),
    (NOW - 24 * 3600_000, NOW - 24 * 3600_000, set()),
    (NOW - 24 * 3600_000 - 1, NOW, {"clock_skew"}),
])
def test_settle_ts(dev_ts, ts, flags) -> None:
    assert settle_ts(dev_ts, NOW) == (ts, frozenset(flags))


def test_reject_fields_truncate_and_escape() -> None:
    raw = b"\x02\xff" + b"A" * 600
    f = reject_fields(Refusal("oxi-1", "bad_checksum", "sum 0x12 != 0x13", raw), NOW)
    assert f["reason"] == "bad_checksum" and f["source"] == "oxi-1" and f["ts"] == str(NOW)
    assert f["raw"].startswith("\\x02\\xff") and f["raw"].endswith("…")
    assert escape_raw(b"ok line") == "ok line"


@given(readings, st.integers(0, 2**45))
def test_identity_is_the_same_queued_and_stored(r: Reading, rx: int) -> None:
    """The writer checks a queued entry against stored ones: the identity of `to_fields(r)`
    equals that of the entry read back (fields in another order, with the writer's `rx`
    note), and that of the reading decoded from it and encoded again."""
    queued = to_fields(r)
    stored = dict(reversed([*queued.items(), ("rx", str(rx))]))
    assert identity(stored) == identity(queued) == reading_identity(r)
    assert reading_identity(from_fields("room-1", stored, f"{rx}-0")) == reading_identity(r)


def test_identity_tells_a_reused_label_from_a_redelivery() -> None:
    """Same device and ts (a clock stepped back): any other value or flag is another
    reading; every field equal is the same reading (storing it again says nothing new)."""
    r = Reading("room-1", "oxi-1", NOW, {"hr": 72.0, "spo2": 97.0})
    assert reading_identity(Reading("room-1", "oxi-1", NOW, {"spo2": 97.0, "hr": 72.0}, recv_ms=NOW + 9)) \
        == reading_identity(r)
    others = [
        Reading("room-1", "oxi-1", NOW, {"hr": 73.0, "spo2": 97.0}),
        Reading("room-1", "oxi-1", NOW, {"hr": 72.0}),
        Reading("room-1", "oxi-1", NOW, {"hr": 72.0, "spo2": 97.0, "pi": 2.5}),
        Reading("room-1", "oxi-1", NOW, {"hr": 72.0, "spo2": 97.0}, frozenset({"artifact"})),
        Reading("room-1", "oxi-1", NOW, {"hr": 72.0, "spo2": 97.5}),
    ]
    ids = {reading_identity(o) for o in others}
    assert len(ids) == len(others) and reading_identity(r) not in ids
    assert all(i[:2] == ("oxi-1", str(NOW)) for i in ids)
