"""The MQTT codecs are total: any payload → readings that obey the contract, or refusals
with a known reason — never an exception (property tests with hypothesis)."""

from __future__ import annotations

import json
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices.protocols import json_payload, senml
from devices.protocols.payload_checks import MAX_DEPTH, MAX_TS_MS
from monitor.model.readings import FLAGS, METRICS, Reading, Refusal

RECV = 1_795_813_260_000
REASONS = {"too_large", "bad_utf8", "invalid_json", "too_deep", "bad_shape", "bad_ts", "unknown_metric",
           "out_of_range", "bad_value", "unknown_flag", "bad_unit"}

numbers = st.one_of(
    st.integers(min_value=-(10 ** 420), max_value=10 ** 420),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 1e306, -1e306, 1e308, 2 ** 63, 2 ** 64, 1.7976931348623157e308, 5e-324,
                     1795813200.123, 1795813200123, 72, 98.5, -1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=20)
keys_json = st.sampled_from([*METRICS, "ts", "flags", "x", ""])
json_objects = st.dictionaries(keys_json, st.one_of(json_values, st.lists(st.sampled_from(sorted(FLAGS) + ["on_fire"]))),
                               max_size=6)
senml_keys = st.sampled_from(["bn", "bt", "bu", "bv", "bver", "n", "u", "v", "vs", "vb", "t", "s", "ut", "x_"])
senml_values = st.one_of(json_values, st.sampled_from([*METRICS, "flags", "room-1/nibp-1/", "mmHg", "%",
                                                       "beat/min", "Cel", "sensor_off,artifact"]))
senml_packs = st.lists(st.dictionaries(senml_keys, senml_values, max_size=6), max_size=8)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def check(readings: list[Reading], refusals: list[Refusal]) -> None:
    for r in readings:
        assert isinstance(r.ts_ms, int) and 0 <= r.ts_ms <= MAX_TS_MS
        assert r.ts_ms <= RECV + 2000  # never a label in the future beyond the tolerance
        assert r.flags <= FLAGS
        assert r.values or r.flags - {"clock_skew"}
        for m, v in r.values.items():
            assert m in METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
            assert math.isfinite(float(v)) and METRICS[m].low <= v <= METRICS[m].high
    for ref in refusals:
        assert ref.reason in REASONS, ref
        assert len(ref.detail) < 500
    assert readings or refusals  # nothing is ignored silently


def decode_both(payload: bytes) -> None:
    check(*json_payload.decode(payload, RECV, "room-1", "mon-1", "t/mon-1"))
    check(*senml.decode(payload, RECV, "room-1", "nibp-1", "t/nibp-1"))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes(payload: bytes) -> None:
    decode_both(payload)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json(value: object) -> None:
    decode_both(dumps(value))


@settings(max_examples=1000, deadline=None)
@given(json_objects)
def test_json_objects_shaped_like_readings(obj: dict) -> None:
    check(*json_payload.decode(dumps(obj), RECV, "room-1", "mon-1", "t/mon-1"))


@settings(max_examples=1500, deadline=None)
@given(senml_packs)
@example([{"bn": "hr", "u": []}])  # found by this test: a unit that is not text (TypeError before)
def test_senml_packs(pack: list) -> None:
    check(*senml.decode(dumps(pack), RECV, "room-1", "nibp-1", "t/nibp-1"))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=20_000), st.sampled_from(["[", '{"a":']))
def test_any_nesting_depth(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    payload = (opener * depth + "1" + closer * depth).encode()
    for dec in (json_payload.decode, senml.decode):
        readings, refusals = dec(payload, RECV, "room-1", "d", "t")
        assert not readings
        if depth > MAX_DEPTH:
            assert [r.reason for r in refusals] == ["too_deep"] or refusals[0].reason == "too_large"
