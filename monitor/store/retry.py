"""Role loops that survive Redis: back off, keep going, and say so once per episode.

Every long-running loop outside ingest's writer (the alert engine, its archive top-up,
outbound and EHR loops, the dashboard's push loop) meets the same faults: Redis unreachable,
and Redis *answering with an error* — out of memory (`OOM`, writes refused), a read-only
replica after a failover (`READONLY`, and `UNBLOCKED` for a blocked XREAD), loading its
dataset (`LOADING`), blocked by a script (`BUSY`), credentials (`NOAUTH`/`WRONGPASS`). None
of them may end the loop: it waits (`Backoff`), tries again, and logs the first failure of
an episode, a reminder while it lasts and the recovery (`Episode`) — not one line per try.

`REDIS_ERRORS` is what such a loop catches around its Redis calls: every Redis error
(`redis.RedisError` covers the error replies and redis-py's own connection errors) and the
socket errors of `REDIS_DOWN`. `cause(exc)` words one for people and logs.

`keep_running()` runs a loop function in a thread that never ends before `stop`: anything
unexpected it raises (a bug, a malformed record) is logged with its traceback — rate-limited
— and the function is started again after a backoff, so a background loop cannot die
silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from monitor.store.redis_conn import REDIS_DOWN
from monitor.store.redis_faults import REDIS_FAILURES, REPLY_WORDS, error_code
from monitor.store.redis_faults import reply_text as redis_reply_text

REDIS_ERRORS: tuple[type[BaseException], ...] = (*REDIS_DOWN, *REDIS_FAILURES)
"""Everything a Redis call can raise: no answer (unreachable, timeout) or an error reply."""

# Replies redis-py turns into connection errors (and strips the word from): the others it
# maps to classes of its own are named by redis_faults.error_code.
_CLASS_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (redis.exceptions.BusyLoadingError, "LOADING"),
    (redis.exceptions.AuthenticationError, "NOAUTH"),
)


def reply_code(exc: BaseException) -> str:
    """The first word of a Redis error reply ("OOM", "READONLY", "LOADING", "NOAUTH" …), or ""
    (pure; the writer's `redis_faults.error_code`, plus the replies redis-py turns into
    connection errors: LOADING and refused credentials)."""
    for cls, code in _CLASS_WORDS:
        if isinstance(exc, cls):
            return code
    return error_code(exc)


def reply_text(exc: BaseException) -> str:
    """The error as Redis (or the socket) said it, with its code, at most 200 characters (pure)."""
    text = (redis_reply_text(exc) or type(exc).__name__)[:200]
    code = reply_code(exc)
    return text if not code or text.startswith(code) else f"{code} {text}"


def words(exc: BaseException) -> str:
    """What a Redis failure means, in a few words — the same words as the writer's causes
    (`redis_faults.REPLY_WORDS`): "Redis out of memory" (pure)."""
    code = reply_code(exc)
    if code in REPLY_WORDS:
        return REPLY_WORDS[code]
    if isinstance(exc, (redis.TimeoutError, TimeoutError)):
        return "Redis not answering in time"
    if isinstance(exc, REDIS_DOWN):
        return "Redis unreachable"
    return f"Redis error ({type(exc).__name__})"


def cause(exc: BaseException) -> str:
    """Words and the error itself: "Redis out of memory (OOM command not allowed …)" (pure)."""
    return f"{words(exc)} ({reply_text(exc)})"


@dataclass
class Backoff:
    """Exponential waits between retries: `start_s`, doubling up to `max_s` (pure)."""

    start_s: float = 0.1
    max_s: float = 2.0
    _next_s: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The wait before the next try (and double the one after)."""
        wait = self._next_s or self.start_s
        self._next_s = min(wait * 2, self.max_s)
        return wait

    def reset(self) -> None:
        """A try succeeded: the next failure waits `start_s` again."""
        self._next_s = 0.0


class Episode:
    """One loop's failure episodes, logged once each: the first failure (warning), each new
    kind of failure within it, a reminder every `remind_s` while it lasts, and the recovery
    (info) — never one line per try, even when two errors alternate (READONLY, UNBLOCKED)."""

    def __init__(self, what: str, logger: logging.Logger, *, remind_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.log, self.remind_s, self.clock = what, logger, remind_s, clock
        self.since: float | None = None
        self.cause = ""
        self.failures = 0
        self._seen: set[str] = set()
        self._last_log = 0.0

    @property
    def failing(self) -> bool:
        """True from the first failure until a success."""
        return self.since is not None

    def failed(self, why: str | BaseException, retry_s: float | None = None, *, kind: str | None = None) -> bool:
        """Record one failure; True when it was logged (first, a new kind, or a reminder).

        The kind of a Redis error is what it means (`words`); of a text, the text itself
        unless `kind` groups texts that differ in detail."""
        if isinstance(why, BaseException):
            kind, text = kind or words(why), cause(why)
        else:
            kind, text = kind or why, why
        now = self.clock()
        self.failures += 1
        self.cause = text
        again = f"; retrying in {retry_s:.1f} s" if retry_s is not None else "; retrying"
        if self.since is None:
            self.since, self._last_log, self.failures, self._seen = now, now, 1, {kind}
            self.log.warning("%s: %s%s", self.what, text, again)
            return True
        if kind not in self._seen or now - self._last_log >= self.remind_s:
            self._seen.add(kind)
            self._last_log = now
            self.log.warning("%s: still failing after %.0f s (%d tries): %s%s", self.what, now - self.since,
                             self.failures, text, again)
            return True
        return False

    def recovered(self) -> bool:
        """Record a success; True (and logged) when it ended an episode."""
        if self.since is None:
            return False
        self.log.info("%s: working again after %.1f s (%d failed tries; last: %s)", self.what,
                      self.clock() - self.since, self.failures, self.cause)
        self.since, self.cause, self.failures, self._seen = None, "", 0, set()
        return True

    def failing_for(self) -> float:
        """Seconds since the episode began (0 when not failing)."""
        return 0.0 if self.since is None else self.clock() - self.since


def keep_running(name: str, body: Callable[[], None], stop: threading.Event, logger: logging.Logger, *,
                 backoff: Backoff | None = None) -> threading.Thread:
    """Run `body()` in a daemon thread until `stop` is set, starting it again whenever it raises.

    `body` is a loop that returns only when `stop` is set and handles the failures it expects
    (Redis, the archive) itself; this catches the rest, so the thread never dies silently.
    """
    wait = backoff or Backoff(1.0, 30.0)

    def run() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                body()
            except Exception:  # noqa: BLE001 - logged with its traceback and restarted: the loop must not die
                if time.monotonic() - started > 60:
                    wait.reset()  # it had been running well: a new failure, not the same one again
                delay = wait.next()
                logger.exception("%s stopped on an unexpected error; starting it again in %.0f s", name, delay)
                stop.wait(delay)
                continue
            if not stop.is_set():  # a loop that returns before its stop is a bug too
                delay = wait.next()
                logger.error("%s returned before it was stopped; starting it again in %.0f s", name, delay)
                stop.wait(delay)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
