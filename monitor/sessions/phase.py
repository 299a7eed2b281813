"""Where a room's dosing session stands at a given time: the one session-phase vocabulary (pure).

`session_phase(header, now_ms)` reads a session header (raw Redis strings or decoded ints;
None for no open session) and returns a `SessionPhase` with two views of the same facts:

- `stage` — what a screen shows: "none" (no session), "pre-dose", "post-dose", "ready"
  (ready to leave), "ended"; `label` is its text ("25 min since dose"). The browser's
  live.js (`phaseOf`) repeats this rule so the minutes tick without a server round trip.
- `nibp` — the NIBP cycling phase: "idle" (no open session), "pre-dose", "dosing" (less than
  DOSING_WINDOW_MS since the first dose), "observation". These are the keys of a device's
  `cycle_by_phase_s` (config) and the values of its `nibp_phase` status field (docs/serial.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STAGES = ("none", "pre-dose", "post-dose", "ready", "ended")
NIBP_PHASES = ("idle", "pre-dose", "dosing", "observation")
DOSING_WINDOW_MS = 40 * 60 * 1000  # BP peaks ~40 min after dosing; closer NIBP cycle until then
MIN_MS = 60_000


@dataclass(frozen=True, slots=True)
class SessionPhase:
    """A session's phase at one instant (see the module docstring for the vocabularies)."""

    stage: str
    label: str
    nibp: str
    dose_ms: int | None  # first dose, when the stage shows it


def _ms(value: Any) -> int | None:
    """A stored ms value, or None when absent, zero or unreadable."""
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return ms or None


def session_phase(session: Mapping[str, Any] | None, now_ms: int) -> SessionPhase:
    """The phase of `session` (a header, or None when the room has no open session) at `now_ms`."""
    if not session:
        return SessionPhase("none", "no session", "idle", None)
    dose = _ms(session.get("first_dose_ms"))
    if session.get("state", "open") != "open":
        nibp = "idle"
    elif dose is None:
        nibp = "pre-dose"
    else:
        nibp = "dosing" if now_ms - dose < DOSING_WINDOW_MS else "observation"
    if session.get("state") in ("ended", "archived"):
        return SessionPhase("ended", "session ended", nibp, None)
    if session.get("ready_ms"):
        return SessionPhase("ready", "ready to leave", nibp, dose)
    if dose is None:
        return SessionPhase("pre-dose", "pre-dose", nibp, None)
    mins = max(0, (now_ms - dose) // MIN_MS)
    return SessionPhase("post-dose", f"{mins} min since dose", nibp, dose)
