"""Numbers across sessions — the clinic quality report and a patient's course. PURE (no I/O).

`session_summary(rec)` condenses one archived session (a review.SessionRecord) into a small
JSON-able dict, computed once at archive time and stored (monitor/sessions/summaries.py), so a
report over thousands of sessions reads one row per session instead of every reading.
`aggregate(rows)` and `csv_text(rows)` build the report from those rows (one row = a summary
plus its REMS form state). Definitions (docs/reports.md):

- Vital numbers are the session review's own (monitor.sessions.review.vital_stats):
  baseline = median before the first dose, peak = the session's maximum, with the minutes
  after the first dose at which it occurred. Blood pressure comes from the devices' NIBP
  readings; a session without any device BP uses the nurse's manual checks instead
  (`bp_source` says which).
- BP surge (the label's definition): the highest SBP / DBP within 90 min after the first
  dose minus the baseline; a surge is a rise of ≥ 40 mmHg systolic or ≥ 25 mmHg diastolic.
- Alarms are physiological alarm episodes (review.kind_of), by priority. Time to
  acknowledge = first `acknowledged` − `raised`; never acknowledged = no acknowledgement at
  all; nuisance = cleared no later than its condition delay (`delay_s` of the limits in
  force when it was raised) after it was raised — an alarm a longer delay would have
  suppressed. Technical alarms are counted by cause (the condition in the alert id:
  offline, silent, sensor_off …) and device.
- Percentiles interpolate linearly between the two nearest ranks (p50 = the median).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.sessions import rems_form, review
from monitor.sessions.review import SessionRecord

SUMMARY_VERSION = 1
SURGE_SBP = 40.0
SURGE_DBP = 25.0
SURGE_WINDOW_MIN = 90.0
CURVE_MAX_POINTS = 60
ADVERSE = ("sedation", "dissociation", "respiratory_depression", "nausea")
PRIORITIES = review.PRIORITIES


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0–1) by linear interpolation between the nearest ranks; None if empty."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --- one session -------------------------------------------------------------------------------
def _bp_record(rec: SessionRecord) -> tuple[SessionRecord, str | None]:
    """The record whose readings carry the session's BP: the devices', else the manual checks."""
    si = review.READING_METRICS.index("sbp")
    if any(r[3][si] is not None for r in rec.readings):
        return rec, "device"
    manual = [e for e in rec.events if e["type"] == "bp"]
    if not manual:
        return rec, None
    di = review.READING_METRICS.index("dbp")
    rows = []
    for e in manual:
        values: list[float | None] = [None] * len(review.READING_METRICS)
        values[si], values[di] = float(e["sbp"]), float(e["dbp"])
        rows.append((int(e["ts"]), "manual", None, values))
    return SessionRecord(header=rec.header, events=rec.events, readings=sorted(rows, key=lambda r: r[0]),
                         alert_events=[], base_limits=rec.base_limits), "manual"


def bp_response(rec: SessionRecord, stats: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Baseline, peak (value, minutes after dose), rise within 90 min and surge, for SBP and DBP."""
    bp_rec, source = _bp_record(rec)
    if source == "device" and stats is not None:
        vs = stats
    else:
        vs = review.vital_stats(bp_rec) if source else {}
    dose = rec.dose_ms
    ref = dose if dose is not None else rec.start_ms
    out: dict[str, Any] = {"bp_source": source}
    for m in ("sbp", "dbp"):
        v = vs.get(m)
        out[f"baseline_{m}"] = round(v["baseline"], 1) if v else None
        out[f"peak_{m}"] = v["max"] if v else None
        out[f"peak_{m}_min"] = round((v["max_ts"] - ref) / 60_000, 1) if v else None
        rise = None
        if v and dose is not None:
            ts, xs = review.series(bp_rec, m)
            window = [x for t, x in zip(ts, xs, strict=True) if dose <= t <= dose + SURGE_WINDOW_MIN * 60_000]
            rise = round(max(window) - v["baseline"], 1) if window else None
        out[f"{m}_rise_90"] = rise
    rs, rd = out["sbp_rise_90"], out["dbp_rise_90"]
    out["surge"] = None if rs is None and rd is None else bool(
        (rs is not None and rs >= SURGE_SBP) or (rd is not None and rd >= SURGE_DBP))
    return out


def _delay_s(rec: SessionRecord, metric: str | None, at_ms: int) -> float | None:
    """The condition delay of `metric`'s limits in force at `at_ms` (None if unknown)."""
    if not metric:
        return None
    delay = rec.base_limits.get(metric, {}).get("delay_s")
    for e in rec.events:
        if e["type"] == "limit" and e.get("metric") == metric and int(e["ts"]) <= at_ms:
            over = e.get("limit") or {}
            if "delay_s" in over:
                delay = over["delay_s"]
            elif not over:  # the override was removed: back to the room's limits
                delay = rec.base_limits.get(metric, {}).get("delay_s")
    return float(delay) if delay is not None else 0.0


def alert_id_cause(alert: str, fallback: str | None = None) -> str:
    """The condition of an alert id `<room>.<dev>.<condition>.<start ms>` ("offline", "sbp_high")."""
    parts = alert.split(".")
    if len(parts) >= 4:
        return ".".join(parts[2:-1])
    return fallback or "unknown"


def _curve(rec: SessionRecord, ref_ms: int) -> list[list[float | None]]:
    """The session's BP readings as [minutes after dose, sbp, dbp], at most CURVE_MAX_POINTS."""
    bp_rec, _ = _bp_record(rec)
    si, di = review.READING_METRICS.index("sbp"), review.READING_METRICS.index("dbp")
    pts: list[list[float | None]] = []
    sbps: list[float] = []
    for r in bp_rec.readings:
        sbp = r[3][si]
        if sbp is not None:
            pts.append([round((r[0] - ref_ms) / 60_000, 1), sbp, r[3][di]])
            sbps.append(sbp)
    if len(pts) > CURVE_MAX_POINTS:
        step = len(pts) / CURVE_MAX_POINTS
        keep = {int(i * step) for i in range(CURVE_MAX_POINTS)}
        keep.add(max(range(len(sbps)), key=sbps.__getitem__))  # never drop the peak
        pts = [p for i, p in enumerate(pts) if i in keep]
    return pts


def session_summary(rec: SessionRecord) -> dict[str, Any]:
    """Everything the report and the patient course need from one session (JSON-able)."""
    h = rec.header
    stats = review.vital_stats(rec)
    eps = review.episodes(rec)
    phys = [e for e in eps if review.kind_of(e) == "physiological"]
    tech = [e for e in eps if review.kind_of(e) == "technical"]
    acks = [e["ack_s"] for e in phys if e["ack_s"] is not None]
    nuisance = 0
    for e in phys:
        delay = _delay_s(rec, e.get("metric"), e["raised_ms"])
        if e["cleared_ms"] is not None and delay is not None and e["cleared_ms"] - e["raised_ms"] <= delay * 1000:
            nuisance += 1
    rems = review.rems_values(rec)
    dose = rec.dose_ms
    ref = dose if dose is not None else rec.start_ms
    bp = bp_response(rec, stats)
    return {
        "v": SUMMARY_VERSION,
        "session": h.get("id"), "patient": h.get("patient"), "room": h.get("room"), "route": h.get("route"),
        "protocol": h.get("protocol"), "dose_mg": h.get("dose_mg"), "weight_kg": h.get("weight_kg"),
        "started_ms": rec.start_ms, "dose_ms": dose, "ended_ms": rec.end_ms,
        "monitored_min": rems["total_monitored_min"], "ready_min": rems["ready_min"],
        "n_readings": len(rec.readings),
        **bp,
        "max_hr": stats["hr"]["max"] if "hr" in stats else None,
        "min_spo2": stats["spo2"]["min"] if "spo2" in stats else None,
        "alarms": {p: sum(1 for e in phys if e["priority"] == p) for p in PRIORITIES},
        "alarms_total": len(phys),
        "ack_s": acks,
        "unacknowledged": len(phys) - len(acks),
        "nuisance": nuisance,
        "technical": [[alert_id_cause(e["alert"], e.get("metric")), e.get("dev") or "-"] for e in tech],
        "observations": {o: bool(rems["observations"][o]["occurred"]) for o in ADVERSE},
        "rems": rems_form.prefill(rec, bp),
        "curve": _curve(rec, ref),
    }


# --- across sessions -----------------------------------------------------------------------------
def dose_label(s: dict[str, Any]) -> str:
    """"56 mg" (the session's dose), "—" without one."""
    d = s.get("dose_mg")
    return "—" if d is None else f"{int(d) if float(d).is_integer() else d:g} mg"


def _rate(n: int, total: int) -> float | None:
    return round(100.0 * n / total, 1) if total else None


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's clinic-wide numbers from per-session rows (summary + `form` FormState or None)."""
    n = len(rows)
    by_route_dose = Counter((s.get("route") or "—", dose_label(s)) for s in rows)
    acks = [a for s in rows for a in s["ack_s"]]
    phys_total = sum(s["alarms_total"] for s in rows)
    tech = [tuple(t) for s in rows for t in s["technical"]]
    with_rise = [s for s in rows if s.get("surge") is not None]
    forms = [s["form"] for s in rows if s.get("form") is not None and s["form"].required]
    missing = Counter(m for f in forms if f.status != "submitted" for m in f.missing)
    return {
        "sessions": n,
        "by_route_dose": sorted(by_route_dose.items()),
        "alarms": {
            "total": phys_total,
            "by_priority": {p: sum(s["alarms"][p] for s in rows) for p in PRIORITIES},
            "per_session": {p: (round(sum(s["alarms"][p] for s in rows) / n, 2) if n else None) for p in PRIORITIES},
            "acknowledged": len(acks),
            "median_ack_s": percentile(acks, 0.5), "p90_ack_s": percentile(acks, 0.9),
            "never_acknowledged": sum(s["unacknowledged"] for s in rows),
            "nuisance": sum(s["nuisance"] for s in rows),
            "nuisance_pct": _rate(sum(s["nuisance"] for s in rows), phys_total),
        },
        "technical": {
            "total": len(tech),
            "by_cause": Counter(c for c, _ in tech).most_common(),
            "by_device": Counter(d for _, d in tech).most_common(),
            "by_cause_device": Counter(tech).most_common(),
        },
        "observations": {o: {"sessions": sum(1 for s in rows if s["observations"][o]),
                             "pct": _rate(sum(1 for s in rows if s["observations"][o]), n)} for o in ADVERSE},
        "rems": {
            "required": len(forms),
            "submitted": sum(1 for f in forms if f.status == "submitted"),
            "ready": sum(1 for f in forms if f.status == "ready to submit"),
            "incomplete": sum(1 for f in forms if f.status == "incomplete"),
            "overdue": sum(1 for f in forms if f.overdue),
            "complete_pct": _rate(sum(1 for f in forms if f.status != "incomplete"), len(forms)),
            "missing": missing.most_common(),
        },
        "bp_surge": {
            "sessions_with_bp": len(with_rise),
            "surge": sum(1 for s in with_rise if s["surge"]),
            "surge_pct": _rate(sum(1 for s in with_rise if s["surge"]), len(with_rise)),
            "sbp_40": sum(1 for s in with_rise if s["sbp_rise_90"] is not None and s["sbp_rise_90"] >= SURGE_SBP),
            "dbp_25": sum(1 for s in with_rise if s["dbp_rise_90"] is not None and s["dbp_rise_90"] >= SURGE_DBP),
            "label_pct": "8–19",
        },
    }


CSV_COLUMNS = (
    "session", "patient", "room", "route", "protocol", "dose_mg", "started_local", "first_dose_local",
    "ended_local", "monitored_min", "ready_min", "n_readings", "bp_source",
    "baseline_sbp", "baseline_dbp", "peak_sbp", "peak_sbp_min_after_dose", "peak_dbp", "peak_dbp_min_after_dose",
    "sbp_rise_90min", "dbp_rise_90min", "bp_surge", "max_hr", "min_spo2",
    "alarms_high", "alarms_medium", "alarms_low", "alarms_acknowledged", "median_ack_s", "p90_ack_s",
    "never_acknowledged", "nuisance", "technical_alarms", "technical_by_cause_device",
    "sedation", "dissociation", "respiratory_depression", "nausea",
    "rems_required", "rems_status", "rems_missing", "rems_due_local", "rems_overdue", "rems_submitted_local",
)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.1f}"
    return str(v)


def csv_row(s: dict[str, Any], tz: ZoneInfo) -> list[str]:
    """One session's CSV cells, in CSV_COLUMNS order."""
    def t(ms: int | None) -> str:
        return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds")

    form = s.get("form")
    tech = Counter(f"{c}@{d}" for c, d in s["technical"])
    values: list[Any] = [
        s["session"], s["patient"], s["room"], s["route"], s["protocol"], s["dose_mg"], t(s["started_ms"]),
        t(s["dose_ms"]), t(s["ended_ms"]), s["monitored_min"], s["ready_min"], s["n_readings"], s["bp_source"],
        s["baseline_sbp"], s["baseline_dbp"], s["peak_sbp"], s["peak_sbp_min"], s["peak_dbp"], s["peak_dbp_min"],
        s["sbp_rise_90"], s["dbp_rise_90"], s["surge"], s["max_hr"], s["min_spo2"],
        s["alarms"]["high"], s["alarms"]["medium"], s["alarms"]["low"], len(s["ack_s"]),
        percentile(s["ack_s"], 0.5), percentile(s["ack_s"], 0.9), s["unacknowledged"], s["nuisance"],
        len(s["technical"]), ";".join(f"{k}:{v}" for k, v in sorted(tech.items())),
        *(s["observations"][o] for o in ADVERSE),
        bool(form and form.required),
        form.status if form and form.required else "",
        "; ".join(form.missing) if form and form.required and form.status != "submitted" else "",
        t(form.due_ms) if form and form.required else "",
        form.overdue if form and form.required else "",
        t(form.submitted["ts"]) if form and form.required and form.submitted else "",
    ]
    return [_cell(v) for v in values]


def csv_text(rows: Iterable[dict[str, Any]], tz_name: str) -> str:
    """The report as CSV: one row per session, oldest first."""
    tz = ZoneInfo(tz_name)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in rows:
        w.writerow(csv_row(s, tz))
    return buf.getvalue()


def course_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A patient's sessions in order, numbered, with what the course table shows."""
    out = []
    for i, s in enumerate(sorted(rows, key=lambda s: s["started_ms"]), 1):
        out.append({**s, "n": i, "alarms_text": "/".join(str(s["alarms"][p]) for p in PRIORITIES),
                    "adverse": [o for o in ADVERSE if s["observations"][o]]})
    return out


def median_or_none(xs: Sequence[float]) -> float | None:
    """statistics.median, None for no values."""
    return statistics.median(xs) if xs else None
