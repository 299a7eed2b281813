"""`vitalwatch alert list|ack|reset ID` — the alarm actions from a terminal (a pager gateway,
a script, IT on a shift without a screen). The same `monitor.alarms.actions` functions as the
dashboard's buttons and the HTTP API: the event in the alerts stream, the record, the audit
entry under `--user`."""

from __future__ import annotations

import argparse
import sys

from monitor.alarms import actions
from monitor.alarms.clinic import CLINIC
from monitor.alarms.text import alarm_line
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.store.redis_conn import REDIS_DOWN, connect
from monitor.store.runtime import redis_url_for

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def run(args: argparse.Namespace, cfg: Config) -> int:
    """list: active alarms as the screens show them; ack/reset: one alarm, as `--user`.
    Exit 2 for an unknown alert or a reset while its condition is present."""
    redis_url = redis_url_for(cfg)
    client = connect(redis_url)
    keys = Keys(cfg.clinic.id)
    names = {r.id: r.name or r.id for r in cfg.rooms}
    try:
        if args.action == "list":
            now = now_ms()
            for a in actions.active_alerts(client, keys, [*names, CLINIC]):
                if a.get("kind") == "reminder":
                    continue
                who = f" · acknowledged by {a['acknowledged_by']}" if a.get("acknowledged_by") else ""
                print(f"{a['alert']}\t{alarm_line(a, names.get(a['room'], ''), now_ms=now)}{who}")
            return EXIT_OK
        do = actions.acknowledge if args.action == "ack" else actions.reset
        rec = do(client, keys, args.alert, args.user)
        print(f"{args.action} {args.alert}: {rec.get('state')} (by {args.user})")
        return EXIT_OK
    except KeyError:
        print(f"vitalwatch alert {args.action}: no active alert {args.alert!r}", file=sys.stderr)
        return EXIT_USAGE
    except actions.NotLatched as e:
        print(f"vitalwatch alert reset: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # our stdout was closed (`… | head`): not Redis; main() ends quietly
    except REDIS_DOWN as e:
        print(f"vitalwatch alert {args.action}: Redis unreachable at {redis_url}: {e}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()
