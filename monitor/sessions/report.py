"""The clinic quality report over a date range (and optionally one room): gathers the stored
per-session summaries (monitor/sessions/summaries.py) and the REMS form states, then the pure
aggregation in monitor/sessions/quality.py. Used by `vitalwatch report`, the `/report` page
and `GET /api/v1/report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model.config import Config
from monitor.sessions import quality, rems_store, summaries
from monitor.sessions.archive import Archive


class BadRange(ValueError):
    """Dates that are not YYYY-MM-DD, or a range that ends before it starts."""


def day_range(start: str, end: str, tz_name: str) -> tuple[int, int]:
    """[start 00:00, end 24:00) in the clinic's time zone, as ms: both days included."""
    try:
        d0, d1 = date.fromisoformat(start.strip()), date.fromisoformat(end.strip())
    except ValueError:
        raise BadRange(f"dates must be YYYY-MM-DD (got {start!r}, {end!r})") from None
    if d1 < d0:
        raise BadRange(f"--to {d1} is before --from {d0}")
    tz = ZoneInfo(tz_name)

    def ms(d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000)

    return ms(d0), ms(d1 + timedelta(days=1)) - 1


@dataclass
class Report:
    """One report: its scope, the per-session rows (summary + REMS `form`) and the totals."""

    clinic: str
    tz_name: str
    since_ms: int
    until_ms: int
    room: str | None
    generated_ms: int
    rows: list[dict[str, Any]]
    totals: dict[str, Any]

    def csv(self) -> str:
        """One row per session (quality.CSV_COLUMNS)."""
        return quality.csv_text(self.rows, self.tz_name)

    def scope_text(self) -> str:
        """"2026-11-01 – 2026-11-30, room room-1" for titles."""
        tz = ZoneInfo(self.tz_name)
        a = datetime.fromtimestamp(self.since_ms / 1000, tz).date()
        b = datetime.fromtimestamp(self.until_ms / 1000, tz).date()
        return f"{a} – {b}" + (f", room {self.room}" if self.room else ", all rooms")


def attach_forms(arch: Archive, cfg: Config, rows: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """Each summary row with its REMS FormState under "form" (None where the form does not apply)."""
    needing = [r for r in rows if r["rems"]["required"]]
    states = rems_store.states_for(cfg, needing, rems_store.rems_events(arch, [r["session"] for r in needing]),
                                   now_ms)
    return [{**r, "form": states.get(r["session"])} for r in rows]


def build(arch: Archive, cfg: Config, since_ms: int, until_ms: int, room: str | None, now_ms: int) -> Report:
    """The report over sessions started in [since, until] (ms), optionally in one room."""
    rows = attach_forms(arch, cfg, summaries.in_range(arch, cfg.clinic.id, since_ms, until_ms, room=room), now_ms)
    return Report(cfg.clinic.id, cfg.clinic.timezone, since_ms, until_ms, room, now_ms, rows,
                  quality.aggregate(rows))
