"""Pure stream codecs: Reading ↔ vitals-stream fields, Refusal → rejects-stream fields."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from monitor.model.keys import F_DEV, F_FLAGS, F_RX, F_TS, REJECT_RAW_MAX
from monitor.model.readings import METRICS, Reading, Refusal

TS_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last time a datetime can hold


class CodecError(ValueError):
    """A stream entry that is not a valid reading."""


def fmt_value(v: float) -> str:
    """Shortest decimal text for a metric value: 72 → "72", 36.6 → "36.6"."""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def to_fields(r: Reading) -> dict[str, str]:
    """Encode a Reading as vitals-stream fields (CONTRACT.md)."""
    fields = {F_TS: str(r.ts_ms), F_DEV: r.device}
    for metric, value in r.values.items():
        fields[metric] = fmt_value(value)
    if r.flags:
        fields[F_FLAGS] = ",".join(sorted(r.flags))
    return fields


def recv_ms_of(entry_id: str, fields: Mapping[str, str]) -> int | None:
    """When a stored reading was received (host clock): its `rx` field when the writer
    stored it late, else the entry id's ms (Redis's clock at storing); None if neither parses."""
    rx = fields.get(F_RX)
    if rx is not None:
        try:
            return int(rx)
        except ValueError:
            pass
    try:
        return int(entry_id.split("-", 1)[0])
    except ValueError:
        return None


def from_fields(room: str, fields: Mapping[str, str], entry_id: str | None = None) -> Reading:
    """Decode vitals-stream fields into a Reading; raise CodecError if malformed.

    With the stream `entry_id`, the Reading also carries its receive time (`recv_ms_of`).
    """
    try:
        ts_ms = int(fields[F_TS])
        device = fields[F_DEV]
        values = {m: float(fields[m]) for m in METRICS if m in fields}
    except (KeyError, ValueError) as e:
        raise CodecError(f"bad vitals entry {dict(fields)!r}") from e
    if not 0 <= ts_ms <= TS_MAX_MS or not all(math.isfinite(v) for v in values.values()):
        # writers never store these; a foreign or damaged entry must not reach a screen
        # (NaN/Infinity is not JSON) nor a datetime (year > 9999)
        raise CodecError(f"bad vitals entry {dict(fields)!r}: time or value out of range")
    flags_text = fields.get(F_FLAGS, "")
    flags = frozenset(f for f in flags_text.split(",") if f)
    recv = recv_ms_of(entry_id, fields) if entry_id is not None else None
    return Reading(room, device, ts_ms, MappingProxyType(values), flags, recv)


def escape_raw(raw: bytes) -> str:
    """At most REJECT_RAW_MAX bytes of `raw`, made printable (\\xNN for non-UTF-8)."""
    cut = raw[:REJECT_RAW_MAX]
    text = cut.decode("utf-8", "backslashreplace")
    # control characters would make logs and the rejects view unreadable
    text = "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)
    return text + ("…" if len(raw) > REJECT_RAW_MAX else "")


def reject_fields(ref: Refusal, ts_ms: int) -> dict[str, str]:
    """Encode a Refusal as rejects-stream fields (CONTRACT.md)."""
    return {
        "ts": str(ts_ms),
        "source": ref.source,
        "reason": ref.reason,
        "detail": ref.detail[:1024],
        "raw": escape_raw(ref.raw),
    }
