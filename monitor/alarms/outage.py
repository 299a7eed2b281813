"""When an alert worker's Redis fails, monitoring has stopped: say so once, and say when it resumes (pure).

A worker meets Redis failures in its run loop (engine.py `Worker.run`). Those that concern the
whole server — writes refused (out of memory, a read-only replica after a failover, a disk it
cannot persist to), loading, blocked by a script — mean no reading is being stored; Redis
unreachable (or not answering) means this worker cannot evaluate alarms. Either way nothing
can be written to Redis about it, so the page goes out directly (outbound.DirectPager), not
through the outbox. `OutageTracker` turns the failures into at most two messages per
episode: the page "NOT MONITORING …" once the failure has lasted `page_after_ms`, and the
follow-up "monitoring resumed" when a step succeeds again. The finished `Outage` is then
recorded as a clinic-wide technical alarm (`record`: room "*", the affected rooms, raised
with the outage's onset and cleared at once, by the holder of the clinic lease) — the alarm
id is the page's, so pager and review name the same episode. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from monitor.model.liveness import SERVER_WIDE

from .clinic import CLINIC
from .model import AlertEvent, Desired, TechRule, alert_id

PAGE_AFTER_MS = 3000  # a failure this long is an outage worth a page (blips are not)
COND_NOT_STORED = "not_stored"  # technical condition (config): readings not being stored
COND_NO_REDIS = "engine"  # technical condition (config): rooms no alert worker evaluates
RECORD_SCOPE = "c:outage:"  # condition keys of recorded outages in the clinic's alarm state


@dataclass(frozen=True, slots=True)
class Outage:
    """One episode of Redis failing for this worker."""

    since_ms: int
    code: str  # Redis's reply code ("OOM", "READONLY"…), "" for unreachable / timeout
    words: str  # what it means ("Redis out of memory")
    detail: str = ""  # Redis's reply, when INFO did not say it better
    paged: bool = False
    until_ms: int | None = None

    @property
    def not_stored(self) -> bool:
        """True when no reading can be stored (a server-wide refusal), not only this worker cut off."""
        return self.code in SERVER_WIDE

    @property
    def cond(self) -> str:
        """The technical condition this outage is."""
        return COND_NOT_STORED if self.not_stored else COND_NO_REDIS

    def sentence(self, owner: str) -> str:
        """The cause in words, for the page and the record. `detail` is INFO's account (it
        starts with the same words: "Redis out of memory (… bytes used; OOM)") or Redis's reply."""
        why = self.words + (f" ({self.detail})" if self.detail else "")
        if self.not_stored:
            return f"readings are not being stored: {why}"
        return f"alarms are not being evaluated: {why} (alert worker {owner})"


def stopped_event(o: Outage, owner: str, rooms: Sequence[str], now_ms: int) -> AlertEvent:
    """The page: NOT MONITORING, clinic-wide, high priority (pure)."""
    return AlertEvent(now_ms, CLINIC, alert_id(CLINIC, "", o.cond, o.since_ms), "raised", "technical", "high",
                      message=f"NOT MONITORING ({len(rooms)} rooms): {o.sentence(owner)}")


def resumed_event(o: Outage, owner: str, rooms: Sequence[str], now_ms: int) -> AlertEvent:
    """Its follow-up once Redis answers this worker again (pure)."""
    lasted_s = max(0, now_ms - o.since_ms) // 1000
    return AlertEvent(now_ms, CLINIC, alert_id(CLINIC, "", o.cond, o.since_ms), "cleared", "technical", "high",
                      message=f"Monitoring resumed after {lasted_s} s ({len(rooms)} rooms): was {o.sentence(owner)}")


def record(o: Outage, owner: str, rooms: Sequence[str], tech: Mapping[str, TechRule]) -> Desired:
    """The clinic-wide alarm that records a finished outage (pure): raise it and clear it in
    one commit (`RECORD_SCOPE` + its onset keeps it apart from live causes)."""
    lasted_s = max(0, (o.until_ms or o.since_ms) - o.since_ms) // 1000
    rule = tech[o.cond]
    message = f"NOT MONITORING for {lasted_s} s ({len(rooms)} rooms): {o.sentence(owner)}"
    cause = "readings not being stored" if o.not_stored else "alarms not evaluated"
    return Desired(key=f"{RECORD_SCOPE}{o.since_ms}", cond=o.cond, kind="technical", priority=rule.priority,
                   message=message, start_ms=o.since_ms, extra=(("rooms", ",".join(rooms)), ("cause", cause)))


class OutageTracker:
    """Follows one worker's Redis failures; see the module docstring."""

    def __init__(self, page_after_ms: int = PAGE_AFTER_MS) -> None:
        self.page_after_ms = page_after_ms
        self.current: Outage | None = None

    def failed(self, code: str, words: str, now_ms: int) -> Outage | None:
        """Record a failure; returns the outage once, when it is time to page."""
        o = self.current
        if o is None:
            o = Outage(now_ms, code, words)
        elif not o.paged and (code in SERVER_WIDE or not o.not_stored):
            # the newest words until paged (then fixed: the follow-up names the same cause);
            # a dropped connection within a refusal (a failover does both) keeps the refusal
            o = replace(o, code=code, words=words)
        self.current = o
        if not o.paged and now_ms - o.since_ms >= self.page_after_ms:
            self.current = replace(o, paged=True)
            return self.current
        return None

    def detail(self, text: str, *, whole: bool = False) -> None:
        """Add Redis's reply to the current outage's words, or (`whole`) replace them with what
        Redis's INFO says — a sentence of its own ("Redis out of memory (… bytes used; OOM)")."""
        if self.current is not None and text:
            self.current = replace(self.current, words=text, detail="") if whole else \
                replace(self.current, detail=text)

    def ok(self, now_ms: int) -> Outage | None:
        """A step succeeded: returns the finished outage when it had been paged (so its
        follow-up is due and it should be recorded); a blip too short to page is forgotten."""
        o, self.current = self.current, None
        if o is None or not o.paged:
            return None
        return replace(o, until_ms=now_ms)
