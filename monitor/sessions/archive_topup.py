"""Late data for archived sessions: a background loop in `vitalwatch alerts` processes.

`session end` archives at once, but a reading measured before the end can reach Redis
later (ingest batching; an MQTT device forwarding messages it held during a broker outage).
Every minute one process (a Redis lock with TTL decides which) copies such late entries of
sessions archived within `archive.late_window_min` into the archive, and new audit entries
too (then trims the audit stream below what the archive holds). It runs in its own
thread with its own Redis client, so archive I/O never delays alarm evaluation.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.sessions.archive import archive_audit, open_archive, top_up_recent
from monitor.store.redis_conn import connect
from monitor.store.retry import REDIS_ERRORS, Episode, keep_running

log = logging.getLogger(__name__)

EVERY_S = 60.0


def top_up_once(client, keys: Keys, cfg: Config, owner: str, now_ms: int) -> int | None:  # noqa: ANN001
    """Run one top-up if this process wins the minute's lock; readings added, or None.

    The winner also archives new audit entries and trims the audit stream below what the
    archive holds (beyond `redis.retention_hours`), so the stream stays bounded even when
    no session ends for a long time.
    """
    if not client.set(keys.archive_topup_lock, owner, nx=True, px=int(EVERY_S * 1000 * 0.9)):
        return None
    archive_audit(client, keys, open_archive(cfg.archive.url),
                  retention_ms=int(cfg.redis.retention_hours * 3_600_000))
    if cfg.archive.late_window_min <= 0:
        return None
    return top_up_recent(client, keys, cfg, now_ms, int(cfg.archive.late_window_min * 60_000))


def start(cfg: Config, redis_url: str, keys: Keys, owner: str, stop: threading.Event) -> threading.Thread:
    """Start the top-up loop; it ends when `stop` is set.

    A Redis failure (unreachable, or an error reply such as OOM or READONLY) or an archive
    failure skips one round, logged once per episode; the thread itself never dies
    (`keep_running`).
    """
    def loop() -> None:
        client = connect(redis_url)
        redis_down, archive_down = Episode("archive top-up (Redis)", log), Episode("archive top-up (archive)", log)
        try:
            while not stop.wait(EVERY_S):
                try:
                    top_up_once(client, keys, cfg, owner, now_ms())
                except REDIS_ERRORS as e:
                    redis_down.failed(e, EVERY_S)
                    continue
                except sa.exc.SQLAlchemyError as e:
                    archive_down.failed(f"archive unavailable: {e}", EVERY_S)
                    continue
                redis_down.recovered()
                archive_down.recovered()
        finally:
            client.close()

    return keep_running("archive-topup", loop, stop, log)
