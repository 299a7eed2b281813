"""`vitalwatch session start|dose|bp|note|observe|end|list|limit` — thin wrapper over monitor.sessions.lifecycle.

Exit codes: 0 ok; 2 bad usage (unknown session or room, room busy, session ended, bad
values); 1 runtime failure (Redis or the archive unreachable). `start` prints the new
session id alone on the last line of stdout; `end` returns once the session is archived.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import redis
import sqlalchemy as sa

from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.model.redact import redact_text, redact_url
from monitor.sessions import lifecycle as sessions
from monitor.sessions import limits as session_limits
from monitor.store import replicas
from monitor.store.redis_conn import REDIS_DOWN, connect
from monitor.store.runtime import resolve

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def parse_at(text: str, tz_name: str) -> int:
    """`--at ISO` → ms since epoch; a time without offset is the clinic's local time."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise sessions.InvalidEvent(f"--at {text!r} is not an ISO-8601 time (e.g. 2026-03-01T10:15:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz_name))
    return int(dt.timestamp() * 1000)


def _fmt_ms(ms: object, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz).strftime("%Y-%m-%d %H:%M") if ms else "—"  # type: ignore[call-overload]


def _list(client: redis.Redis, keys: object, cfg: Config) -> None:
    tz = ZoneInfo(cfg.clinic.timezone)
    rows = {h["id"]: h for h in sessions.list_sessions(client, keys, limit=100)}  # type: ignore[arg-type]
    try:
        from monitor.sessions.archive import list_sessions, open_archive

        for h in list_sessions(open_archive(cfg.archive.url), clinic=cfg.clinic.id, limit=100):
            rows.setdefault(h["id"], h)
    except sa.exc.SQLAlchemyError as e:
        print(f"(archive unavailable: {e.__class__.__name__}; showing Redis only)", file=sys.stderr)
    print(f"{'SESSION':<34} {'ROOM':<10} {'PATIENT':<14} {'ROUTE':<10} {'STATE':<9} {'STARTED':<16} {'ENDED':<16} SIGNED")
    for h in sorted(rows.values(), key=lambda h: int(h["started_ms"]), reverse=True):
        print(f"{h['id']:<34} {h.get('room', ''):<10} {h.get('patient', ''):<14} {h.get('route') or '':<10} "
              f"{h.get('state') or '':<9} {_fmt_ms(h.get('started_ms'), tz):<16} {_fmt_ms(h.get('ended_ms'), tz):<16} "
              f"{h.get('signed_by') or ''}")


def _limit(client: redis.Redis, keys: Keys, cfg: Config, args: argparse.Namespace, user: str) -> None:
    """`session limit`: set or clear one metric's override, then print the limits now in force."""
    stored = session_limits.apply_limit(client, keys, cfg, args.session, user, args.metric, low=args.low,
                                        high=args.high, priority=args.priority, delay_s=args.delay_s,
                                        clear=args.clear)
    if stored is None:
        print(f"{args.session}: no session override for {args.metric}; nothing to clear")
    elif not stored:
        print(f"{args.session}: session override for {args.metric} cleared")
    else:
        print(f"{args.session}: session override for {args.metric} is now: "
              + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(stored.items()))
              + " (other fields from the room's limits)")
    room = sessions.get_session(client, keys, args.session)["room"]  # type: ignore[index]
    eff = session_limits.effective_limits(cfg, room, session_limits.read_raw(client, keys, args.session))
    print("in force: " + session_limits.describe(args.metric, eff.get(args.metric)))


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Dispatch one `session` action."""
    try:
        ep = resolve(cfg)
        client = connect(ep.redis_url)
        keys = ep.keys
        a, user = args.action, args.user
        # which master takes the write: a confirmation from another one would mean nothing
        before = replicas.server_id(client) if cfg.redis.min_replicas and a != "list" else ""
        if a == "start":
            sid = sessions.start_session(client, keys, cfg, args.room, args.patient, args.route, user,
                                         dose_mg=args.dose_mg, weight_kg=args.weight_kg, protocol=args.protocol)
            room = cfg.room(args.room)
            print(f"devices confirmed for {args.room}: " + (", ".join(d.id for d in room.devices) or "none"))
            print(sid)
        elif a == "dose":
            at_ms = parse_at(args.at, cfg.clinic.timezone) if args.at else None
            sessions.record_dose(client, keys, args.session, user, at_ms=at_ms, dose_mg=args.dose_mg, note=args.note)
            print(f"dose recorded for {args.session}")
        elif a == "bp":
            sessions.record_bp(client, keys, args.session, user, args.sbp, args.dbp)
            print(f"BP {args.sbp}/{args.dbp} recorded for {args.session}")
        elif a == "note":
            sessions.add_note(client, keys, args.session, user, args.text)
            print(f"note recorded for {args.session}")
        elif a == "observe":
            sessions.observe(client, keys, args.session, user, args.observation)
            print(f"{args.observation.replace('_', ' ')} recorded for {args.session}")
        elif a == "end":
            res = sessions.end_session(client, keys, cfg, args.session, user)
            print(f"{args.session} ended and archived: {res.get('readings', '?')} readings, "
                  f"{res.get('alert_events', '?')} alert events ({res.get('state')})")
        elif a == "list":
            _list(client, keys, cfg)
        elif a == "limit":
            _limit(client, keys, cfg, args, user)
        else:  # argparse restricts the choices; keep the type checker honest
            print(f"vitalwatch session: unknown action {a!r}", file=sys.stderr)
            return EXIT_USAGE
        if a != "list":
            try:
                warn = replicas.confirm(client, keys, cfg.redis.min_replicas, since=before)
            except (redis.RedisError, OSError) as e:  # saved already: do not report a failure
                warn = f"saved, but whether a replica holds it is unknown ({e.__class__.__name__})"
            if warn:
                print(f"vitalwatch session {a}: warning: {warn}", file=sys.stderr)
        return EXIT_OK
    except (sessions.UnknownSession, sessions.UnknownRoom) as e:
        print(f"vitalwatch session {args.action}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except sessions.SessionError as e:
        print(f"vitalwatch session {args.action}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # our stdout was closed (`… | head`): not Redis; main() ends quietly
    except REDIS_DOWN as e:
        print(f"vitalwatch session {args.action}: Redis unreachable: {e}", file=sys.stderr)
        return EXIT_FAIL
    except sa.exc.SQLAlchemyError as e:
        print(f"vitalwatch session {args.action}: archive failed ({redact_url(cfg.archive.url)}): "
              f"{e.__class__.__name__}: {redact_text(str(e))}; "
              "the session is ended — rerun `vitalwatch session end` to resume archiving", file=sys.stderr)
        return EXIT_FAIL
