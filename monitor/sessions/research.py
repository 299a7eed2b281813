"""Multi-session research CSV: one row per archived reading across the selected sessions.

`vitalwatch report --format research` and the `/report` page's "Research CSV" button. Each
row carries the session's context (patient, room, route, protocol, dose), the reading's
time as `ts_ms`, local time and minutes after the session's first dose, the device, every
metric (exactly as the stream held it; empty = absent) and the quality flags.

Pseudonymisation (on request): the patient id becomes `P-` + the first 16 hex digits of
HMAC-SHA256(key, patient id) and the session id `S-` + 12 hex digits of HMAC-SHA256(key,
session id) (session ids embed the start time). The key is 32 random bytes in
`[research] pseudonym_key_file` (default `<data.dir>/pseudonym-key`), created on first use
with mode 0600: the same patient gets the same pseudonym in every export made with the
same key, so sessions stay linkable; without the key the pseudonym cannot be reversed or
recomputed from a guessed MRN. Reading times are kept (they are what the research needs),
so a pseudonymised export is not an anonymised one: treat it as a limited data set.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from monitor.model.codec import fmt_value as stream_value
from monitor.model.config import Config
from monitor.sessions.archive import READING_METRICS, Archive
from monitor.sessions.archive_schema import readings, sessions

COLUMNS = ("session", "patient", "room", "route", "protocol", "dose_mg", "ts_ms", "time_local",
           "min_after_dose", "dev", *READING_METRICS, "flags")
KEY_BYTES = 32


class PseudonymKeyError(OSError):
    """The pseudonym key file cannot be read or created."""


def key_path(cfg: Config) -> Path:
    """Where the pseudonym key lives."""
    return Path(cfg.research.pseudonym_key_file or Path(cfg.data.dir) / "pseudonym-key")


def load_key(cfg: Config) -> bytes:
    """The pseudonym key, created (32 random bytes, mode 0600) if there is none yet."""
    path = key_path(cfg)
    try:
        return _read_key(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return _read_key(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 16:
        raise PseudonymKeyError(f"pseudonym key {path} is too short ({len(key)} bytes); remove it to create a new one "
                        "(pseudonyms will change)")
    return key


def pseudonym(key: bytes, value: str, prefix: str = "P-", digits: int = 16) -> str:
    """A keyed, stable pseudonym for an identifier (HMAC-SHA256, hex, truncated)."""
    return prefix + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:digits]


def select_sessions(arch: Archive, clinic: str, since_ms: int | None, until_ms: int | None,
                    room: str | None = None, patient: str | None = None) -> list[dict[str, Any]]:
    """The archived sessions to export, oldest first."""
    s = sessions.c
    q = (sa.select(s.id, s.patient, s.room, s.route, s.protocol, s.dose_mg, s.first_dose_ms, s.started_ms)
         .where(s.clinic == clinic, s.state == "archived").order_by(s.started_ms, s.id))
    if since_ms is not None:
        q = q.where(s.started_ms >= since_ms)
    if until_ms is not None:
        q = q.where(s.started_ms <= until_ms)
    if room:
        q = q.where(s.room == room)
    if patient:
        q = q.where(s.patient == patient)
    with arch.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def rows(arch: Archive, selected: list[dict[str, Any]], tz_name: str, key: bytes | None) -> Iterator[list[str]]:
    """CSV rows (without the header) for every reading of the selected sessions."""
    tz = ZoneInfo(tz_name)
    cols = [readings.c.ts_ms, readings.c.dev, readings.c.flags, *(readings.c[m] for m in READING_METRICS)]
    for sess in selected:
        sid, patient = str(sess["id"]), str(sess["patient"])
        if key is not None:
            sid, patient = pseudonym(key, sid, "S-", 12), pseudonym(key, patient)
        dose = sess["first_dose_ms"]
        ctx = [sid, patient, sess["room"] or "", sess["route"] or "", sess["protocol"] or "",
               "" if sess["dose_mg"] is None else stream_value(sess["dose_mg"])]
        with arch.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(
                sa.select(*cols).where(readings.c.session_id == sess["id"])
                .order_by(readings.c.ts_ms, readings.c.stream_id))
            for ts, dev, flags, *values in result:
                local = datetime.fromtimestamp(ts / 1000, tz).isoformat(timespec="milliseconds")
                after = "" if dose is None else f"{(ts - dose) / 60_000:.2f}"
                yield [*ctx, str(ts), local, after, dev,
                       *("" if v is None else stream_value(v) for v in values), flags or ""]


def write_csv(out: TextIO, arch: Archive, selected: list[dict[str, Any]], tz_name: str,
              key: bytes | None) -> int:
    """Write the research CSV to `out`; returns the number of reading rows."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    n = 0
    for row in rows(arch, selected, tz_name, key):
        w.writerow(row)
        n += 1
    return n


def csv_text(arch: Archive, selected: list[dict[str, Any]], tz_name: str, key: bytes | None) -> tuple[str, int]:
    """The research CSV as text (for downloads), with its row count."""
    buf = io.StringIO()
    n = write_csv(buf, arch, selected, tz_name, key)
    return buf.getvalue(), n
