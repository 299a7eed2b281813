"""ORU^R01 v2.6 (IHE PCD-01 shape) from stored readings, and reading the receiver's ACK (pure).

What we send (docs/interoperability.md "What we send"):

    MSH|^~\\&|<sending_application>|<sending_facility>|<receiving_application>|<receiving_facility>|
        <now>||ORU^R01^ORU_R01|<control id>|P|2.6|||AL|NE||UNICODE UTF-8|||<IHE PCD-01 profile>
    PID|||<patient id>^^^<facility>^MR||^^^^^^U           (no name: VitalWatch keeps none)
    PV1||O|<room>^^^<facility>
    OBR|1|<session id>^<app>|<control id>^<app>|182777000^monitoring of patient^SCT|||<first>|<last>
    OBX|n|NM|<MDC code>^<MDC mnemonic>^MDC|<reading #>|<value>|<UCUM>^<UCUM>^UCUM|||||F|||<time>||||<device>^VITALWATCH
    NTE|1|L|flags: <flags>                               (after a flagged reading's last OBX)

One OBX per stored value, with its measurement time in OBX-14 (UTC, milliseconds). A
session longer than `max_obx` values is split into several messages, in time order, each
with its own control id (`<session digest>-<part>`: the same for every re-send).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import hl7

from monitor.interop.rows import METRIC_ORDER, VitalRow
from monitor.model.codec import fmt_value
from monitor.model.vitalcodes import SEND

PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
MONITORING = "182777000^monitoring of patient^SCT"


@dataclass(frozen=True, slots=True)
class Party:
    """Who sends to whom (MSH-3..6) — from `[hl7.outbound]`."""

    app: str = "VITALWATCH"
    facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""


def escape(text: str) -> str:
    """Text made safe inside a field with the standard separators |^~\\&."""
    out = text.replace("\\", "\\E\\")
    for ch, code in (("|", "F"), ("^", "S"), ("~", "R"), ("&", "T")):
        out = out.replace(ch, f"\\{code}\\")
    return re.sub(r"[\r\n]", " ", out)


def dtm(ms: int) -> str:
    """HL7 DTM in UTC with milliseconds and offset: 20260301101500.123+0000."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y%m%d%H%M%S") + f".{ms % 1000:03d}+0000"


def control_id(seed: str, part: int) -> str:
    """A stable MSH-10 (≤ 20 characters) for part `part` of what `seed` names."""
    return f"VW{hashlib.sha256(seed.encode()).hexdigest()[:12]}-{part:03d}"


def _chunks(rows: Sequence[VitalRow], max_obx: int) -> list[list[VitalRow]]:
    out: list[list[VitalRow]] = []
    cur: list[VitalRow] = []
    n = 0
    for r in rows:
        k = sum(1 for m in r.values if m in SEND)
        if cur and n + k > max_obx:
            out.append(cur)
            cur, n = [], 0
        cur.append(r)
        n += k
    if cur:
        out.append(cur)
    return out


def oru_message(rows: Sequence[VitalRow], *, control: str, patient: str, room: str, order: str,
                party: Party, now_ms: int) -> str:
    """One ORU^R01 carrying `rows` (already in time order)."""
    fac = escape(party.facility)
    app = escape(party.app)
    segs = [
        "|".join(["MSH", "^~\\&", app, fac, escape(party.receiving_app), escape(party.receiving_facility),
                  dtm(now_ms).split(".")[0] + "+0000", "", "ORU^R01^ORU_R01", control, "P", "2.6", "", "", "AL", "NE",
                  "", "UNICODE UTF-8", "", "", PROFILE]),
        f"PID|||{escape(patient)}^^^{fac}^MR||^^^^^^U",
        f"PV1||O|{escape(room)}^^^{fac}",
        f"OBR|1|{escape(order)}^{app}|{control}^{app}|{MONITORING}|||"
        f"{dtm(rows[0].ts_ms) if rows else ''}|{dtm(rows[-1].ts_ms) if rows else ''}",
    ]
    n = 0
    for i, r in enumerate(rows, start=1):
        for m in METRIC_ORDER:
            if m not in r.values or m not in SEND:
                continue
            s = SEND[m]
            n += 1
            segs.append(f"OBX|{n}|NM|{s.mdc}^{s.mdc_name}^MDC|{i}|{fmt_value(r.values[m])}|{s.ucum}^{s.ucum}^UCUM"
                        f"|||||F|||{dtm(r.ts_ms)}||||{escape(r.dev)}^VITALWATCH")
        if r.flags and r.values:
            segs.append(f"NTE|1|L|flags: {escape(','.join(r.flags))}")
    return "\r".join(segs) + "\r"


def session_messages(rows: Sequence[VitalRow], *, session_id: str, patient: str, room: str, party: Party,
                     max_obx: int, now_ms: int) -> list[tuple[str, str]]:
    """(control id, message) for every part of a session's readings, in time order."""
    valued = [r for r in rows if any(m in SEND for m in r.values)]
    parts = _chunks(valued, max_obx) or [[]]
    out = []
    for i, chunk in enumerate(parts, start=1):
        cid = control_id(f"session:{session_id}", i)
        out.append((cid, oru_message(chunk, control=cid, patient=patient, room=room, order=session_id,
                                     party=party, now_ms=now_ms)))
    return out


# --- the receiver's answer ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AckReading:
    """What an ACK says: MSA-1, MSA-2 and the error text (MSA-3 / ERR) if any."""

    code: str
    control_id: str
    text: str


def read_ack(raw: bytes) -> AckReading | None:
    """Parse an ACK with python-hl7; None when it is not an HL7 message with an MSA."""
    try:
        text = raw.decode("utf-8", "replace").replace("\r\n", "\r").replace("\n", "\r").strip()
        msg = hl7.parse(text)
        msa = msg.segment("MSA")
    except (hl7.ParseException, KeyError, IndexError, ValueError):
        return None
    code = str(msa[1]) if len(msa) > 1 else ""
    ctrl = str(msa[2]) if len(msa) > 2 else ""
    parts = [str(msa[3])] if len(msa) > 3 and str(msa[3]) else []
    try:
        for err in msg.segments("ERR"):
            parts += [str(err[i]) for i in (3, 8, 1) if len(err) > i and str(err[i])]
    except KeyError:
        pass  # no ERR segment
    return AckReading(code.strip().upper(), ctrl.strip(), "; ".join(parts)[:500])
