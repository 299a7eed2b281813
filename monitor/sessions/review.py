"""Post-session review: PURE summary computation from archived data (no I/O).

Input is a `SessionRecord` (built by monitor.sessions.archive.load_session); output plain dicts the
review page, the PDF report and the benchmark render. Definitions (docs/review.md):

- baseline: median of the metric's values before the first dose; without pre-dose values
  (or without a dose), the median of the first BASELINE_WINDOW_MIN minutes of the session.
- time outside limits: each sample holds until the metric's next sample, at most
  max(5 × the metric's median sampling interval, 10 s) (so a device gap is not counted as
  an excursion); the last sample holds until the end on the same cap. The limits are the
  room's at archive time with the session's overrides applied from the moment they were set.
- alert episodes: alert events grouped by alert id; time to acknowledge = first
  `acknowledged` − first `raised`. Episodes are counted by kind, never mixed: physiological
  alarms (the clinically relevant count), technical alarms (device offline, poor signal)
  and workflow reminders (BP check due, minimum observation) — see `alert_summary`.
- REMS form: BP pre-dose = the nurse's manual check (`bp` event) within
  REMS_MANUAL_WINDOW_MIN before the first dose when there is one, else the last device BP at
  or before the dose (else any earlier BP); BP at ~40 min = the BP closest to first dose +
  40 min within ± REMS_TOLERANCE_MIN (either source); BP before end = the manual check within
  REMS_MANUAL_WINDOW_MIN before the end (after the dose) when there is one, else the last BP
  after the dose; total minutes monitored = end − first dose (end − start without a dose);
  minutes until ready to leave = first ready_to_leave observation − first dose.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.alarms.clinic import CLINIC as CLINIC_ROOM
from monitor.alarms.reminders import OVERDUE_WORD
from monitor.model.readings import METRICS, short_label

READING_METRICS: tuple[str, ...] = tuple(METRICS)
_IDX = {m: i for i, m in enumerate(READING_METRICS)}
BASELINE_WINDOW_MIN = 5.0
REMS_BP_AT_MIN = 40.0
REMS_TOLERANCE_MIN = 10.0
# A manual pre-dose / pre-discharge check counts when taken this close before dose / end.
REMS_MANUAL_WINDOW_MIN = 30.0
MIN_HOLD_MS = 10_000
ADVERSE_OBSERVATIONS = ("sedation", "dissociation", "respiratory_depression", "nausea")
PRIORITIES = ("high", "medium", "low")

# (ts_ms, dev, flags, values in READING_METRICS order, None where absent)
Row = tuple[int, str, "str | None", Sequence["float | None"]]


@dataclass
class SessionRecord:
    """Everything archived about one session (header, events, readings, alerts, audit)."""

    header: dict[str, Any]
    events: list[dict[str, Any]]
    readings: list[Row]
    alert_events: list[dict[str, Any]]
    audit: list[dict[str, Any]] = field(default_factory=list)
    base_limits: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def start_ms(self) -> int:
        """Session start."""
        return int(self.header["started_ms"])

    @property
    def end_ms(self) -> int:
        """Session end (start if it never ended)."""
        return int(self.header.get("ended_ms") or self.header["started_ms"])

    @property
    def dose_ms(self) -> int | None:
        """First dose, if any."""
        v = self.header.get("first_dose_ms")
        if v is None:
            doses = [e["ts"] for e in self.events if e["type"] == "dose"]
            return min(doses) if doses else None
        return int(v)


def base_limits(cfg: Any, room: str) -> dict[str, dict[str, Any]]:
    """The room's alarm limits per metric from a Config (low/high/priority set fields)."""
    out = {}
    for m in READING_METRICS:
        spec = cfg.alarm_spec(room, m)
        if spec is not None:
            out[m] = {k: v for k, v in spec.model_dump().items() if v is not None}
    return out


def series(rec: SessionRecord, metric: str) -> tuple[list[int], list[float]]:
    """(ts_ms list, value list) of one metric across all devices, in time order."""
    i = _IDX[metric]
    ts, vs = [], []
    for r in rec.readings:
        v = r[3][i]
        if v is not None:
            ts.append(r[0])
            vs.append(v)
    return ts, vs


def limit_timeline(rec: SessionRecord) -> dict[str, list[tuple[int, float | None, float | None]]]:
    """Per metric: [(from_ts_ms, low, high), …] — base limits, then session overrides."""
    out: dict[str, list[tuple[int, float | None, float | None]]] = {}
    for m in READING_METRICS:
        base = rec.base_limits.get(m, {})
        out[m] = [(rec.start_ms, base.get("low"), base.get("high"))]
    for e in rec.events:
        if e["type"] != "limit" or e.get("metric") not in out:
            continue
        base = rec.base_limits.get(e["metric"], {})
        over = e.get("limit") or {}
        merged = {**base, **over}
        out[e["metric"]].append((int(e["ts"]), merged.get("low"), merged.get("high")))
    return out


def _hold_cap_ms(ts: list[int]) -> int:
    if len(ts) < 2:
        return MIN_HOLD_MS
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False) if b > a]
    return max(5 * int(statistics.median(gaps)) if gaps else 0, MIN_HOLD_MS)


def time_outside(ts: list[int], vs: list[float], limits: list[tuple[int, float | None, float | None]],
                 end_ms: int) -> tuple[float, float]:
    """(seconds below low, seconds above high) for one metric's samples (pure)."""
    if not ts:
        return 0.0, 0.0
    cap = _hold_cap_ms(ts)
    below = above = 0
    li = 0
    for k, (t, v) in enumerate(zip(ts, vs, strict=False)):
        while li + 1 < len(limits) and limits[li + 1][0] <= t:
            li += 1
        _, low, high = limits[li]
        nxt = ts[k + 1] if k + 1 < len(ts) else max(end_ms, t)
        hold = min(max(nxt - t, 0), cap)
        if low is not None and v < low:
            below += hold
        elif high is not None and v > high:
            above += hold
    return below / 1000, above / 1000


def vital_stats(rec: SessionRecord) -> dict[str, dict[str, Any]]:
    """Per metric present: n, baseline (+ method), min/max (+ when), seconds outside limits."""
    dose = rec.dose_ms
    limits = limit_timeline(rec)
    out: dict[str, dict[str, Any]] = {}
    for m in READING_METRICS:
        ts, vs = series(rec, m)
        if not vs:
            continue
        pre = [v for t, v in zip(ts, vs, strict=False) if dose is not None and t < dose]
        if pre:
            baseline, method = statistics.median(pre), f"pre-dose median (n={len(pre)})"
        else:
            window_end = rec.start_ms + int(BASELINE_WINDOW_MIN * 60_000)
            first = [v for t, v in zip(ts, vs, strict=False) if t <= window_end] or vs[:1]
            baseline, method = statistics.median(first), f"first {BASELINE_WINDOW_MIN:g} min median (n={len(first)})"
        i_min = min(range(len(vs)), key=vs.__getitem__)
        i_max = max(range(len(vs)), key=vs.__getitem__)
        below_s, above_s = time_outside(ts, vs, limits[m], rec.end_ms)
        lo, hi = limits[m][0][1], limits[m][0][2]
        out[m] = {
            "metric": m, "label": METRICS[m].label, "short": short_label(m), "unit": METRICS[m].unit, "n": len(vs),
            "baseline": baseline, "baseline_method": method,
            "min": vs[i_min], "min_ts": ts[i_min], "max": vs[i_max], "max_ts": ts[i_max],
            "below_s": below_s, "above_s": above_s, "outside_s": below_s + above_s,
            "low": lo, "high": hi,
        }
    return out


def episodes(rec: SessionRecord) -> list[dict[str, Any]]:
    """Alert episodes (one per alert id), in order raised, with who acknowledged and how fast."""
    eps: dict[str, dict[str, Any]] = {}
    for a in sorted(rec.alert_events, key=lambda a: (a["ts"], a.get("stream_id") or "")):
        aid = a.get("alert") or "?"
        ep = eps.setdefault(aid, {
            "alert": aid, "priority": a.get("priority"), "kind": a.get("kind"), "metric": a.get("metric"),
            "dev": a.get("dev"), "message": a.get("message"), "value": a.get("value"), "limit": a.get("limit"),
            "raised_ms": None, "acknowledged_by": None, "acknowledged_ms": None, "ack_s": None,
            "cleared_ms": None, "escalated": False, "paused_by": None, "overdue": False,
            "clinic_wide": a.get("room") == CLINIC_ROOM,
        })
        if OVERDUE_WORD in (a.get("message") or ""):  # reminders refresh their text ("…, overdue 3 min")
            ep["overdue"] = True
        ev = a.get("event")
        if ev == "raised" and ep["raised_ms"] is None:
            ep["raised_ms"] = a["ts"]
            ep.update({k: a.get(k) for k in ("priority", "kind", "metric", "dev", "message", "value", "limit")
                       if a.get(k)})
        elif ev == "acknowledged" and ep["acknowledged_ms"] is None:
            ep["acknowledged_ms"], ep["acknowledged_by"] = a["ts"], a.get("user")
        elif ev == "escalated":
            ep["escalated"] = True
        elif ev == "audio_paused" and ep["paused_by"] is None:
            ep["paused_by"] = a.get("user")
        elif ev in ("cleared", "reset"):
            ep["cleared_ms"] = a["ts"]
    out = list(eps.values())
    for ep in out:
        if ep["raised_ms"] is not None and ep["acknowledged_ms"] is not None:
            ep["ack_s"] = max(0.0, (ep["acknowledged_ms"] - ep["raised_ms"]) / 1000)
        if ep["raised_ms"] is None:  # raised before the session began: first event we saw
            ep["raised_ms"] = min(a["ts"] for a in rec.alert_events if a.get("alert") == ep["alert"])
    return sorted(out, key=lambda e: e["raised_ms"])


def kind_of(ep: dict[str, Any]) -> str:
    """"physiological", "technical" or "reminder"; an unknown/missing kind counts as
    physiological, so an alarm is never left out of the clinically relevant count."""
    k = ep.get("kind")
    return k if k in ("technical", "reminder") else "physiological"


def _alarm_counts(eps: list[dict[str, Any]]) -> dict[str, Any]:
    acks = [e["ack_s"] for e in eps if e["ack_s"] is not None]
    return {"total": len(eps), "by_priority": {p: sum(1 for e in eps if e["priority"] == p) for p in PRIORITIES},
            "acknowledged": len(acks), "unacknowledged": len(eps) - len(acks),
            "median_ack_s": statistics.median(acks) if acks else None,
            "max_ack_s": max(acks) if acks else None}


def reminder_status(ep: dict[str, Any], end_ms: int) -> str:
    """"completed" when the reminder cleared while the session was open, else "open at end"."""
    return "completed" if ep["cleared_ms"] is not None and ep["cleared_ms"] < end_ms else "open at end"


def alert_summary(eps: list[dict[str, Any]], end_ms: int | None = None) -> dict[str, Any]:
    """Counts kept apart by kind: physiological and technical alarms (by priority,
    unacknowledged, median/max time to acknowledge) and workflow reminders (count,
    completed / open at end / overdue) — reminders never count as alarms."""
    by_kind: dict[str, int] = {}
    for e in eps:
        by_kind[e["kind"] or "?"] = by_kind.get(e["kind"] or "?", 0) + 1
    end = end_ms if end_ms is not None else max((e["raised_ms"] for e in eps), default=0) + 1
    rems = [e for e in eps if kind_of(e) == "reminder"]
    items = [{"message": e["message"] or "", "raised_ms": e["raised_ms"], "cleared_ms": e["cleared_ms"],
              "status": reminder_status(e, end), "overdue": bool(e.get("overdue"))} for e in rems]
    return {
        "total": len(eps), "by_kind": by_kind,
        "physiological": _alarm_counts([e for e in eps if kind_of(e) == "physiological"]),
        "technical": _alarm_counts([e for e in eps if kind_of(e) == "technical"]),
        "reminders": {"total": len(rems), "completed": sum(1 for i in items if i["status"] == "completed"),
                      "open_at_end": sum(1 for i in items if i["status"] != "completed"),
                      "overdue": sum(1 for i in items if i["overdue"]), "items": items},
    }


def fmt_by_priority(counts: dict[str, Any]) -> str:
    """"high 1, medium 0, low 2" from an `_alarm_counts` dict."""
    return ", ".join(f"{p} {counts['by_priority'][p]}" for p in PRIORITIES)


def fmt_reminders(r: dict[str, Any]) -> str:
    """"3 (2 completed, 1 open at end; 1 overdue)" or "none"."""
    if not r["total"]:
        return "none"
    over = f"; {r['overdue']} overdue" if r["overdue"] else ""
    return f"{r['total']} ({r['completed']} completed, {r['open_at_end']} open at end{over})"


def bp_measurements(rec: SessionRecord) -> list[dict[str, Any]]:
    """Every BP of the session: device readings with sbp, and manual checks; time order."""
    si, di = _IDX["sbp"], _IDX["dbp"]
    out = [{"ts": r[0], "sbp": r[3][si], "dbp": r[3][di], "source": r[1]}
           for r in rec.readings if r[3][si] is not None]
    out += [{"ts": e["ts"], "sbp": float(e["sbp"]), "dbp": float(e["dbp"]), "source": "manual"}
            for e in rec.events if e["type"] == "bp"]
    return sorted(out, key=lambda b: b["ts"])


def rems_values(rec: SessionRecord, tolerance_min: float = REMS_TOLERANCE_MIN) -> dict[str, Any]:
    """The REMS patient-monitoring-form values (see module docstring for definitions)."""
    dose, end = rec.dose_ms, rec.end_ms
    bps = bp_measurements(rec)
    window_ms = int(REMS_MANUAL_WINDOW_MIN * 60_000)
    pre = [b for b in bps if dose is not None and b["ts"] <= dose]
    at40 = None
    if dose is not None:
        target = dose + int(REMS_BP_AT_MIN * 60_000)
        near = [b for b in bps if abs(b["ts"] - target) <= tolerance_min * 60_000]
        at40 = min(near, key=lambda b: abs(b["ts"] - target)) if near else None
    after = [b for b in bps if b["ts"] <= end and (dose is None or b["ts"] > dose)]
    bp_pre = _prefer_manual(pre, dose - window_ms) if dose is not None else None
    bp_end = _prefer_manual(after, end - window_ms)
    ready_ms = rec.header.get("ready_ms")
    if ready_ms is None:
        ready = [e["ts"] for e in rec.events if e["type"] == "observe" and e.get("observation") == "ready_to_leave"]
        ready_ms = min(ready) if ready else None
    ref = dose if dose is not None else rec.start_ms
    observed = {o: [e["ts"] for e in rec.events if e["type"] == "observe" and e.get("observation") == o]
                for o in ADVERSE_OBSERVATIONS}
    return {
        "dose_ms": dose,
        "bp_pre": _bp_at(bp_pre, dose) if bp_pre else None,
        "bp_40": _bp_at(at40, dose) if at40 else None,
        "bp_end": _bp_at(bp_end, dose) if bp_end else None,
        # whole minutes, as the REMS form asks ("4" next to "5.4" read as two different units)
        "total_monitored_min": round((end - ref) / 60_000),
        "session_min": round((end - rec.start_ms) / 60_000),
        "ready_ms": ready_ms,
        "ready_min": round((int(ready_ms) - ref) / 60_000, 1) if ready_ms is not None else None,
        "observations": {o: {"occurred": bool(t), "first_min": round((min(t) - ref) / 60_000, 1) if t else None}
                         for o, t in observed.items()},
    }


def _prefer_manual(bps: list[dict[str, Any]], since_ms: int) -> dict[str, Any] | None:
    """The latest manual check at or after `since_ms`, else the latest device BP, else the latest BP."""
    manual = [b for b in bps if b["source"] == "manual" and b["ts"] >= since_ms]
    device = [b for b in bps if b["source"] != "manual"]
    pick = manual or device or bps
    return pick[-1] if pick else None


def _bp_at(b: dict[str, Any], dose: int | None) -> dict[str, Any]:
    return {**b, "min_after_dose": round((b["ts"] - dose) / 60_000, 1) if dose is not None else None}


def summarize(rec: SessionRecord, tolerance_min: float = REMS_TOLERANCE_MIN) -> dict[str, Any]:
    """The whole review summary: vitals, alert episodes and counts, REMS values, notes."""
    eps = episodes(rec)
    return {
        "session": rec.header.get("id"),
        "vitals": vital_stats(rec),
        "episodes": eps,
        "alerts": alert_summary(eps, rec.end_ms),
        "rems": rems_values(rec, tolerance_min),
        "doses": [e for e in rec.events if e["type"] == "dose"],
        "notes": [e for e in rec.events if e["type"] in ("note", "addendum", "observe", "bp", "limit")],
        "n_readings": len(rec.readings),
    }


def fmt_duration(s: float | None) -> str:
    """Seconds as "1 h 02 min", "3 min 05 s" or "12 s" ("—" for None)."""
    if s is None:
        return "—"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def fmt_value(v: float | None) -> str:
    """A vital's value for display: integers without decimals, else one decimal."""
    if v is None:
        return "—"
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def fmt_limits(low: float | None, high: float | None) -> str:
    """Alarm limits for display: "90–180", one-sided "≥ 90" / "≤ 180", none "—"."""
    if low is not None and high is not None:
        return f"{fmt_value(low)}–{fmt_value(high)}"
    if low is not None:
        return f"≥ {fmt_value(low)}"
    if high is not None:
        return f"≤ {fmt_value(high)}"
    return "—"


def fmt_when(min_after_dose: float | None) -> str:
    """A BP's time relative to the dose: "+41 min", "-3 min", "at dose" within a minute (never "-0")."""
    if min_after_dose is None:
        return ""
    if abs(min_after_dose) < 1:
        return "at dose"
    return f"{round(min_after_dose):+d} min"


def fmt_bp(b: dict[str, Any] | None) -> str:
    """A REMS BP value with its source and time: "128/80 mmHg (manual, -3 min)"."""
    if not b:
        return "not recorded"
    when = fmt_when(b.get("min_after_dose"))
    return f"{fmt_value(b['sbp'])}/{fmt_value(b['dbp'])} mmHg ({b['source']}{', ' + when if when else ''})"


# tty/device paths in technical alarm texts ("could not open port /dev/pts/7: [Errno 2] …")
_DEV_PATH = re.compile(r"""['"]?/dev/[^\s'",;)]*[^\s'",;):]['"]?|\[Errno \d+\]""")


def short_alert_text(ep: dict[str, Any], max_chars: int = 60) -> str:
    """An alert's text for narrow places (PDF): device paths dropped, cut at a word with "…".

    The full text stays on the review page (and in the archive)."""
    text = ep.get("message") or (short_label(ep["metric"]) if ep.get("metric") else "") or ""
    if len(text) <= max_chars:
        return text
    text = " ".join(_DEV_PATH.sub("", text).split()).replace(" :", ":").rstrip(": ")
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars - 1].rsplit(" ", 1)[0].rstrip(" :,;([")
    return cut + "…"
