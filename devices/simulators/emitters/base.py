"""What every emitter shares: the per-tick context, emitted chunks, noise helpers, NIBP cycle.

Emitters are pure: given the context of one tick (host time, simulated time, vitals, which
faults are on, a seeded random source for noise) they return byte chunks, each with the
ground-truth reading it carries (if any). Runners (runners.py) do the I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from devices.simulators.physiology import Vitals

# NIBP schedule (simulated time): one measurement at the start (pre-dose), every 5 min
# until 60 min after the dose, then every 15 min — a typical dosing-session cycle.
NIBP_DOSING_CYCLE_S = 300.0
NIBP_OBSERVE_CYCLE_S = 900.0
NIBP_DOSING_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Context:
    """One tick of a simulated device."""

    now_ms: int  # host wall-clock time, ms since epoch (what readings carry)
    sim_s: float  # simulated session time, s
    vitals: Vitals
    sensor_off: bool = False
    noisy: random.Random | None = None  # set while a noisy-line fault is on
    clock_skew_ms: int = 0  # device clock error while a clock-skew fault is on (signed: + ahead)
    dose_s: float | None = None  # simulated time of the first dose (NIBP schedule)
    garbage_p: float = 0.10  # on a noisy line: share of ticks with garbage bytes
    corrupt_p: float = 0.06  # on a noisy line: share of readings cut or corrupted


@dataclass(slots=True)
class TruthReading:
    """What the contract says should be stored for an emitted reading."""

    values: dict[str, float]
    flags: list[str] = field(default_factory=list)
    expect: str = "stored"  # stored | refused | lost
    fault: str | None = None
    device_ts_ms: int | None = None

    def as_record(self) -> dict[str, Any]:
        """Fields for the truth log."""
        rec: dict[str, Any] = {"values": self.values, "flags": sorted(self.flags), "expect": self.expect}
        if self.fault:
            rec["fault"] = self.fault
        if self.device_ts_ms is not None:
            rec["device_ts_ms"] = self.device_ts_ms
        return rec


@dataclass(slots=True)
class Chunk:
    """Bytes to send, with the reading they carry and/or the noise they are."""

    data: bytes
    reading: TruthReading | None = None
    noise: str | None = None  # garbage | cut | bad_checksum | invalid_json | …


def garbage(rng: random.Random, low: int = 4, high: int = 24, exclude: bytes = b"") -> bytes:
    """Line noise: random bytes, none of them in `exclude`."""
    n = rng.randint(low, high)
    out = bytearray()
    while len(out) < n:
        b = rng.randrange(256)
        if b not in exclude:
            out.append(b)
    return bytes(out)


def nibp_due(prev_sim_s: float | None, sim_s: float, dose_s: float | None) -> bool:
    """Is a scheduled NIBP measurement due in (prev_sim_s, sim_s]? (first tick: yes)."""
    if prev_sim_s is None:
        return True
    return nibp_slot(sim_s, dose_s) != nibp_slot(prev_sim_s, dose_s)


def nibp_slot(sim_s: float, dose_s: float | None) -> int:
    """Index of the NIBP cycle slot containing sim_s (changes when a measurement is due)."""
    if dose_s is None or sim_s < dose_s:
        return int(sim_s // NIBP_DOSING_CYCLE_S)
    t = sim_s - dose_s
    base = 10_000  # slots after the dose are numbered apart from pre-dose ones
    if t < NIBP_DOSING_WINDOW_S:
        return base + int(t // NIBP_DOSING_CYCLE_S)
    return base + 1000 + int((t - NIBP_DOSING_WINDOW_S) // NIBP_OBSERVE_CYCLE_S)
