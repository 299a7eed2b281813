"""Keep a process's worker threads alive: restart any that died, and say so.

Every worker loop in ingest catches what it expects and logs the unexpected, so a thread
should never end before its process stops. If one does anyway (a bug, a `BaseException`
out of a library), monitoring of whatever it served stops silently — unless someone
notices. The watchdog is that someone: `check()` (once a second from ingest's main thread)
restarts each dead worker, logs an error naming it, and counts restarts per worker
(reported with the heartbeat, `restarts` in the storage record: docs/redis-keys.md).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """One watched thread: how to tell it is alive and how to start it again."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], object]


class Watchdog:
    """Restarts dead workers while `stop` is not set; counts restarts per worker name."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.workers: list[Worker] = []
        self.restarts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def watch(self, name: str, alive: Callable[[], bool], restart: Callable[[], object]) -> None:
        """Add a worker to watch."""
        with self._lock:
            self.workers.append(Worker(name, alive, restart))

    def check(self) -> list[str]:
        """Restart every dead worker (not while stopping); returns the names restarted."""
        done = []
        with self._lock:
            workers = list(self.workers)
        for w in workers:
            if self.stop.is_set():
                break
            try:
                if w.alive():
                    continue
                w.restart()
            except Exception:  # noqa: BLE001 - one worker's restart must not stop the others'
                log.exception("worker %s is dead and could not be restarted; trying again in a second", w.name)
                continue
            self.restarts[w.name] += 1
            done.append(w.name)
            log.error("worker thread %s had died: restarted it (%d restart(s) so far)", w.name,
                      self.restarts[w.name])
        return done

    def snapshot(self) -> dict[str, int]:
        """Restarts so far, per worker name."""
        return dict(self.restarts)
