"""Rate limiting of repetitive events (rejects) that never loses count of what it held back.

A device spewing garbage must not flood the `rejects` stream, yet nothing may disappear
silently: `allow()` lets at most one event per key through per interval and reports how many
were held back before it; `drain()` hands out the counts of keys that went quiet, so the
caller can write one summary entry ("+N more suppressed"). Time is passed in (no clock here).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


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

    @property
    def held(self) -> int:
        """Events held back and not yet reported."""
        return sum(s.held for s in self._slots.values())
