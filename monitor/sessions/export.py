"""`vitalwatch export --session ID --format csv|pdf|png|fhir|rems -o FILE` — from the ARCHIVE only.

Works after Redis has been emptied: everything comes from monitor.sessions.archive.load_session.
- CSV: one row per archived reading (ts_ms, local time, room, device, every metric, flags, kind
  `reading`), and `not monitoring` / `monitoring resumed` rows where a clinic-wide outage
  overlapped the session (its cause in `note`).
- FHIR: an R4 Bundle (collection) of vital-signs Observations (monitor/interop/fhir.py).
- PNG: the review chart (monitor/sessions/review_figure.py) rendered by kaleido 1.x in the system
  Chromium (found on PATH or at CHROMIUM_PATHS; plotly.js comes from the installed plotly
  package and MathJax is disabled, so nothing is fetched at run time). One Chromium is
  kept warm per process (`render_png`), so a second export costs ~0.3 s, not ~3 s.
- PDF (fpdf2): patient id and session header, the chart, the summary per vital, alert
  counts (physiological alarms, technical alarms and reminders apart) and median time to
  acknowledge, the alert log (all kinds, with a kind column), the REMS form values, notes.
- REMS: the esketamine REMS Patient Monitoring Form, prefilled (monitor/sessions/rems_pdf.py).
Every export is written to the audit log (Redis when reachable, else straight into the
archive's audit table, so no export goes unrecorded).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import shutil
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from monitor.model.codec import fmt_value as stream_value
from monitor.model.config import Config
from monitor.model.readings import short_label
from monitor.model.redact import redact_text, redact_url
from monitor.sessions import review
from monitor.sessions.pdf_fonts import pdf_fonts as _pdf_fonts
from monitor.sessions.review import READING_METRICS, SessionRecord, fmt_duration, fmt_value

log = logging.getLogger(__name__)
# kaleido/choreographer/fontTools log every step at INFO; an export should print one line.
for _noisy in ("choreographer", "kaleido", "fontTools", "logistro"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# `kind` and `note` come last, so the reading columns keep their places: `reading` rows are the
# archived readings; `not monitoring` / `monitoring resumed` rows mark a clinic-wide outage
# (ingest down, readings not stored) — dev, values and flags empty, the cause in `note`
CSV_COLUMNS = ("ts_ms", "time_local", "room", "dev", *READING_METRICS, "flags", "kind", "note")
READING, NOT_MONITORING, RESUMED = "reading", "not monitoring", "monitoring resumed"


class ExportError(RuntimeError):
    """An export that could not be produced (e.g. no browser for the chart)."""


# --- CSV ----------------------------------------------------------------------------------
def csv_text(rec: SessionRecord, tz_name: str = "UTC") -> str:
    """One row per archived reading, in time order, and where a clinic-wide outage overlapped the
    session a `not monitoring` row at its start (clipped to the session) and a `monitoring
    resumed` row at its end when that came before the session's (pure)."""
    tz = ZoneInfo(tz_name)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    room = rec.header.get("room", "")
    blank = [""] * len(READING_METRICS)

    def local(ts: int) -> str:
        return datetime.fromtimestamp(ts / 1000, tz).isoformat(timespec="milliseconds")

    marks = outage_marks(rec, tz)
    i = 0
    for ts, dev, flags, values in rec.readings:
        while i < len(marks) and marks[i][0] <= ts:
            w.writerow([marks[i][0], local(marks[i][0]), room, "", *blank, "", *marks[i][1:]])
            i += 1
        # the stream's exact decimal text (72, 4.72), not the one-decimal display format
        w.writerow([ts, local(ts), room, dev, *("" if v is None else stream_value(v) for v in values), flags or "",
                    READING, ""])
    for ts, kind, note in marks[i:]:
        w.writerow([ts, local(ts), room, "", *blank, "", kind, note])
    return buf.getvalue()


def outage_marks(rec: SessionRecord, tz: ZoneInfo) -> list[tuple[int, str, str]]:
    """(ts_ms, kind, note) of the clinic-wide outages in the session's record, in time order:
    the chart's "not monitoring" bands as CSV rows."""
    marks: list[tuple[int, str, str]] = []
    for ep in review.episodes(rec):
        if not ep["clinic_wide"]:
            continue
        raised, cleared = ep["raised_ms"], ep["cleared_ms"]
        note = ep["message"] or "clinic-wide outage"
        if raised < rec.start_ms:
            note += f" (since {_t(raised, tz)}, before the session began)"
        if cleared is None or cleared > rec.end_ms:
            note += " (still not monitoring when the session ended)"
        start = max(raised, rec.start_ms)
        marks.append((start, NOT_MONITORING, note))
        if cleared is not None and cleared <= rec.end_ms:
            marks.append((max(cleared, start), RESUMED, f"after {fmt_duration((cleared - raised) / 1000)}: {note}"))
    return sorted(marks, key=lambda m: m[0])


# --- PNG (kaleido + system Chromium) ---------------------------------------------------------
_kaleido_lock = threading.Lock()
_kaleido_started = False


def chromium_path() -> str | None:
    """The system Chromium kaleido will drive (PATH first, then the usual locations)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


def _ensure_kaleido() -> None:
    global _kaleido_started
    import kaleido

    with _kaleido_lock:
        if _kaleido_started:
            return
        path = chromium_path()
        if path is None:
            raise ExportError("no Chromium found for chart rendering: install the `chromium` package "
                              "(kaleido 1.x needs a system browser; it is never downloaded at run time)")
        # mathjax=False: kaleido would otherwise load MathJax from a CDN.
        kaleido.start_sync_server(path=path, mathjax=False, silence_warnings=True)
        _kaleido_started = True


def render_png(fig: Any, width_px: int = 1400, height_px: int | None = None, scale: float = 1.0) -> bytes:
    """PNG bytes of a plotly figure via kaleido, keeping one Chromium warm per process."""
    import kaleido

    _ensure_kaleido()
    height = height_px or int(fig.layout.height or 800)
    try:
        return kaleido.calc_fig_sync(fig, opts={"format": "png", "width": width_px, "height": height,
                                                "scale": scale})
    except Exception as e:  # kaleido/choreographer raise many types; say what failed, keep cause
        raise ExportError(f"chart rendering failed in Chromium: {type(e).__name__}: {e}") from e


def chart_png(rec: SessionRecord, summary: dict[str, Any], tz_name: str) -> bytes:
    """The review chart as PNG."""
    from monitor.sessions.review_figure import build_figure

    return render_png(build_figure(rec, summary, tz_name, max_points=1500))


# --- PDF (fpdf2) ------------------------------------------------------------------------------
def _t(ms: int | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "—" if ms is None else datetime.fromtimestamp(ms / 1000, tz).strftime(fmt)


def report_rows(rec: SessionRecord, s: dict[str, Any], tz_name: str) -> dict[str, list[list[str]]]:
    """The report's tables as text rows (pure; shared by the PDF and tests)."""
    tz = ZoneInfo(tz_name)
    h = rec.header
    head = [["Patient id", str(h.get("patient"))], ["Session", str(h.get("id"))], ["Room", str(h.get("room"))],
            ["Route / protocol", f"{h.get('route')} / {h.get('protocol')}"],
            ["Dose / weight", f"{fmt_value(h.get('dose_mg'))} mg / {fmt_value(h.get('weight_kg'))} kg"],
            ["Started", f"{_t(h.get('started_ms'), tz)} by {h.get('started_by') or '—'}"],
            ["First dose", _t(s["rems"]["dose_ms"], tz)],
            ["Ended", f"{_t(h.get('ended_ms'), tz)} by {h.get('ended_by') or '—'}"],
            ["Signed off", f"{h['signed_by']} at {_t(h.get('signed_ms'), tz)}" if h.get("signed_by") else "not signed"]]
    vitals = [["Vital", "Baseline", "Min", "Max", "Below low", "Above high", "Limits"]]
    for v in s["vitals"].values():
        vitals.append([f"{v['short']} ({v['unit']})", fmt_value(round(v["baseline"], 1)), fmt_value(v["min"]),
                       fmt_value(v["max"]), fmt_duration(v["below_s"]), fmt_duration(v["above_s"]),
                       review.fmt_limits(v["low"], v["high"])])
    alerts = alert_rows(s["alerts"])
    log_rows = [["Raised", "Kind", "Priority", "Alert", "Ack. by", "After", "Cleared"]]
    for ep in s["episodes"]:
        # device paths in technical texts would wrap over many lines; the page keeps the full text
        log_rows.append([_t(ep["raised_ms"], tz, "%H:%M:%S"), review.kind_of(ep), ep["priority"] or "",
                         review.short_alert_text(ep), ep["acknowledged_by"] or "—", fmt_duration(ep["ack_s"]),
                         _t(ep["cleared_ms"], tz, "%H:%M:%S")])
    r = s["rems"]
    obs = ", ".join(f"{k.replace('_', ' ')}: {'yes' if o['occurred'] else 'no'}" for k, o in r["observations"].items())
    rems = [["BP pre-dose", review.fmt_bp(r["bp_pre"])], ["BP at ~40 min", review.fmt_bp(r["bp_40"])],
            ["BP before end", review.fmt_bp(r["bp_end"])],
            ["Total minutes monitored", f"{r['total_monitored_min']:g} (session {r['session_min']:g})"],
            ["Minutes until ready to leave", "—" if r["ready_min"] is None else f"{r['ready_min']:g}"],
            ["Observed", obs]]
    notes = [[_t(e["ts"], tz, "%H:%M:%S"), e["type"], e.get("user", ""), _event_text(e)]
             for e in rec.events if e["type"] not in ("start", "end", "devices_confirmed")]
    return {"header": head, "vitals": vitals, "alerts": alerts, "alert_log": log_rows, "rems": rems, "notes": notes}


def alert_rows(a: dict[str, Any]) -> list[list[str]]:
    """The alert counts as label/value rows: physiological alarms, technical alarms and
    reminders kept apart (reminders are never alarms); shared by the PDF and the page."""
    phys, tech, rem = a["physiological"], a["technical"], a["reminders"]
    return [
        ["Physiological alarms", review.fmt_by_priority(phys)],
        ["  median time to acknowledge", fmt_duration(phys["median_ack_s"])],
        ["  unacknowledged", str(phys["unacknowledged"])],
        ["Technical alarms", f"{review.fmt_by_priority(tech)}; median time to acknowledge "
                             f"{fmt_duration(tech['median_ack_s'])}; unacknowledged {tech['unacknowledged']}"],
        ["Reminders", review.fmt_reminders(rem)],
    ]


def _event_text(e: dict[str, Any]) -> str:
    t = e["type"]
    if t == "dose":
        return " ".join(x for x in (f"{fmt_value(e.get('dose_mg'))} mg" if e.get("dose_mg") else "", e.get("note") or "") if x)
    if t == "bp":
        return f"{e['sbp']}/{e['dbp']} mmHg"
    if t == "observe":
        return (e.get("observation") or "").replace("_", " ") + (f": {e['text']}" if e.get("text") else "")
    if t == "limit":
        return f"{short_label(str(e.get('metric')))} → {e.get('limit')}"
    return str(e.get("text") or "")


def pdf_bytes(rec: SessionRecord, s: dict[str, Any], tz_name: str, chart: bytes | None,
              chart_error: str | None = None, generated_by: str = "") -> bytes:
    """The session report as PDF bytes."""
    from fpdf import FPDF

    rows = report_rows(rec, s, tz_name)
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    font, unicode_ok = _pdf_fonts(pdf)
    txt = (lambda x: x) if unicode_ok else (lambda x: x.encode("latin-1", "replace").decode("latin-1"))
    pdf.add_page()
    pdf.set_font(font, "B", 15)
    pdf.cell(0, 8, txt(f"VitalWatch session report — patient {rec.header.get('patient')}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, "", 8)
    pdf.cell(0, 4, txt(f"Generated {datetime.now(ZoneInfo(tz_name)):%Y-%m-%d %H:%M} {tz_name}"
                       f"{' by ' + generated_by if generated_by else ''}. VitalWatch is a secondary display; "
                       "the bedside monitors are the primary alarm source."), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    def table(title: str, data: list[list[str]], widths: list[float], header: bool = False) -> None:
        pdf.set_font(font, "B", 11)
        pdf.cell(0, 7, txt(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(font, "", 8.5)
        with pdf.table(col_widths=widths, first_row_as_headings=header, line_height=4.6,
                       text_align="LEFT") as t:
            for r in data:
                row = t.row()
                for cell in r:
                    row.cell(txt(str(cell)))
        pdf.ln(2)

    table("Session", rows["header"], [40, 140])
    if chart is not None:
        pdf.image(io.BytesIO(chart), w=pdf.epw)
    else:
        pdf.set_font(font, "", 9)
        pdf.multi_cell(0, 5, txt(f"Chart unavailable: {chart_error}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    table("Summary per vital", rows["vitals"], [28, 22, 18, 18, 30, 30, 34], header=True)
    table("Alerts", rows["alerts"], [60, 120])
    if len(rows["alert_log"]) > 1:
        table("Alert log (all kinds)", rows["alert_log"], [17, 23, 16, 64, 24, 18, 18], header=True)
    table("REMS patient monitoring form", rows["rems"], [55, 125])
    if rows["notes"]:
        table("Events and notes", [["Time", "Type", "By", "Detail"], *rows["notes"]], [20, 22, 30, 108], header=True)
    return bytes(pdf.output())


# --- FHIR R4 -------------------------------------------------------------------------------
def fhir_json(rec: SessionRecord, clinic: str, patient_system: str = "") -> bytes:
    """A FHIR R4 Bundle (collection) of the session's vital-signs Observations (monitor/interop/fhir.py)."""
    import json
    import time

    from monitor.interop import fhir, rows

    bundle = fhir.session_bundle(rows.from_archive(rec.readings), clinic=clinic or "vitalwatch",
                                 session_id=str(rec.header["id"]), patient=str(rec.header.get("patient") or ""),
                                 now_ms=time.time_ns() // 1_000_000, patient_system=patient_system)
    return json.dumps(bundle, indent=1).encode()


# --- the command -----------------------------------------------------------------------------
def export_bytes(rec: SessionRecord, fmt: str, tz_name: str, user: str = "") -> bytes:
    """The export of `rec` in `fmt` (csv|pdf|png|fhir) as bytes."""
    if fmt == "csv":
        return csv_text(rec, tz_name).encode()
    if fmt == "fhir":
        return fhir_json(rec, clinic=str(rec.header.get("clinic") or ""))
    summary = review.summarize(rec)
    if fmt == "png":
        return chart_png(rec, summary, tz_name)
    if fmt == "pdf":
        try:
            chart, err = chart_png(rec, summary, tz_name), None
        except ExportError as e:
            log.warning("PDF without chart: %s", e)
            chart, err = None, str(e)
        return pdf_bytes(rec, summary, tz_name, chart, err, generated_by=user)
    raise ValueError(f"unknown format {fmt!r}")


def record_export(cfg: Config, user: str, sid: str, fmt: str, path: str) -> str:
    """Write the export to the audit log: Redis if reachable, else the archive. Returns where."""
    return record_audit(cfg, user, "session.export", session=sid, format=fmt, file=path)


def record_audit(cfg: Config, user: str, action: str, **details: Any) -> str:
    """An audit entry via Redis when reachable, else straight into the archive ("redis"|"archive")."""
    from monitor.accounts import audit
    from monitor.sessions.archive import open_archive, record_audit_local
    from monitor.store.redis_conn import REDIS_DOWN, connect
    from monitor.store.runtime import RuntimeFailure, resolve

    try:
        ep = resolve(cfg)
        client = connect(ep.redis_url, timeout_s=2.0)
        try:
            audit.record(client, ep.keys, user, action, **details)
        finally:
            client.close()
        return "redis"
    except (RuntimeFailure, *REDIS_DOWN) as e:
        log.warning("audit via Redis failed (%s); writing %s to the archive's audit table", e, action)
    record_audit_local(open_archive(cfg.archive.url), cfg.clinic.id, user, action, **details)
    return "archive"


def run(args: argparse.Namespace, cfg: Config) -> int:
    """`vitalwatch export`: write one session's CSV, PDF or PNG from the archive."""
    from monitor.sessions.archive import NotArchived, load_session, open_archive

    try:
        rec = load_session(open_archive(cfg.archive.url), args.session)
    except NotArchived:
        print(f"vitalwatch export: unknown session {args.session!r} (not in the archive "
              f"{redact_url(cfg.archive.url)}; is it ended?)", file=sys.stderr)
        return 2
    except sa.exc.SQLAlchemyError as e:
        print(f"vitalwatch export: archive unavailable ({redact_url(cfg.archive.url)}): "
              f"{e.__class__.__name__}: {redact_text(str(e))}",
              file=sys.stderr)
        return 1
    try:
        if args.format == "fhir":  # the configured patient identifier system
            data = fhir_json(rec, cfg.clinic.id, cfg.fhir.patient_system)
        elif args.format == "rems":  # the esketamine REMS form: monitor/sessions/rems_pdf.py
            from monitor.sessions.rems_pdf import NotRemsExport, export_rems

            try:
                data = export_rems(rec, cfg, user=args.user)
            except NotRemsExport as e:
                print(f"vitalwatch export: {e}", file=sys.stderr)
                return 2
        else:
            data = export_bytes(rec, args.format, cfg.clinic.timezone, user=args.user)
    except ExportError as e:
        print(f"vitalwatch export: {e}", file=sys.stderr)
        return 1
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(out)
    record_export(cfg, args.user, args.session, args.format, str(out))
    extra = ""
    if args.format == "fhir":
        from monitor.interop import fhir, rows

        extra = f", {fhir.expected_observations(rows.from_archive(rec.readings))} observations"
    print(f"{out} ({args.format}, {len(data)} bytes, {len(rec.readings)} readings{extra})")
    return 0
