"""The `json` MQTT payload: one object per message → at most one Reading (pure).

    {"ts": 1795813200123, "hr": 72, "spo2": 98, "flags": ["low_perfusion"]}

`ts` is ms since the epoch or ISO-8601 text with an offset; absent → receive time. Every
other key is a metric name (CONTRACT.md). Values outside their range, unknown metrics and
unknown flags are refused one by one (`out_of_range`, `unknown_metric`, `unknown_flag`)
and the reading keeps the rest; a malformed message is refused whole.
"""

from __future__ import annotations

from devices.protocols.payload_checks import PayloadError, finish, load_json, parse_ts_ms
from monitor.model.readings import Reading, Refusal, accept, settle_ts

RESERVED = ("ts", "flags")


def parse_flags(value: object) -> frozenset[str]:
    """`flags`: a list of flag names (validity against FLAGS is checked by accept())."""
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise PayloadError("bad_shape", "flags must be a list of strings")
    return frozenset(value)


def decode(
    payload: bytes, recv_ts_ms: int, room: str, device: str, source: str | None = None
) -> tuple[list[Reading], list[Refusal]]:
    """Decode one `json` payload received at `recv_ts_ms` from `device` in `room`.

    `source` names where it came from in refusals (the MQTT topic; default the device id).
    """
    src = source or device
    try:
        obj = load_json(payload)
        if not isinstance(obj, dict):
            raise PayloadError("bad_shape", f"expected one JSON object, got {type(obj).__name__}")
        device_ts = parse_ts_ms(obj["ts"]) if "ts" in obj else None
        flags = parse_flags(obj["flags"]) if "flags" in obj else frozenset()
    except PayloadError as e:
        return [], [Refusal(src, e.reason, e.detail, payload)]
    ts_ms, skew = settle_ts(device_ts, recv_ts_ms)
    values = {k: v for k, v in obj.items() if k not in RESERVED}
    reading, refusals = accept(room, device, ts_ms, values, flags | skew, source=src, raw=payload)
    return finish(reading, refusals, src, payload)
