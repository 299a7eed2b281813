"""The readings an outbound message carries, in one shape for every builder (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from monitor.model.readings import METRICS, Reading

METRIC_ORDER = tuple(METRICS)


@dataclass(frozen=True, slots=True)
class VitalRow:
    """One stored reading: measurement time, device, values (present metrics only), flags."""

    ts_ms: int
    dev: str
    values: Mapping[str, float]
    flags: tuple[str, ...] = ()


def from_archive(readings: Iterable[tuple[int, str, str | None, Sequence[float | None]]]) -> list[VitalRow]:
    """Rows from an archived session (`SessionRecord.readings`: ts, dev, flags, values in
    METRICS order), in time order."""
    out = []
    for ts, dev, flags, values in readings:
        vals = {m: float(v) for m, v in zip(METRIC_ORDER, values, strict=False) if v is not None}
        out.append(VitalRow(int(ts), dev, vals, tuple(sorted(f for f in (flags or "").split(",") if f))))
    return sorted(out, key=lambda r: (r.ts_ms, r.dev))


def from_readings(readings: Iterable[Reading]) -> list[VitalRow]:
    """Rows from stream readings, in time order."""
    return sorted((VitalRow(r.ts_ms, r.device, dict(r.values), tuple(sorted(r.flags))) for r in readings),
                  key=lambda r: (r.ts_ms, r.dev))


def value_count(rows: Iterable[VitalRow]) -> int:
    """How many metric values the rows hold."""
    return sum(len(r.values) for r in rows)
