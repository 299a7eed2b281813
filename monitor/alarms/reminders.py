"""Reminders from a room's open dosing session (kind `reminder`), counted from the first dose.

Pure: `reminder_conditions(session, events, now_ms, cfg, room)` takes the session hash and
its events as stored by monitor/sessions/lifecycle.py (schema in docs/alerts.md), which the
engine reads from Redis, and returns the reminders that hold right now; the engine
reconciles them into alerts (raised when they start, cleared when done).

Per protocol (`[alerts.protocols.<name>]`: bp_checks_min, observe_min, bp_tolerance_min):
- "BP check due before dosing": session open, no dose yet, no BP recorded since it started.
- "BP check due (N min after dose)": from N − tolerance minutes after the first dose until a
  BP is recorded at or after that moment; only the latest due check is shown.
- "Minimum observation": while observe_min has not passed since the first dose, with the
  time remaining (record field `due_ms`; the text is refreshed each minute).
- "BP check due before discharge": from observe_min − tolerance until a BP is recorded.
- "Ready to discharge": observation complete and the pre-discharge BP recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model.config import Config, ReminderProtocol

from .model import Desired

ROUTE_PROTOCOL = {"intranasal": "esketamine", "iv": "iv-ketamine", "im": "iv-ketamine"}
MIN_MS = 60_000


# The reminder text says when a check is late; the archived review counts overdue checks
# from that text (alert events carry no other field for it), so the word lives here once.
OVERDUE_WORD = "overdue"

def protocol_for(session: Mapping[str, str], cfg: Config) -> tuple[str, ReminderProtocol]:
    """The session's reminder protocol: its own, else the route's default, else built-in defaults."""
    name = session.get("protocol") or ROUTE_PROTOCOL.get(session.get("route", ""), "esketamine")
    proto = cfg.alerts.protocols.get(name)
    if proto is None:
        fallback = ROUTE_PROTOCOL.get(session.get("route", ""), "esketamine")
        proto = cfg.alerts.protocols.get(fallback) or ReminderProtocol()
    return name, proto


def _int(text: Any) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def _clock(ms: int, tz: str) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%H:%M")


def reminder_conditions(session: Mapping[str, str] | None, events: Sequence[Mapping[str, str]],
                        now_ms: int, cfg: Config, room: str = "") -> dict[str, Desired]:
    """Reminders holding at `now_ms` for an open session (keys "r:<name>"); {} without one."""
    if not session or session.get("state", "open") != "open":
        return {}
    sid = session.get("id", "")
    started_ms = _int(session.get("started_ms")) or now_ms
    bp_times = sorted(t for t in (_int(e.get("ts")) for e in events if e.get("type") == "bp") if t is not None)
    dose_times = [t for t in (_int(e.get("ts")) for e in events if e.get("type") == "dose") if t is not None]
    first_dose = _int(session.get("first_dose_ms")) or (min(dose_times) if dose_times else None)
    name, proto = protocol_for(session, cfg)
    prio = cfg.alerts.reminder_priority
    tol_ms = int(proto.bp_tolerance_min * MIN_MS)
    out: dict[str, Desired] = {}

    def bp_since(t: int) -> bool:
        return any(b >= t for b in bp_times)

    def add(cond: str, msg: str, due_ms: int, **extra: Any) -> None:
        out[f"r:{cond}"] = Desired(key=f"r:{cond}", cond=cond, kind="reminder", priority=prio, message=msg,
                                   start_ms=due_ms, extra=tuple({"session": sid, "due_ms": due_ms, **extra}.items()))

    if first_dose is None:
        if not bp_since(started_ms):
            add("bp-pre", "BP check due before dosing", started_ms)
        return out

    checks = sorted(proto.bp_checks_min)
    starts = [first_dose + int(m * MIN_MS) - tol_ms for m in checks]
    for i, m in enumerate(checks):
        start, due = starts[i], first_dose + int(m * MIN_MS)
        later_started = i + 1 < len(checks) and now_ms >= starts[i + 1]
        if now_ms >= start and not later_started and not bp_since(start):
            late_min = (now_ms - due) // MIN_MS
            when = f", {OVERDUE_WORD} {late_min} min" if late_min >= 1 else ""
            add(f"bp-{m:g}min", f"BP check due ({m:g} min after dose{when})", due, protocol=name)

    observe_end = first_dose + int(proto.observe_min * MIN_MS)
    if now_ms < observe_end:
        left_min = -(-(observe_end - now_ms) // MIN_MS)  # ceil: "1 min remaining" until the end
        add("observe", f"Minimum observation: {left_min} min remaining (until "
                       f"{_clock(observe_end, cfg.clinic.timezone)})", observe_end,
            protocol=name)
    discharge_start = observe_end - tol_ms
    if now_ms >= discharge_start:
        if not bp_since(discharge_start):
            add("bp-discharge", "BP check due before discharge", observe_end, protocol=name)
        elif now_ms >= observe_end:
            add("discharge-ready", f"Minimum observation ({proto.observe_min:g} min) complete: "
                                   "ready to discharge when stable", observe_end, protocol=name)
    return out

