"""The `senml` MQTT payload: an RFC 8428 SenML JSON pack → Readings (pure).

    [{"bn":"room-1/nibp-1/","bt":1795813200.123,"n":"sbp","u":"mmHg","v":121},
     {"n":"dbp","u":"mmHg","v":79},{"n":"map","u":"mmHg","v":93}]

Resolution per RFC 8428 §4.6: base fields (bn, bt, bu, bv) apply to the records after
them until changed; name = bn + n, time = bt + t (seconds; a resolved time below 2**28 is
relative to the receive time), unit = u or bu, value = bv + v. The metric is the last
segment of the resolved name (after "/" or ":"); the device is the one owning the topic.
Records with the same resolved time form one Reading; different times, separate Readings.
Quality flags ride as a VitalWatch record `{"n": "flags", "vs": "sensor_off,artifact"}`.

Refusals: a malformed pack is refused whole (`too_large`, `bad_utf8`, `invalid_json`,
`bad_shape`, `bad_ts` for a bad `bt`); a bad record is refused alone (`bad_unit`,
`unknown_metric`, `out_of_range`, `bad_value`, `bad_ts`, `bad_shape`) and the rest is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from devices.protocols.payload_checks import PayloadError, finish, finite, load_json, ms_from_seconds
from monitor.model.readings import METRICS, Reading, Refusal, accept, settle_ts

# SenML units accepted per metric (RFC 8428 §12.1 registry names; a record may omit u).
UNITS: dict[str, frozenset[str]] = {
    "hr": frozenset({"beat/min", "1/min"}),
    "spo2": frozenset({"%"}),
    "sbp": frozenset({"mmHg"}),
    "dbp": frozenset({"mmHg"}),
    "map": frozenset({"mmHg"}),
    "rr": frozenset({"1/min"}),
    "temp": frozenset({"Cel"}),
    "pi": frozenset({"%"}),
}
FLAGS_NAME = "flags"
RELATIVE_LIMIT_S = 2**28  # RFC 8428 §4.5.3: smaller resolved times are relative to now
RECORD_FIELDS = {"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
_NAME_SPLIT = re.compile(r"[/:]")


@dataclass
class _Group:
    """Records resolved to one measurement time."""

    values: dict[str, object] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


def _number(rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(key)
    if v is None:
        return None
    f = finite(v)
    if f is None:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "…"
        raise PayloadError("bad_ts" if key in ("bt", "t") else "bad_shape",
                           f"{key} must be a finite number, got {shown}")
    return f


T = TypeVar("T")


def _text(rec: dict[str, Any], key: str, where: str, current: T) -> str | T:
    """A base text field (bn, bu) when the record sets it, else the base value so far."""
    if key not in rec:
        return current
    if not isinstance(rec[key], str):
        raise PayloadError("bad_shape", f"{where}: {key} must be a string")
    return rec[key]


def decode(
    payload: bytes, recv_ts_ms: int, room: str, device: str, source: str | None = None
) -> tuple[list[Reading], list[Refusal]]:
    """Decode one SenML pack received at `recv_ts_ms` from `device` in `room`."""
    src = source or device
    refusals: list[Refusal] = []

    def refuse(reason: str, detail: str) -> None:
        refusals.append(Refusal(src, reason, detail, payload))

    try:
        pack = load_json(payload)
        if not isinstance(pack, list) or not pack:
            raise PayloadError("bad_shape", "a SenML pack is a non-empty JSON array of records")
        if not all(isinstance(r, dict) for r in pack):
            raise PayloadError("bad_shape", "every SenML record must be a JSON object")
    except PayloadError as e:
        return [], [Refusal(src, e.reason, e.detail, payload)]

    groups: dict[int, _Group] = {}  # device time (ms) → group, in order of first appearance
    bn, bt, bv = "", 0.0, 0.0
    bu: str | None = None
    for i, rec in enumerate(pack):
        where = f"record {i}"
        try:
            must_understand = [k for k in rec if k.endswith("_")]
            if must_understand:
                # RFC 8428 §4.4: a field ending in "_" we do not know makes the pack unusable
                raise PayloadError("bad_shape", f"{where}: unsupported field {must_understand[0]!r}")
            if "bver" in rec and (not isinstance(rec["bver"], int) or isinstance(rec["bver"], bool)):
                raise PayloadError("bad_shape", f"{where}: bver must be an integer")
            bn = _text(rec, "bn", where, bn)
            bu = _text(rec, "bu", where, bu)
            if "bt" in rec:
                bt = _number(rec, "bt") or 0.0
            if "bv" in rec:
                bv = _number(rec, "bv") or 0.0
        except PayloadError as e:
            # a broken base field would silently shift every later record: refuse the pack
            return [], [Refusal(src, e.reason, e.detail, payload)]
        if not (set(rec) & RECORD_FIELDS):
            continue  # a record carrying only base fields is legal (RFC 8428 §4.1)
        try:
            n = rec.get("n", "")
            if not isinstance(n, str):
                raise PayloadError("bad_shape", f"{where}: n must be a string")
            name = bn + n
            metric = _NAME_SPLIT.split(name)[-1] if name else ""
            if not metric:
                raise PayloadError("bad_shape", f"{where}: record has no name")
            t = _number(rec, "t") or 0.0
            time_s = bt + t
            if time_s < RELATIVE_LIMIT_S:
                dev_ms = recv_ts_ms + ms_from_seconds(time_s)
            else:
                dev_ms = ms_from_seconds(time_s)
            if "s" in rec or "ut" in rec:
                raise PayloadError("bad_shape", f"{where}: sum/update-time records are not readings")
            group = groups.setdefault(dev_ms, _Group())
            if metric == FLAGS_NAME:
                vs = rec.get("vs")
                if not isinstance(vs, str):
                    raise PayloadError("bad_shape", f"{where}: flags record needs vs (comma-separated)")
                group.flags.update(f.strip() for f in vs.split(",") if f.strip())
                continue
            if metric not in METRICS:
                raise PayloadError("unknown_metric", f"{where}: unknown metric {name!r}")
            unit = rec.get("u", bu)
            if unit is not None and (not isinstance(unit, str) or unit not in UNITS[metric]):
                shown = repr(unit) if len(repr(unit)) <= 40 else repr(unit)[:40] + "…"
                raise PayloadError(
                    "bad_unit", f"{where}: {metric} in {shown}; expected {' or '.join(sorted(UNITS[metric]))}")
            if "v" not in rec:
                what = next((k for k in ("vs", "vb", "vd") if k in rec), None)
                raise PayloadError("bad_value" if what else "bad_shape",
                                   f"{where}: {metric} needs a numeric v" + (f", got {what}" if what else ""))
            v = rec["v"]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                fv = finite(v)
                if fv is None:  # beyond a float (a 400-digit integer), or not finite
                    raise PayloadError("out_of_range" if isinstance(v, int) else "bad_value",
                                       f"{where}: {metric} value is not a usable number")
                v = bv + fv  # RFC 8428: resolved value = bv + v
            if metric in group.values:
                raise PayloadError("bad_shape", f"{where}: second {metric} at the same time")
            group.values[metric] = v
        except PayloadError as e:
            refuse(e.reason, e.detail)

    readings: list[Reading] = []
    for k, (dev_ms, g) in enumerate(groups.items()):
        ts_ms, skew = settle_ts(dev_ms, recv_ts_ms)
        if skew:
            # several skewed times all become the receive time; keep them apart by 1 ms so
            # the writer's (device, ts, values+flags) identity does not fold equal ones together
            ts_ms += k
        reading, refs = accept(room, device, ts_ms, g.values, frozenset(g.flags) | skew,
                               source=src, raw=payload)
        got, refs = finish(reading, refs, src, payload) if (reading or refs) else ([], [])
        readings += got
        refusals += refs
    if not readings and not refusals:
        refusals.append(Refusal(src, "bad_shape", "no metric values or flags", payload))
    return readings, refusals
