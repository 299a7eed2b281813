"""Device status, held in memory by the adapters and flushed to Redis by one thread.

Supervisors must never stall on Redis (a blackholed server would freeze a device's reads),
so they only update this board; a publisher thread writes it with `monitor.store.status`
every `interval_s` and at once on a state change. While Redis is away, counters keep
adding up in memory and are written when it is back: nothing is lost, only late.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

import redis

from monitor.model.keys import Keys
from monitor.store.redis_faults import REDIS_FAILURES, classify
from monitor.store.status import publish_status

log = logging.getLogger(__name__)


class StatusBoard:
    """Pending status fields, counter increments and deletions per device."""

    def __init__(self, client: redis.Redis, keys: Keys, interval_s: float = 0.5) -> None:
        self.client = client
        self.keys = keys
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._fields: dict[str, dict[str, str | int | float]] = defaultdict(dict)
        self._counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._deleted: dict[str, set[str]] = defaultdict(set)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._down = ""  # why the last write failed ("" when it did not)
        self._thread: threading.Thread | None = None

    # --- producers ---------------------------------------------------------------
    def set(self, device: str, fields: dict[str, str | int | float], urgent: bool = False) -> None:
        """Set status fields; `urgent` asks for a write now (state changes)."""
        with self._lock:
            self._fields[device].update(fields)
            self._deleted[device].difference_update(fields)
        if urgent:
            self._wake.set()

    def incr(self, device: str, counter: str, n: int = 1) -> None:
        """Add to a counter (`frames`, `reconnects`, `rejects:<reason>`, …)."""
        if n:
            with self._lock:
                self._counters[device][counter] += n

    def delete(self, device: str, *names: str) -> None:
        """Remove fields (e.g. a cleared `nibp_timeout_ms`)."""
        with self._lock:
            for name in names:
                self._fields[device].pop(name, None)
                self._deleted[device].add(name)

    # --- publisher ---------------------------------------------------------------
    def start(self) -> StatusBoard:
        """Start the publisher thread."""
        self._thread = threading.Thread(target=self._run, name="status-board", daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the publisher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def restart(self) -> None:
        """Start a new publisher thread (the last one died)."""
        self.start()

    def stop(self) -> None:
        """Flush once more and stop the publisher."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(10)
        self.flush()

    def flush(self) -> bool:
        """Write everything pending now; False (and kept for later) if Redis is away."""
        with self._lock:
            fields, self._fields = self._fields, defaultdict(dict)
            counters, self._counters = self._counters, defaultdict(lambda: defaultdict(int))
            deleted, self._deleted = self._deleted, defaultdict(set)
        devices = set(fields) | set(counters) | set(deleted)
        if not devices:
            return True
        try:
            pipe = self.client.pipeline(transaction=False)
            for dev in devices:
                if deleted.get(dev):
                    pipe.hdel(self.keys.device_status(dev), *deleted[dev])
                publish_status(pipe, self.keys, dev, fields.get(dev, {}), counters.get(dev, {}))
            pipe.execute()
        except REDIS_FAILURES as e:  # unreachable, or refusing writes (OOM, READONLY…)
            cause = classify(e).cause
            if cause != self._down:
                log.warning("cannot write device status (%s); holding it until Redis takes it", cause)
            self._down = cause
            self._restore(fields, counters, deleted)
            return False
        if self._down:
            log.info("device status written again")
        self._down = ""
        return True

    def _restore(self, fields: dict, counters: dict, deleted: dict) -> None:
        with self._lock:
            for dev, f in fields.items():
                self._fields[dev] = {**f, **self._fields[dev]}  # newer values win
            for dev, c in counters.items():
                for name, n in c.items():
                    self._counters[dev][name] += n
            for dev, d in deleted.items():
                self._deleted[dev] |= d - set(self._fields[dev])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a bug here must not end status publishing
                log.exception("device status publisher failed; retrying")
                self._stop.wait(self.interval_s)
