"""The one wall clock: `now_ms()`, the `Clock` type for injecting it, and `ManualClock` for tests.

Everything that stamps a time (readings, alert events, sessions, audit, heartbeats) reads it
here, in ms since the epoch (UTC). Code that must be testable without sleeping takes a
`Clock` (default `now_ms`) or a `now_ms: int` argument; tests pass a `ManualClock` and move
it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""A zero-argument callable returning ms since the epoch (`now_ms`, or a `ManualClock`)."""


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (UTC)."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that stands still until it is set or advanced (tests, simulations)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, delta_ms: int) -> int:
        """Move the clock forward by `delta_ms`; returns the new time."""
        self.ms += delta_ms
        return self.ms
