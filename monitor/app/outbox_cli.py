"""`vitalwatch outbox list|resend` — the outbound queues (HL7 to the EHR, FHIR, pages) for clinic IT.

`list` prints each destination's state (waiting, delivered, refused, last error) and its
refused messages; `resend --dest D MESSAGE_ID` queues a refused message again (audited as
`outbox.resend`). The same as the dashboard's /outbox page.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from monitor.accounts import audit
from monitor.model.config import Config
from monitor.sessions.outbound import destinations
from monitor.store import redis_types
from monitor.store.outbox import Outbox
from monitor.store.redis_conn import REDIS_DOWN, connect
from monitor.store.runtime import resolve

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Dispatch `outbox list` / `outbox resend`."""
    ep = resolve(cfg)
    client = connect(ep.redis_url)
    tz = ZoneInfo(cfg.clinic.timezone)
    try:
        if args.action == "list":
            known = set(redis_types.members(list(client.smembers(ep.keys.outbox_destinations))))
            dests = destinations(cfg) + sorted(known - set(destinations(cfg)))
            if not dests:
                print("outbound is off: no [hl7.outbound] url and no [fhir] url")
            for d in dests:
                box = Outbox(client, ep.keys, d)
                st = box.state()
                print(f"{d}: {box.pending_count()} waiting, {st.get('delivered', '0')} delivered, "
                      f"{st.get('refused', '0')} refused"
                      + (f"; retrying: {st['last_error']} (attempt {st.get('attempts')})"
                         if st.get("last_error") and int(st.get("attempts") or 0) else ""))
                for f in box.failed():
                    when = datetime.fromtimestamp(f.failed_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")
                    what = "alert" if f.message.kind.startswith("alert-") else "session"
                    print(f"  REFUSED {f.message.id}  {when}  {what} {f.message.key or '-'}  "
                          f"{f.message.meta.get('control_id', '')}  {f.reason}")
            return EXIT_OK
        box = Outbox(client, ep.keys, args.dest)
        try:
            new_id = box.resend(args.message)
        except KeyError:
            print(f"vitalwatch outbox resend: no refused message {args.message!r} for {args.dest}", file=sys.stderr)
            return EXIT_USAGE
        audit.record(client, ep.keys, args.user, "outbox.resend", destination=args.dest, message=args.message,
                     new_message=new_id)
        print(f"{args.message} queued again as {new_id}")
        return EXIT_OK
    except BrokenPipeError:
        raise  # our stdout was closed (`… | head`): not Redis; main() ends quietly
    except REDIS_DOWN as e:
        print(f"vitalwatch outbox: Redis unreachable: {e}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()
