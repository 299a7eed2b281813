"""FHIR R4 Bundle of vital-signs Observations from stored readings (pure; JSON-ready dicts).

Per the R4 vital-signs profiles: category `vital-signs`; LOINC code (+ the MDC code as a
second coding); UCUM units; `effectiveDateTime`; `subject` by the patient identifier (a
logical reference: VitalWatch keeps no Patient resource). Blood pressure is one panel
Observation (85354-9) with systolic (8480-6) and diastolic (8462-4) components; a reading
with only one of them gets a `dataAbsentReason` on the other. MAP (8478-0) stands alone.
Each Observation carries an identifier (session/device/time/metric), so a transaction Bundle
POSTed twice creates nothing twice (`ifNoneExist`).

Counts: one Observation per stored value, except that a reading's SBP and DBP share one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.interop.rows import METRIC_ORDER, VitalRow
from monitor.model.vitalcodes import SEND

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:iso:std:iso:11073:10101"
CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs", "display": "Vital Signs"}], "text": "Vital Signs"}
PROFILE = "http://hl7.org/fhir/StructureDefinition/"
PROFILES = {"hr": "heartrate", "spo2": "oxygensat", "rr": "resprate", "temp": "bodytemp", "map": "vitalsigns",
            "bp": "bp"}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
NAMESPACE = uuid.UUID("6f1e5a52-7c1e-4b44-9a55-2f0f6f3c2a10")  # fixed: the same reading → the same uuid


def iso(ms: int) -> str:
    """An instant as FHIR dateTime with milliseconds and offset (UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _quantity(metric: str, value: float) -> dict[str, Any]:
    s = SEND[metric]
    return {"value": value, "unit": s.unit_display, "system": UCUM, "code": s.ucum}


def _code(metric: str) -> dict[str, Any]:
    s = SEND[metric]
    codings = [{"system": LOINC, "code": s.loinc, "display": s.loinc_display}]
    if metric == "spo2":  # R4's oxygensat profile asks for 2708-6; 59408-5 says "by pulse oximetry"
        codings.append({"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"})
    codings.append({"system": MDC, "code": s.mdc, "display": s.mdc_name})
    return {"coding": codings, "text": s.loinc_display}


def observations(row: VitalRow, *, clinic: str, session_id: str, patient: str,
                 patient_system: str) -> list[dict[str, Any]]:
    """The Observations of one reading."""
    base: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "category": [CATEGORY],
        "subject": {"identifier": {"system": patient_system, "value": patient}},
        "effectiveDateTime": iso(row.ts_ms), "device": {"display": row.dev},
    }
    if row.flags:
        base["note"] = [{"text": "VitalWatch quality flags: " + ", ".join(row.flags)}]

    def ident(what: str) -> list[dict[str, str]]:
        return [{"system": f"urn:vitalwatch:{clinic}:observation", "value": f"{session_id}/{row.dev}/{row.ts_ms}/{what}"}]

    out: list[dict[str, Any]] = []
    if "sbp" in row.values or "dbp" in row.values:
        comps = []
        for m in ("sbp", "dbp"):
            s = SEND[m]
            comp: dict[str, Any] = {"code": {"coding": [{"system": LOINC, "code": s.loinc, "display": s.loinc_display},
                                                        {"system": MDC, "code": s.mdc, "display": s.mdc_name}],
                                             "text": s.loinc_display}}
            if m in row.values:
                comp["valueQuantity"] = _quantity(m, row.values[m])
            else:
                comp["dataAbsentReason"] = {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed",
                    "display": "Not Performed"}]}
            comps.append(comp)
        out.append({**base, "meta": {"profile": [PROFILE + PROFILES["bp"]]}, "identifier": ident("bp"),
                    "code": {"coding": [{"system": LOINC, "code": BP_PANEL[0], "display": BP_PANEL[1]}],
                             "text": "Blood pressure"},
                    "component": comps})
    for m in METRIC_ORDER:
        if m in ("sbp", "dbp") or m not in row.values or m not in SEND:
            continue
        obs = {**base, "identifier": ident(m), "code": _code(m), "valueQuantity": _quantity(m, row.values[m])}
        if m in PROFILES:
            obs["meta"] = {"profile": [PROFILE + PROFILES[m]]}
        out.append(obs)
    return out


def session_bundle(rows: Sequence[VitalRow], *, clinic: str, session_id: str, patient: str, now_ms: int,
                   patient_system: str = "", bundle_type: str = "collection") -> dict[str, Any]:
    """A Bundle (`collection`, or `transaction` for POSTing) of the session's Observations."""
    system = patient_system or f"urn:vitalwatch:{clinic}:patient"
    entries = []
    for row in rows:
        for obs in observations(row, clinic=clinic, session_id=session_id, patient=patient, patient_system=system):
            ident = obs["identifier"][0]
            entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, ident['system'] + '|' + ident['value'])}",
                                     "resource": obs}
            if bundle_type == "transaction":
                entry["request"] = {"method": "POST", "url": "Observation",
                                    "ifNoneExist": f"identifier={ident['system']}|{ident['value']}"}
            entries.append(entry)
    return {"resourceType": "Bundle", "type": bundle_type, "timestamp": iso(now_ms),
            "identifier": {"system": f"urn:vitalwatch:{clinic}:session", "value": session_id},
            "entry": entries}


def expected_observations(rows: Sequence[VitalRow]) -> int:
    """How many Observations `session_bundle` makes of `rows` (for checks and messages)."""
    n = 0
    for r in rows:
        ms = [m for m in r.values if m in SEND]
        n += len([m for m in ms if m not in ("sbp", "dbp")]) + (1 if {"sbp", "dbp"} & set(ms) else 0)
    return n
