"""`vitalwatch report --from DATE --to DATE [--room R] --format csv|pdf|research -o FILE`.

The clinic quality report over the sessions started between the two dates (both included,
clinic time zone), optionally in one room: `csv` one row per session, `pdf` the report with
charts, `research` the multi-session research CSV (one row per reading; `--patient` narrows
it to one patient, `--pseudonymize` replaces patient and session ids by keyed pseudonyms —
monitor/sessions/research.py). Reads the archive only. Written to the audit log with the
acting `--user` (Redis when reachable, else the archive's own audit table).

Roles: the dashboard and the API allow the report to directors and admins only. The command
line is an operator's tool: whoever can run it with this config can read the archive
database directly, so it checks no role; it records who ran it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.model import clock
from monitor.model.config import Config

if TYPE_CHECKING:
    from monitor.sessions.archive import Archive

FORMATS = ("csv", "pdf", "research")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The `report` subcommand's arguments (called by monitor/app/cli.py)."""
    r = sub.add_parser("report", parents=parents, help="clinic quality report across sessions (director)")
    r.add_argument("--from", dest="date_from", required=True, metavar="DATE", help="first day, YYYY-MM-DD")
    r.add_argument("--to", dest="date_to", required=True, metavar="DATE", help="last day (included), YYYY-MM-DD")
    r.add_argument("--room", default=None, metavar="R")
    r.add_argument("--format", required=True, choices=FORMATS)
    r.add_argument("--patient", default=None, metavar="ID", help="research format: one patient's sessions only")
    r.add_argument("--pseudonymize", action="store_true",
                   help="research format: replace patient and session ids by keyed pseudonyms")
    r.add_argument("-o", dest="output", required=True, metavar="FILE")


def _write(out: Path, data: bytes) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(out)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Produce the report file; exit 2 for bad dates or an unknown room, 1 if the archive fails."""
    # imported here, not at the top: `build_parser` imports this module for every command
    import sqlalchemy as sa

    from monitor.sessions import report, report_pdf
    from monitor.sessions.archive import open_archive
    from monitor.sessions.export import record_audit

    try:
        since_ms, until_ms = report.day_range(args.date_from, args.date_to, cfg.clinic.timezone)
    except report.BadRange as e:
        print(f"vitalwatch report: {e}", file=sys.stderr)
        return 2
    if args.room and args.room not in {r.id for r in cfg.rooms}:
        print(f"vitalwatch report: unknown room {args.room!r} (rooms in {cfg.source or 'the config'}: "
              f"{', '.join(r.id for r in cfg.rooms) or 'none'})", file=sys.stderr)
        return 2
    if args.format != "research" and (args.patient or args.pseudonymize):
        print("vitalwatch report: --patient and --pseudonymize apply to --format research only", file=sys.stderr)
        return 2
    out = Path(args.output)
    try:
        arch = open_archive(cfg.archive.url)
        if args.format == "research":
            return _research(args, cfg, arch, since_ms, until_ms, out)
        rep = report.build(arch, cfg, since_ms, until_ms, args.room, clock.now_ms())
    except sa.exc.SQLAlchemyError as e:
        print(f"vitalwatch report: archive unavailable ({cfg.archive.url}): {e.__class__.__name__}: {e}",
              file=sys.stderr)
        return 1
    data = rep.csv().encode() if args.format == "csv" else report_pdf.pdf_bytes(rep, generated_by=args.user)
    _write(out, data)
    record_audit(cfg, args.user, "report.generate", format=args.format, date_from=args.date_from,
                 date_to=args.date_to, room=args.room or "", sessions=len(rep.rows), file=str(out))
    print(f"{out} ({args.format}, {len(rep.rows)} sessions, {len(data)} bytes)")
    return 0


def _research(args: argparse.Namespace, cfg: Config, arch: Archive, since_ms: int, until_ms: int,
              out: Path) -> int:
    from monitor.sessions import research
    from monitor.sessions.export import record_audit

    try:
        key = research.load_key(cfg) if args.pseudonymize else None
    except OSError as e:
        print(f"vitalwatch report: pseudonym key {research.key_path(cfg)}: {e}", file=sys.stderr)
        return 1
    selected = research.select_sessions(arch, cfg.clinic.id, since_ms, until_ms, args.room, args.patient)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        n = research.write_csv(fh, arch, selected, cfg.clinic.timezone, key)
    tmp.replace(out)
    record_audit(cfg, args.user, "research.export", date_from=args.date_from, date_to=args.date_to,
                 room=args.room or "", patient=args.patient or "", pseudonymized=bool(key),
                 sessions=len(selected), readings=n, file=str(out))
    print(f"{out} (research csv, {len(selected)} sessions, {n} readings"
          f"{', pseudonymized' if key else ''})")
    return 0

