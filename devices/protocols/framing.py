"""Shared pieces of the serial protocol parsers: the `Parsed` result and value checks.

A parser turns bytes into `Parsed` results (values + flags, not yet stamped with room,
device or time: the supervisor does that) and `Refusal`s. Every value goes through
`monitor.model.readings.accept()` here, so range checks and the sensor-off rule live in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from monitor.model.readings import Refusal, accept

RAW_KEEP = 512  # bytes of an offending input kept in a refusal (the rejects stream keeps 512)

_NUMBER_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


@dataclass(frozen=True, slots=True)
class Parsed:
    """One intact frame's outcome: accepted values and flags, ready to be stamped.

    `values`/`flags` already obey the acceptance rules (range, sensor-off). A frame that
    was intact but carries neither (e.g. all dashes) has both empty: it still proves the
    link is alive, but nothing is stored. `device_clock` is the device's own time text,
    kept only to report skew; `info` carries device facts (e.g. serial number).
    """

    values: Mapping[str, float] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    device_ts_ms: int | None = None
    device_clock: str | None = None
    info: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def storable(self) -> bool:
        """True when this result becomes a reading (it has values or flags)."""
        return bool(self.values) or bool(self.flags)


Result = tuple[list[Parsed], list[Refusal]]


def checked(
    source: str,
    values: Mapping[str, float],
    flags: frozenset[str] | set[str],
    raw: bytes,
    **extra: object,
) -> tuple[Parsed, list[Refusal]]:
    """Apply `accept()` to a frame's values and flags; out-of-range values become refusals."""
    reading, refusals = accept("", source, 0, values, frozenset(flags), source=source, raw=raw[:RAW_KEEP])
    if reading is None:
        return Parsed(raw=raw[:RAW_KEEP], **extra), refusals  # type: ignore[arg-type]
    return (
        Parsed(MappingProxyType(dict(reading.values)), reading.flags, raw=raw[:RAW_KEEP], **extra),  # type: ignore[arg-type]
        refusals,
    )


def parse_number(text: str) -> float | None:
    """A decimal number from device text (`098`, `02.30`, `-02`), else None."""
    t = text.strip()
    if not _NUMBER_RE.match(t):
        return None
    v = float(t)
    return int(v) if v.is_integer() else v


def is_dashes(text: str) -> bool:
    """Device "no value" text: dashes with optional sign, dot or percent (`---%`, `+--`)."""
    t = text.strip()
    return bool(t) and "-" in t and all(c in "-+.%" for c in t)


def refusal(source: str, reason: str, detail: str, raw: bytes) -> Refusal:
    """A Refusal with its raw bytes cut to what the rejects stream keeps."""
    return Refusal(source, reason, detail, bytes(raw[:RAW_KEEP]))
