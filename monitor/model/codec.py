"""Pure stream codecs: Reading ↔ vitals-stream fields, Refusal → rejects-stream fields."""

from __future__ import annotations

import hashlib
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


Identity = tuple[str, str, bytes]  # (dev, ts, digest of everything else the entry says)


def identity(fields: Mapping[str, str]) -> Identity:
    """The identity of a vitals-stream entry: its `dev` and `ts` fields, and a stable digest
    of its other fields (values and `flags`) except `rx`, the writer's receive-time note.

    The digest is taken over the field text, so it is the same for an entry about to be
    written (`to_fields` of a Reading, or the same fields read back from a spool) and for the
    entry as stored in Redis: `to_fields` is the only encoder, field order does not matter.
    A redelivery (same device, ts, values and flags) has the identity of its stored copy; a
    new reading that reuses a ts label (a device clock stepped back) but says anything
    different has another. Two entries equal in every one of these fields are one reading.
    """
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(fields):
        if name not in (F_DEV, F_TS, F_RX):
            h.update(name.encode("utf-8", "backslashreplace") + b"\0")
            h.update(fields[name].encode("utf-8", "backslashreplace") + b"\0")
    return (fields.get(F_DEV, ""), fields.get(F_TS, ""), h.digest())


def reading_identity(r: Reading) -> Identity:
    """`identity` of the entry `to_fields(r)` (recv_ms is not part of it)."""
    return identity(to_fields(r))


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
