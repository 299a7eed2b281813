"""monitor.model.ratelimit: one event per key per interval, and every held-back event counted."""

from __future__ import annotations

from monitor.model.ratelimit import RateLimiter


def test_one_per_interval_and_counts():
    rl = RateLimiter(interval_s=1.0)
    assert rl.allow(("t", "invalid_json"), 0.0) == (True, 0)
    assert rl.allow(("t", "invalid_json"), 0.1) == (False, 0)
    assert rl.allow(("t", "invalid_json"), 0.5) == (False, 0)
    assert rl.allow(("t", "bad_ts"), 0.5) == (True, 0)  # other reason: own budget
    assert rl.allow(("u", "invalid_json"), 0.5) == (True, 0)  # other source: own budget
    assert rl.held == 2
    assert rl.allow(("t", "invalid_json"), 1.0) == (True, 2)  # the next one carries the count
    assert rl.held == 0


def test_drain_reports_quiet_keys_once():
    rl = RateLimiter(interval_s=1.0, forget_after_s=5.0)
    rl.allow("k", 0.0)
    for i in range(5):
        rl.allow("k", 0.1 + i * 0.1)
    assert rl.drain(0.9) == []  # interval not over yet
    assert rl.drain(1.0) == [("k", 5)]
    assert rl.drain(2.5) == []
    assert rl.allow("k", 2.5) == (True, 0)
    rl.drain(10.0)
    assert rl._slots == {}  # idle keys forgotten
