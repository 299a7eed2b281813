"""Rate limiting of repetitive events (rejects) that never loses count of what it held back.

A device spewing garbage must not flood the `rejects` stream, yet nothing may disappear
silently: `allow()` lets at most one event per key through per interval and reports how many
were held back before it; `drain()` hands out the counts of keys that went quiet, so the
caller can write one summary entry ("+N more suppressed"). Time is passed in (no clock here).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from monitor.model.readings import Refusal


@dataclass
class _Slot:
    last_s: float
    held: int = 0


class RateLimiter:
    """At most one event per key per `interval_s`; counts the events held back."""

    def __init__(self, interval_s: float = 1.0, forget_after_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.forget_after_s = forget_after_s
        self._slots: dict[Hashable, _Slot] = {}

    def allow(self, key: Hashable, now_s: float) -> tuple[bool, int]:
        """(whether this event may pass, how many of this key were held back before it)."""
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = _Slot(now_s)
            return True, 0
        if now_s - slot.last_s >= self.interval_s:
            held, slot.held, slot.last_s = slot.held, 0, now_s
            return True, held
        slot.held += 1
        return False, 0

    def drain(self, now_s: float) -> list[tuple[Hashable, int]]:
        """Keys whose interval has passed with events held back, and how many; resets them.

        Also forgets keys idle for `forget_after_s` (bounded memory under many sources).
        """
        out: list[tuple[Hashable, int]] = []
        for key, slot in list(self._slots.items()):
            idle_s = now_s - slot.last_s
            if slot.held and idle_s >= self.interval_s:
                out.append((key, slot.held))
                slot.held, slot.last_s = 0, now_s
            elif not slot.held and idle_s >= self.forget_after_s:
                del self._slots[key]
        return out

    def flush(self) -> list[tuple[Hashable, int]]:
        """Every key with events held back, and how many, whatever the interval; resets them
        (on disconnect and shutdown, so nothing held is left unreported)."""
        out = [(key, slot.held) for key, slot in self._slots.items() if slot.held]
        for slot in self._slots.values():
            slot.held = 0
        return out

    @property
    def held(self) -> int:
        """Events held back and not yet reported."""
        return sum(s.held for s in self._slots.values())


class RejectLimiter:
    """A RateLimiter per refusal reason for one source: held refusals come back as one
    summary Refusal ("74 refusals (bad_checksum) in the last 1.0 s, rate-limited; last: …")."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._rate = RateLimiter(interval_s)
        self._held: dict[str, tuple[float, Refusal]] = {}  # reason → (first held at, latest)

    def offer(self, ref: Refusal, now_s: float) -> Refusal | None:
        """The refusal to write now (maybe a summary), or None if it is held for later."""
        allowed, held = self._rate.allow(ref.reason, now_s)
        if not allowed:
            first_s, _ = self._held.get(ref.reason, (now_s, ref))
            self._held[ref.reason] = (first_s, ref)
            return None
        first_s, _ = self._held.pop(ref.reason, (now_s, ref))
        return ref if not held else _summary(held + 1, first_s, ref, now_s)

    def due(self, now_s: float) -> list[Refusal]:
        """Summaries of reasons whose interval has passed with refusals held."""
        return [_summary(n, *self._held.pop(str(reason)), now_s) for reason, n in self._rate.drain(now_s)]

    def drain(self, now_s: float) -> list[Refusal]:
        """Every held summary, regardless of interval (on disconnect and shutdown)."""
        return [_summary(n, *self._held.pop(str(reason)), now_s) for reason, n in self._rate.flush()]


def _summary(count: int, first_s: float, last: Refusal, now_s: float) -> Refusal:
    if count == 1:
        return last
    detail = (f"{count} refusals ({last.reason}) in the last {max(now_s - first_s, 0.0):.1f} s, "
              f"rate-limited; last: {last.detail}")
    return Refusal(last.source, last.reason, detail, last.raw)
