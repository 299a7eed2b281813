"""Late data for archived sessions: a background loop in `vitalwatch alerts` processes.

`session end` archives at once, but a reading measured before the end can reach Redis
later (ingest batching; an MQTT device forwarding messages it held during a broker outage).
Every minute one process (a Redis lock with TTL decides which) copies such late entries of
sessions archived within `archive.late_window_min` into the archive, and new audit entries
too (then trims the audit stream below what the archive holds); it also sets the trim
floors (`keys.trim_floor`): the streams' writers never trim a room's readings (nor alert
events) from the start of a session the archive has not taken yet. It runs in its own
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
FLOOR_SLACK_MS = 10 * 60_000  # readings labelled a little before a session's start belong to it


def top_up_once(client, keys: Keys, cfg: Config, owner: str, now_ms: int) -> int | None:  # noqa: ANN001
    """Run one top-up if this process wins the minute's lock; readings added, or None.

    The winner also archives new audit entries and trims the audit stream below what the
    archive holds (beyond `redis.retention_hours`), so the stream stays bounded even when
    no session ends for a long time.
    """
    if not client.set(keys.archive_topup_lock, owner, nx=True, px=int(EVERY_S * 1000 * 0.9)):
        return None
    update_trim_floors(client, keys, now_ms, int(cfg.redis.retention_hours * 3_600_000))
    archive_audit(client, keys, open_archive(cfg.archive.url),
                  retention_ms=int(cfg.redis.retention_hours * 3_600_000))
    if cfg.archive.late_window_min <= 0:
        return None
    return top_up_recent(client, keys, cfg, now_ms, int(cfg.archive.late_window_min * 60_000))


def update_trim_floors(client, keys: Keys, now_ms: int, retention_ms: int) -> dict[str, int]:  # noqa: ANN001
    """Set the trim floors (`keys.trim_floor`) from the sessions not archived yet: a room's
    vitals stream and the alerts stream are not trimmed below the start (less FLOOR_SLACK_MS)
    of the oldest such session, so the archive takes them before retention could. Returns
    the floors; logs a warning for a floor already past the retention (memory held back)."""
    sids = [s.decode() if isinstance(s, bytes) else str(s) for s in client.zrange(keys.sessions_index, 0, -1)]
    pipe = client.pipeline(transaction=False)
    for sid in sids:
        pipe.hmget(keys.session(sid), ["state", "room", "started_ms"])
    floors: dict[str, int] = {}
    for sid, (state, room, started) in zip(sids, pipe.execute() if sids else [], strict=True):
        state, room = _text(state), _text(room)
        if state in ("", "archived") or not room or not started:
            continue  # archived, or gone (its TTL ran out)
        at = int(_text(started)) - FLOOR_SLACK_MS
        for key in (keys.vitals(room), keys.alerts):
            floors[key] = min(floors.get(key, at), at)
        if at < now_ms - retention_ms:
            log.warning("session %s (%s) is not archived %.0f h after it began: room %s's readings are kept "
                        "past the retention until it is", sid, state, (now_ms - at) / 3_600_000, room)
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.trim_floor)
    if floors:
        pipe.hset(keys.trim_floor, mapping={k: str(v) for k, v in floors.items()})
    pipe.execute()
    return floors


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else "" if v is None else str(v)


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
