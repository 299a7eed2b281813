"""The one currency between layers: `Reading`, the metric table and the rules of acceptance.

Everything that enters VitalWatch (serial frame, MQTT payload, simulator) becomes a
`Reading` through `accept()`, which applies the contract's rules in one place: physiologic
ranges, sensor-off drops values, clock skew, empty readings are not stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Metric:
    """A vital-sign metric: its name, unit and accepted (physiologic) range, inclusive."""

    name: str
    unit: str
    low: float
    high: float
    label: str


METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        m.name: m
        for m in (
            Metric("hr", "beats/min", 20, 300, "Heart rate"),
            Metric("spo2", "%", 50, 100, "SpO2"),
            Metric("sbp", "mmHg", 40, 300, "Systolic BP"),
            Metric("dbp", "mmHg", 15, 200, "Diastolic BP"),
            Metric("map", "mmHg", 20, 250, "Mean arterial pressure"),
            Metric("rr", "breaths/min", 0, 80, "Respiratory rate"),
            Metric("temp", "°C", 25, 45, "Temperature"),
            Metric("pi", "%", 0, 20, "Perfusion index"),
        )
    }
)

# Short display names (tables, chart legends, reports): one place, so "SpO2" is never "SPO2".
SHORT_LABELS: Mapping[str, str] = MappingProxyType(
    {"hr": "HR", "spo2": "SpO2", "sbp": "SBP", "dbp": "DBP", "map": "MAP", "rr": "RR", "temp": "Temp", "pi": "PI"}
)


def short_label(metric: str) -> str:
    """A metric's short display name ("SpO2", "SBP"); the name itself for an unknown metric."""
    return SHORT_LABELS.get(metric, metric)


FLAGS: frozenset[str] = frozenset(
    {
        "sensor_off",
        "no_sensor",
        "low_perfusion",
        "artifact",
        "pulse_search",
        "interference",
        "low_signal_iq",
        "questionable",
        "measurement_error",
        "device_alarm",
        "low_battery",
        "clock_skew",
    }
)

# Flags that mean the values on the same reading are not trustworthy: keep flags, drop values.
DROP_VALUE_FLAGS: frozenset[str] = frozenset({"sensor_off", "no_sensor"})

# Device time vs the host's receive time. CONTRACT.md: more than 5 min ahead or 24 h behind
# → receive time and `clock_skew`. VitalWatch is stricter ahead: a reading stamped more than
# AHEAD_TOLERANCE_MS in the future cannot be a measurement yet, so it gets the receive time
# and `clock_skew` too (docs/mqtt.md "Time"). MAX_AHEAD_MS stays the contract's ceiling: no
# stored label, from any version, is further ahead than that.
AHEAD_TOLERANCE_MS = 2000
MAX_AHEAD_MS = 5 * 60 * 1000
MAX_BEHIND_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement instant from one device in one room.

    `values` maps metric name → value (only metrics present; a missing value is absent,
    never 0). `flags` are quality flags from FLAGS. `ts_ms` is measurement time, UTC ms —
    the reading's label, from the device's clock when it sent a plausible one.
    `recv_ms` is when VitalWatch received it (host clock), known for readings read back
    from a stream (entry id, or `rx`); alarm delays and silence are measured on it. It is
    not part of a reading's identity (monitor/model/codec.py `identity`: device, ts and a
    digest of values and flags) or equality.
    """

    room: str
    device: str
    ts_ms: int
    values: Mapping[str, float] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    recv_ms: int | None = field(default=None, compare=False)

    @property
    def clock_ms(self) -> int:
        """The time to measure delays on: receive time when known, else the label."""
        return self.ts_ms if self.recv_ms is None else self.recv_ms


@dataclass(frozen=True, slots=True)
class Refusal:
    """Something refused at the edge, bound for the `rejects` stream.

    `reason` is a short machine code (`bad_checksum`, `out_of_range`, …), `source` the
    device id or MQTT topic, `raw` the offending bytes (truncated when written).
    """

    source: str
    reason: str
    detail: str = ""
    raw: bytes = b""


def settle_ts(device_ts_ms: int | None, recv_ts_ms: int) -> tuple[int, frozenset[str]]:
    """Choose a reading's ts (its label): the device's when plausible — at most
    AHEAD_TOLERANCE_MS ahead of the receive time, at most MAX_BEHIND_MS behind — else the
    receive time, flagged `clock_skew`. No device time: the receive time, unflagged."""
    if device_ts_ms is None:
        return recv_ts_ms, frozenset()
    if device_ts_ms > recv_ts_ms + AHEAD_TOLERANCE_MS or device_ts_ms < recv_ts_ms - MAX_BEHIND_MS:
        return recv_ts_ms, frozenset({"clock_skew"})
    return device_ts_ms, frozenset()


def check_value(metric: str, value: object) -> str | None:
    """Why `value` is not acceptable for `metric` (a reason code), or None if it is."""
    spec = METRICS.get(metric)
    if spec is None:
        return "unknown_metric"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "bad_value"
    if isinstance(value, float) and not math.isfinite(value):
        return "bad_value"
    # compared as they are: an int of any size compares exactly (float() of a 400-digit
    # integer would raise OverflowError)
    if not spec.low <= value <= spec.high:
        return "out_of_range"
    return None


def accept(
    room: str,
    device: str,
    ts_ms: int,
    values: Mapping[str, object],
    flags: frozenset[str] | set[str] = frozenset(),
    *,
    source: str | None = None,
    raw: bytes = b"",
) -> tuple[Reading | None, list[Refusal]]:
    """Apply the contract's acceptance rules and build a Reading.

    Values outside the physiologic range (or of an unknown metric) are refused one by one
    and the reading keeps its other values. A reading flagged sensor_off/no_sensor keeps
    its flags and drops its values. A reading with neither values nor flags is None.
    """
    src = source or device
    refusals: list[Refusal] = []
    unknown_flags = set(flags) - FLAGS
    if unknown_flags:
        refusals.append(Refusal(src, "unknown_flag", ",".join(sorted(unknown_flags)), raw))
    kept_flags = frozenset(flags) & FLAGS
    kept: dict[str, float] = {}
    for metric, value in values.items():
        why = check_value(metric, value)
        if why is None:
            kept[metric] = value  # type: ignore[assignment]
        else:
            shown = repr(value)
            if len(shown) > 40:  # a 400-digit number helps nobody in full
                shown = f"{shown[:40]}… ({len(shown)} chars)"
            refusals.append(Refusal(src, why, f"{metric}={shown}", raw))
    if kept_flags & DROP_VALUE_FLAGS:
        kept = {}
    if not kept and not kept_flags:
        return None, refusals
    return Reading(room, device, int(ts_ms), MappingProxyType(kept), kept_flags), refusals
