"""The esketamine (Spravato) REMS Patient Monitoring Form, field by field — PURE (no I/O).

The fields and their order follow the program's outpatient form (sources and what could
and could not be confirmed: docs/rems.md). Each field has one of four sources:

- "session": prefilled by VitalWatch from the archived session (`prefill(rec, bp)`):
  treatment date, dose, total minutes (first dose → end), monitored ≥ 2 h, minutes until
  ready to leave, BP before dosing / ~40 min after / before the end with their times (the
  rules of monitor.sessions.review.rems_values, which prefer the nurse's manual checks),
  sedation / dissociation / respiratory depression (the nurse's observations), increased BP
  (the label's surge rule) and other adverse events (nausea observations). Staff may correct
  the observation and BP fields; a correction is stored as a staff entry and shown so.
- "config": the healthcare setting (`[rems.setting]`, name defaults to `clinic.name`);
  staff may override it for one form.
- "staff": entered by a nurse or director on the REMS page (lot number, concomitant
  medications, the HCP conducting monitoring, vital signs acceptable, serious adverse
  events, attestation …). Never guessed: blank until someone enters it.
- "outside": the patient's name, birth date and sex. VitalWatch stores a patient
  identifier, never names (PRODUCT.md), so these are left blank on the PDF for the clinic
  to complete where the identity lives; they do not count against completeness.

Staff entries are append-only events (`rems` dict in the event data, see
monitor/sessions/rems_store.py); `fold()` replays them: the latest entry per field wins and an
empty value clears it. `build()` turns prefill + entries + setting into what the page, the
PDF and the report show, with a completeness state ("ready to submit" / "missing: …").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model.readings import METRICS, check_value

DAY_MS = 86_400_000
MIN_MONITOR_MIN = 120.0  # "Patient must be monitored for at least 2 hours"
MAX_TEXT = 500
YES, NO = "yes", "no"
SECTIONS = (
    "Patient information", "Concomitant medication", "Healthcare provider conducting patient monitoring",
    "Healthcare setting", "Treatment session", "Treatment duration", "REMS evaluation question",
    "Monitoring of vital signs", "Monitoring of blood pressure", "Adverse events", "Attestation",
)


class InvalidEntry(ValueError):
    """A staff entry the form cannot take (unknown field, not staff-editable, bad value)."""


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of the form."""

    key: str
    section: str
    label: str
    kind: str  # text | yesno | bp | minutes | date | dose | attest
    source: str  # session | config | staff | outside
    required: bool = True
    editable: bool = False  # staff may enter or correct it on the REMS page
    # provenance of the field itself: "form" (on the program's form), "form-overview" (the
    # manufacturer's description of the current form), "issue" (asked by the clinic, wording
    # not confirmed against the form text) — docs/rems.md
    origin: str = "form"


def _f(key: str, section: int, label: str, kind: str, source: str, **kw: Any) -> FormField:
    editable = kw.pop("editable", source in ("staff", "config"))
    return FormField(key, SECTIONS[section], label, kind, source, editable=editable, **kw)


FIELDS: tuple[FormField, ...] = (
    _f("patient_first_name", 0, "First name", "text", "outside"),
    _f("patient_middle_initial", 0, "MI", "text", "outside", required=False),
    _f("patient_last_name", 0, "Last name", "text", "outside"),
    _f("patient_birthdate", 0, "Birthdate (MM/DD/YYYY)", "text", "outside"),
    _f("patient_sex", 0, "Sex", "text", "outside"),
    _f("first_treatment", 0, "Is this the patient's first treatment?", "yesno", "staff", origin="form-overview"),
    _f("patient_enrolled", 0, "If first treatment: is the patient enrolled in the REMS?", "yesno", "staff",
       origin="form-overview"),
    _f("benzodiazepines", 1, "Benzodiazepines", "yesno", "staff"),
    _f("non_benzo_hypnotics", 1, "Non-benzodiazepine sedative hypnotics", "yesno", "staff"),
    _f("psychostimulants", 1, "Psychostimulants", "yesno", "staff"),
    _f("maois", 1, "Monoamine oxidase inhibitors (MAOIs)", "yesno", "staff"),
    _f("hcp_first_name", 2, "First name", "text", "staff"),
    _f("hcp_last_name", 2, "Last name", "text", "staff"),
    _f("hcp_phone", 2, "Telephone", "text", "staff"),
    _f("hcp_email", 2, "Email", "text", "staff"),
    _f("setting_name", 3, "Healthcare setting name", "text", "config"),
    _f("setting_address1", 3, "Address 1", "text", "config"),
    _f("setting_address2", 3, "Address 2", "text", "config", required=False),
    _f("setting_city", 3, "City", "text", "config"),
    _f("setting_state", 3, "State", "text", "config"),
    _f("setting_zip", 3, "ZIP", "text", "config"),
    _f("treatment_date", 4, "Treatment date (MM/DD/YYYY)", "date", "session"),
    _f("dose", 4, "Dose administered (56 mg / 84 mg / other)", "dose", "session"),
    _f("lot_number", 4, "Lot number", "text", "staff"),
    _f("total_minutes", 5, "Total time, minutes (first device administration to completion of monitoring)",
       "minutes", "session"),
    _f("monitored_2h", 5, "Patient monitored for at least 2 hours", "yesno", "session", origin="issue"),
    _f("ready_minutes", 6, "Without the 2-hour minimum, ready to leave after (minutes from start of "
       "administration)", "minutes", "session", editable=True),
    _f("vitals_ok_pre", 7, "Vital signs in acceptable range prior to administration", "yesno", "staff"),
    _f("vitals_ok_end", 7, "Vital signs in acceptable range prior to treatment session completion", "yesno",
       "staff"),
    _f("bp_pre", 8, "Blood pressure prior to administration", "bp", "session", editable=True),
    _f("bp_40", 8, "Blood pressure 40 min post-administration", "bp", "session", editable=True),
    _f("bp_end", 8, "Blood pressure prior to treatment session completion", "bp", "session", editable=True),
    _f("sedation", 9, "Sedation", "yesno", "session", editable=True),
    _f("dissociation", 9, "Dissociation", "yesno", "session", editable=True, origin="issue"),
    _f("respiratory_depression", 9, "Respiratory depression", "yesno", "session", editable=True, origin="issue"),
    _f("bp_increase", 9, "Increase in blood pressure", "yesno", "session", editable=True, origin="issue"),
    _f("other_adverse_events", 9, "Other adverse events", "text", "session", editable=True, origin="issue"),
    _f("serious_adverse_event", 9, "Serious adverse event", "yesno", "staff", origin="issue"),
    _f("serious_adverse_event_details", 9, "Serious adverse event: description", "text", "staff",
       origin="issue"),
    _f("hcp_attestation", 10, "Healthcare provider attests the form is complete and accurate", "attest",
       "staff", origin="issue"),
)
BY_KEY = {f.key: f for f in FIELDS}
# required only when another field says so
CONDITIONAL = {"patient_enrolled": ("first_treatment", YES), "serious_adverse_event_details":
               ("serious_adverse_event", YES)}


def is_rems_session(header: dict[str, Any]) -> bool:
    """True for an esketamine (Spravato) session — the only kind the REMS form applies to."""
    proto = str(header.get("protocol") or "").lower()
    return "esketamine" in proto or "spravato" in proto


# --- prefill (from an archived SessionRecord; JSON-able, stored in the session summary) --------
def prefill(rec: Any, bp_response: dict[str, Any] | None = None) -> dict[str, Any]:
    """What VitalWatch knows for the form, from the archived session (pure).

    `rec` is a monitor.sessions.review.SessionRecord; `bp_response` the session's BP rise
    (monitor.sessions.quality.bp_response) for the increased-BP field."""
    from monitor.sessions.review import rems_values

    r = rems_values(rec)
    h = rec.header
    doses = [float(e["dose_mg"]) for e in rec.events if e["type"] == "dose" and e.get("dose_mg")]
    # the dose events' total when the nurse recorded mg per event, else the session's dose
    dose_mg = sum(doses) if doses else (float(h["dose_mg"]) if h.get("dose_mg") else None)
    rise = bp_response or {}
    surge = rise.get("surge")
    return {
        "required": is_rems_session(h),
        "session": h.get("id"), "patient": h.get("patient"), "room": h.get("room"),
        "start_ms": rec.start_ms, "dose_ms": r["dose_ms"], "end_ms": rec.end_ms,
        "dose_mg": dose_mg,
        "total_min": r["total_monitored_min"] if r["dose_ms"] is not None else None,
        "ready_min": r["ready_min"] if r["dose_ms"] is not None else None,
        "ready_ms": int(r["ready_ms"]) if r["ready_ms"] is not None else None,
        "bp_pre": r["bp_pre"], "bp_40": r["bp_40"], "bp_end": r["bp_end"],
        "observations": r["observations"],
        "bp_rise": {"sbp": rise.get("sbp_rise_90"), "dbp": rise.get("dbp_rise_90"), "surge": surge}
        if surge is not None else None,
    }


# --- staff entries ---------------------------------------------------------------------------
_BP_RE = re.compile(r"^\s*(\d{2,3})\s*/\s*(\d{2,3})\s*(?:mmhg)?\s*(?:(?:at|@)?\s*(\d{1,2}:\d{2}))?\s*$", re.I)


def validate_entry(key: str, value: Any) -> str:
    """A staff entry's normalised text ("" clears the field); raises InvalidEntry."""
    f = BY_KEY.get(key)
    if f is None:
        raise InvalidEntry(f"unknown REMS form field {key!r}")
    if not f.editable:
        raise InvalidEntry(f"{f.label!r} comes from the session record and cannot be entered here")
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    if len(text) > MAX_TEXT:
        raise InvalidEntry(f"{f.label}: at most {MAX_TEXT} characters")
    if f.kind in ("yesno", "attest"):
        low = text.lower()
        if low not in (YES, NO) or (f.kind == "attest" and low != YES):
            raise InvalidEntry(f"{f.label}: answer {'yes' if f.kind == 'attest' else 'yes or no'}")
        return low
    if f.kind == "minutes":
        if not text.isdigit() or int(text) > 24 * 60:
            raise InvalidEntry(f"{f.label}: whole minutes, 0–1440")
        return str(int(text))
    if f.kind == "bp":
        m = _BP_RE.match(text)
        if not m:
            raise InvalidEntry(f"{f.label}: write it as SBP/DBP, e.g. 132/84 (optionally 'at 10:41')")
        sbp, dbp = int(m.group(1)), int(m.group(2))
        for metric, v in (("sbp", sbp), ("dbp", dbp)):
            if check_value(metric, v) is not None:
                raise InvalidEntry(f"{f.label}: {metric} {v} outside {METRICS[metric].low:g}–"
                                   f"{METRICS[metric].high:g} mmHg")
        if dbp >= sbp:
            raise InvalidEntry(f"{f.label}: diastolic ({dbp}) must be below systolic ({sbp})")
        return f"{sbp}/{dbp}" + (f" at {m.group(3)}" if m.group(3) else "")
    if key == "hcp_email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise InvalidEntry(f"{f.label}: not an email address")
    return text


def entry_text(values: dict[str, str]) -> str:
    """Human text of one save, for the event list ("REMS form: Lot number = A123; …")."""
    parts = [f"{BY_KEY[k].label} = {v or '(cleared)'}" for k, v in values.items() if k in BY_KEY]
    return "REMS form: " + "; ".join(parts)


def fold(events: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Replay REMS events (time order): ({field: {value, by, ts}}, submission or None).

    An event is any dict with `ts`, `user` and a `rems` dict (entries) or `rems_submitted`
    dict (submission), as decoded from the archive's session events."""
    staff: dict[str, dict[str, Any]] = {}
    submitted: dict[str, Any] | None = None
    for e in sorted(events, key=lambda e: (int(e["ts"]), str(e.get("id") or ""))):
        entries = e.get("rems")
        if isinstance(entries, dict):
            for k, v in entries.items():
                if k not in BY_KEY:
                    continue
                if v in (None, ""):
                    staff.pop(k, None)
                else:
                    staff[k] = {"value": str(v), "by": e.get("user") or "unknown", "ts": int(e["ts"])}
        sub = e.get("rems_submitted")
        if isinstance(sub, dict):
            submitted = {**sub, "by": e.get("user") or "unknown", "ts": int(e["ts"])}
    return staff, submitted


# --- the form as shown -------------------------------------------------------------------------
@dataclass
class FieldValue:
    """One field with its value (None = blank) and where the value came from."""

    field: FormField
    value: str | None
    source: str = ""  # e.g. "VitalWatch: manual check, -3 min", "entered by nurse-amy", "config"
    missing: bool = False


@dataclass
class FormState:
    """The whole form of one session: values, completeness, due date, submission."""

    session: str
    patient: str
    required: bool
    fields: list[FieldValue]
    missing: list[str]
    warnings: list[str]
    due_ms: int
    overdue: bool
    submitted: dict[str, Any] | None
    staff: dict[str, dict[str, Any]] = field(default_factory=dict)
    treatment_ms: int = 0  # first dose (else session start): the due date counts from it
    due_days: int = 7

    @property
    def status(self) -> str:
        """"submitted", "ready to submit" or "incomplete"."""
        if self.submitted:
            return "submitted"
        return "ready to submit" if not self.missing else "incomplete"

    @property
    def status_text(self) -> str:
        """"ready to submit" / "missing: BP at 40 min, lot number" / "submitted …"."""
        if self.submitted:
            return f"submitted ({self.submitted.get('method') or 'recorded'})"
        if not self.missing:
            return "ready to submit"
        return "missing: " + ", ".join(self.missing)

    def value(self, key: str) -> str | None:
        """The shown value of one field."""
        return next(fv.value for fv in self.fields if fv.field.key == key)


SHORT = {  # short names for the "missing: …" line
    "bp_pre": "BP before dosing", "bp_40": "BP at 40 min", "bp_end": "BP before discharge",
    "lot_number": "lot number", "ready_minutes": "ready-to-leave time", "total_minutes": "monitored minutes",
    "dose": "dose", "treatment_date": "treatment date", "hcp_attestation": "HCP attestation",
    "serious_adverse_event": "serious adverse event", "serious_adverse_event_details": "serious AE description",
    "vitals_ok_pre": "vitals acceptable before dosing", "vitals_ok_end": "vitals acceptable at end",
    "first_treatment": "first treatment?", "patient_enrolled": "patient enrolled?",
    "benzodiazepines": "benzodiazepines", "non_benzo_hypnotics": "sedative hypnotics",
    "psychostimulants": "psychostimulants", "maois": "MAOIs", "hcp_first_name": "HCP first name",
    "hcp_last_name": "HCP last name", "hcp_phone": "HCP telephone", "hcp_email": "HCP email",
    "setting_name": "setting name", "setting_address1": "setting address", "setting_city": "setting city",
    "setting_state": "setting state", "setting_zip": "setting ZIP", "monitored_2h": "monitored ≥ 2 h",
    "sedation": "sedation", "dissociation": "dissociation", "respiratory_depression": "respiratory depression",
    "bp_increase": "increased BP", "other_adverse_events": "other adverse events",
}


def _clock(ms: int | None, tz: ZoneInfo) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M")


def _when(minutes: float | None) -> str:
    if minutes is None:
        return ""
    return "at dose" if abs(minutes) < 1 else f"{round(minutes):+d} min"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _session_value(key: str, p: dict[str, Any], tz: ZoneInfo) -> tuple[str | None, str]:
    """(value, source) of a session-sourced field from the prefill (None = not known)."""
    dose = p.get("dose_ms")
    if key == "treatment_date":
        ms = dose if dose is not None else p.get("start_ms")
        return (datetime.fromtimestamp(ms / 1000, tz).strftime("%m/%d/%Y") if ms is not None else None,
                "VitalWatch: first dose" if dose is not None else "VitalWatch: session start")
    if key == "dose":
        mg = p.get("dose_mg")
        if mg is None:
            return None, ""
        text = f"{_num(mg)} mg" if mg in (56, 84) else f"Other: {_num(mg)} mg"
        return text, "VitalWatch: session dose"
    if key == "total_minutes":
        t = p.get("total_min")
        return (None, "") if t is None else (f"{round(t)}", "VitalWatch: first dose → end of session")
    if key == "monitored_2h":
        t = p.get("total_min")
        return (None, "") if t is None else (YES if t >= MIN_MONITOR_MIN else NO,
                                             f"VitalWatch: {round(t)} min monitored")
    if key == "ready_minutes":
        t = p.get("ready_min")
        return (None, "") if t is None else (f"{round(t)}", "VitalWatch: ready-to-leave observation at "
                                             + _clock(p.get("ready_ms") or (dose or 0) + int(t * 60_000), tz))
    if key in ("bp_pre", "bp_40", "bp_end"):
        b = p.get(key)
        if not b:
            return None, ""
        text = f"{_num(b['sbp'])}/{_num(b['dbp'])} mmHg at {_clock(b['ts'], tz)}"
        when = _when(b.get("min_after_dose"))
        src = "nurse's manual check" if b["source"] == "manual" else f"device {b['source']}"
        return text + (f" ({when})" if when else ""), f"VitalWatch: {src}"
    if key in ("sedation", "dissociation", "respiratory_depression"):
        o = (p.get("observations") or {}).get(key)
        if o is None:
            return None, ""
        if o["occurred"]:
            return YES, f"VitalWatch: observation recorded at {_when(o.get('first_min')) or 'start'}"
        return NO, "VitalWatch: no observation recorded"
    if key == "bp_increase":
        r = p.get("bp_rise")
        if not r:
            return None, ""
        rise = f"SBP {_signed(r.get('sbp'))}, DBP {_signed(r.get('dbp'))} within 90 min of dose"
        return (YES if r["surge"] else NO), f"VitalWatch: {rise} (surge = SBP ≥ +40 or DBP ≥ +25)"
    if key == "other_adverse_events":
        o = (p.get("observations") or {}).get("nausea")
        if o is None:
            return None, ""
        if o["occurred"]:
            return f"Nausea/dizziness ({_when(o.get('first_min')) or 'start'})", "VitalWatch: observation recorded"
        return "None recorded", "VitalWatch: no other observation recorded"
    return None, ""


def _signed(v: float | None) -> str:
    return "—" if v is None else f"{v:+.0f}"


def setting_defaults(setting: Any, clinic_name: str = "") -> dict[str, str]:
    """The configured healthcare setting as form values (`[rems.setting]`)."""
    get = (lambda k: str(getattr(setting, k, "") or "")) if setting is not None else (lambda k: "")
    return {"setting_name": get("name") or clinic_name, "setting_address1": get("address1"),
            "setting_address2": get("address2"), "setting_city": get("city"), "setting_state": get("state"),
            "setting_zip": get("zip")}


def treatment_ms(p: dict[str, Any]) -> int:
    """The treatment's time: the first dose, else the session start."""
    return int(p["dose_ms"] if p.get("dose_ms") is not None else p.get("start_ms") or 0)


def due_ms(p: dict[str, Any], due_days: int) -> int:
    """When the form is due: the treatment + due_days (the program: within 7 days)."""
    return treatment_ms(p) + due_days * DAY_MS


def build(p: dict[str, Any], staff: dict[str, dict[str, Any]], submitted: dict[str, Any] | None,
          setting: dict[str, str], tz_name: str, now_ms: int, due_days: int = 7) -> FormState:
    """The form as shown and printed, with its completeness (pure)."""
    tz = ZoneInfo(tz_name)
    out: list[FieldValue] = []
    for f in FIELDS:
        value: str | None
        if f.source == "outside":
            value, source = None, "completed by the clinic outside VitalWatch (no names stored)"
        elif f.key in staff:
            s = staff[f.key]
            value = s["value"]
            source = f"entered by {s['by']} at {datetime.fromtimestamp(s['ts'] / 1000, tz):%Y-%m-%d %H:%M}"
            if f.kind == "attest":
                value = f"Attested by {s['by']} at {datetime.fromtimestamp(s['ts'] / 1000, tz):%m/%d/%Y %H:%M}"
        elif f.source == "session":
            value, source = _session_value(f.key, p, tz)
        elif f.source == "config":
            value, source = (setting.get(f.key) or None), "clinic configuration [rems.setting]"
        else:
            value, source = None, ""
        if value is None:
            source = source if f.source == "outside" else ""
        out.append(FieldValue(f, value, source))
    values = {fv.field.key: fv.value for fv in out}
    missing = []
    for fv in out:
        f = fv.field
        cond = CONDITIONAL.get(f.key)
        needed = f.required and f.source != "outside" and (cond is None or values.get(cond[0]) == cond[1])
        if needed and not fv.value:
            fv.missing = True
            missing.append(SHORT.get(f.key, f.label))
    warnings = []
    if values.get("monitored_2h") == NO:
        warnings.append(f"monitored {values.get('total_minutes')} min: less than the required 2 hours")
    if p.get("dose_ms") is None:
        warnings.append("no dose was recorded in this session")
    due = due_ms(p, due_days)
    return FormState(session=str(p.get("session")), patient=str(p.get("patient")), required=bool(p.get("required")),
                     fields=out, missing=missing, warnings=warnings, due_ms=due,
                     overdue=submitted is None and now_ms > due, submitted=submitted, staff=staff,
                     treatment_ms=treatment_ms(p), due_days=due_days)
