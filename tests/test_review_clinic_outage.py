"""A clinic-wide alarm (room "*", e.g. "Ingest not running") that names a session's room and
overlaps the session is part of that session's record: archived alerts, review episodes and
technical counts, the chart's "not monitoring" band, the PDF's alert log and the CSV's outage rows. One that names
other rooms only, or ended before the session began, is not."""

from __future__ import annotations

import csv
import io

from monitor.sessions import archive, review
from monitor.sessions import lifecycle as sessions
from monitor.sessions.export import csv_text, report_rows
from monitor.sessions.review_figure import NOT_MONITORING, build_figure
from tests.session_seed import MIN, room_config, seed_session


def _clinic(client, keys, ts: int, alert: str, event: str, rooms: str, message: str) -> None:
    client.xadd(keys.alerts, {"ts": str(ts), "room": "*", "alert": alert, "event": event, "kind": "technical",
                              "priority": "high", "message": message, "rooms": rooms}, id=f"{ts}-7")


def test_clinic_wide_outages_overlapping_the_session_are_in_its_record(rclient, keys, make_config):
    cfg = room_config(make_config)
    sd = seed_session(rclient, keys, cfg, duration_min=20)
    # before the session: one outage over (not in the record), one still going at the start
    _clinic(rclient, keys, sd.t0_ms - 40 * MIN, "c-old", "raised", "room-1,room-2", "Ingest not running: old")
    _clinic(rclient, keys, sd.t0_ms - 35 * MIN, "c-old", "cleared", "room-1,room-2", "old: resolved")
    _clinic(rclient, keys, sd.t0_ms - 30 * MIN, "c-carried", "raised", "room-2,room-1",
            "Readings are not being stored: disk full")
    _clinic(rclient, keys, sd.t0_ms + 2 * MIN, "c-carried", "cleared", "room-2,room-1", "not stored: resolved")
    # during it: the ingest process stopped for 30 s; another room's outage is not ours
    _clinic(rclient, keys, sd.t0_ms + 10 * MIN, "c-ingest", "raised", "room-1",
            "Ingest process ingest-1 stopped: no readings from 1 room")
    _clinic(rclient, keys, sd.t0_ms + 10 * MIN + 30_000, "c-ingest", "cleared", "room-1", "ingest: resolved")
    _clinic(rclient, keys, sd.t0_ms + 11 * MIN, "c-other", "raised", "room-2,room-10", "Ingest not running: other")
    sessions.end_session(rclient, keys, cfg, sd.sid, "amy", now_ms=sd.end_ms)

    rec = archive.load_session(archive.open_archive(cfg.archive.url), sd.sid)
    eps = {e["alert"]: e for e in review.episodes(rec)}
    assert {"c-carried", "c-ingest"} <= set(eps) and not {"c-old", "c-other"} & set(eps)
    assert eps["c-carried"]["raised_ms"] == sd.t0_ms - 30 * MIN and eps["c-carried"]["cleared_ms"] == sd.t0_ms + 2 * MIN
    assert eps["c-ingest"]["clinic_wide"] and eps["c-ingest"]["cleared_ms"] == sd.t0_ms + 10 * MIN + 30_000
    s = review.summarize(rec)
    assert s["alerts"]["technical"]["total"] == 2
    # the chart: a full-height "not monitoring" band per outage, clipped to the session
    bands = [sh for sh in build_figure(rec, s).layout.shapes if sh.name == NOT_MONITORING]
    assert len(bands) == 2 and all(b.y0 == 0 and b.y1 == 1 for b in bands)
    # the PDF's alert log
    log_text = "\n".join(" ".join(r) for r in report_rows(rec, s, "UTC")["alert_log"])
    assert "Ingest process ingest-1 stopped" in log_text and "not being stored" in log_text
    # the CSV: the readings as before, and each outage as rows a spreadsheet shows in time order
    rows = list(csv.DictReader(io.StringIO(csv_text(rec))))
    assert len([r for r in rows if r["kind"] == "reading"]) == len(rec.readings)
    marks = [(int(r["ts_ms"]), r["kind"], r["note"]) for r in rows if r["kind"] != "reading"]
    assert [m[:2] for m in marks] == [
        (sd.t0_ms, "not monitoring"), (sd.t0_ms + 2 * MIN, "monitoring resumed"),
        (sd.t0_ms + 10 * MIN, "not monitoring"), (sd.t0_ms + 10 * MIN + 30_000, "monitoring resumed")]
    assert "disk full" in marks[0][2] and "before the session began" in marks[0][2]
    assert marks[3][2].startswith("after 30 s: Ingest process ingest-1 stopped")
    assert [int(r["ts_ms"]) for r in rows] == sorted(int(r["ts_ms"]) for r in rows)
    outage = next(r for r in rows if r["kind"] == "not monitoring")
    assert outage["dev"] == "" and outage["flags"] == "" and all(outage[m] == "" for m in review.READING_METRICS)
