"""HL7 v2 ORU^R01 (IHE PCD-01) → Readings, refusals and the answer to send (pure; never raises).

`decode(raw, recv_ms, sources, tz)` parses one MLLP frame's message with python-hl7 (the
separators are the ones MSH-1/MSH-2 declare; escape sequences are undone by the library)
and returns an `Hl7Result`: the readings to store, the refusals for `rejects`, and whether
to answer AA, AE (understood but refused; with HL7 error codes for ERR) or AR (not
parseable, not an ORU^R01, or no MSH-10 to answer to). `ack_message()` builds the answer.

Per OBX (docs/interoperability.md has the full conformance table):
- OBX-3: an MDC or LOINC code of one of our metrics (monitor/model/vitalcodes.py), primary
  or alternate coding; any other code (vendor-private `99MNDRY` codes, waveform or ECG
  rhythm terms) is skipped and counted, never refused.
- OBX-5 (NM, SN "=n", or ST holding a number): the value. A negative number is the vendors'
  "no valid data" marker (Mindray sends -100, -999, -99.9): absent, not refused. An empty
  or `""` value is absent.
- OBX-6: converted to our unit (kPa → mmHg, °F → °C) or refused `bad_unit`.
- OBX-11: F, R, C, P or empty → a value; X (cannot be obtained) → no value, the reading is
  flagged `measurement_error`; D/W (delete, wrong) and the rest → refused `result_status`.
- OBX-8 (abnormal flags) is ignored: the alert engine decides what is abnormal.
- Time: OBX-14, else the group's OBR-7, else the receive time (`used_receive_time`); a time
  without offset takes MSH-7's offset, else the clinic's time zone; then the contract's
  clock-skew rule (`settle_ts`).
- Device: the configured `source` matched to OBX-18 (an OBX without one inherits the
  previous OBX-18 of its OBR group, as PCD-01 containment does), else MSH-3, else PV1-3.
Values of one device at one time become one Reading; when two codes give the same metric
(ECG heart rate and pulse-oximeter pulse rate) the better-ranked code wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import hl7

from monitor.model import vitalcodes
from monitor.model.readings import Reading, Refusal, accept, settle_ts

RAW_KEEP = 512
# HL7 table 0357 (message error condition codes) used in ERR
E_REQUIRED = ("101", "Required field missing")
E_DATA_TYPE = ("102", "Data type error")
E_TABLE_VALUE = ("103", "Table value not found")
E_MSG_TYPE = ("200", "Unsupported message type")
E_EVENT = ("201", "Unsupported event code")
E_VERSION = ("203", "Unsupported version id")
E_UNKNOWN_KEY = ("204", "Unknown key identifier")
E_INTERNAL = ("207", "Application internal error")

VALUE_STATUSES = frozenset({"F", "R", "C", "P", ""})
_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$")
_DTM = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?$")


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: HL7 error code (table 0357), its text, where, and what we say."""

    code: str
    text: str
    location: str = ""  # "OBX^3^18" style: segment^sequence^field
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Header:
    """What an answer to the message needs from its MSH."""

    field_sep: str = "|"
    encoding: str = "^~\\&"
    sending_app: str = ""  # MSH-3 as received
    sending_facility: str = ""  # MSH-4
    receiving_app: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_type: str = ""  # MSH-9 as received
    control_id: str = ""  # MSH-10
    processing_id: str = "P"  # MSH-11
    version: str = "2.6"  # MSH-12


@dataclass(slots=True)
class Hl7Result:
    """The outcome of one message."""

    ack: str  # "AA" | "AE" | "AR"
    header: Header
    readings: list[Reading] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    errors: list[AckError] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)  # configured devices this message named
    ignored: int = 0  # OBX segments skipped (not our codes, absent values, lower-ranked duplicates)
    used_receive_time: bool = False


Sources = Mapping[str, tuple[str, str]]  # configured source → (room, device)


def decode(raw: bytes, recv_ms: int, sources: Sources, tz: tzinfo = UTC,
           *, source_label: str = "hl7") -> Hl7Result:
    """Parse one message received at `recv_ms`; see the module docstring. Never raises.

    `source_label` names the sender in refusals when no configured device is identified
    (the listener passes the peer address).
    """
    try:
        return _decode(raw, recv_ms, sources, tz, source_label)
    except Exception as e:  # noqa: BLE001 - a parser bug must answer AR and be recorded, not kill a link
        header = _peek_header(raw)
        ref = Refusal(source_label, "internal_error", f"{type(e).__name__}: {e}"[:300], raw[:RAW_KEEP])
        return Hl7Result("AR", header, refusals=[ref], errors=[AckError(*E_INTERNAL, detail=str(e)[:80])])


# --- parsing ------------------------------------------------------------------------------
def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # ISO 8859-1 (MSH-18 "8859/1") never fails to decode


def _segments(text: str) -> str:
    """Segments joined by CR as HL7 wants (monitors also send LF or CRLF); empty ones dropped."""
    parts = re.split(r"\r\n|\r|\n", text.strip("\x00 \t\r\n"))
    return "\r".join(p for p in parts if p.strip())


def _peek_header(raw: bytes) -> Header:
    """The MSH fields of a message we could not parse otherwise (best effort, for the AR)."""
    try:
        text = _segments(_text(raw))
        if not text.startswith("MSH") or len(text) < 8:
            return Header()
        sep = text[3]
        msh = text.split("\r", 1)[0].split(sep)
        get = (lambda i: msh[i - 1] if len(msh) >= i else "")  # noqa: E731 - MSH-1 is the separator itself
        enc = msh[1] if len(msh) > 1 and 2 <= len(msh[1]) <= 5 else "^~\\&"
        return Header(sep, enc, get(3), get(4), get(5), get(6), get(9), get(10), get(11) or "P", get(12) or "2.6")
    except (IndexError, ValueError):
        return Header()


class _Msg:
    """A message split with the separators its MSH declares.

    python-hl7 parses MSH (encoding characters, header fields) and undoes escape sequences;
    the OBX/OBR/PV1 segments are split here with those same separators. (python-hl7's full
    tree parse costs ~60 µs per segment — a 10-OBX message alone would cap one ingest at
    ~1,500 messages/s; tests/test_hl7_parser.py checks this split against the library's.)
    """

    def __init__(self, parsed: Any, segments: list[list[str]]) -> None:
        self.parsed = parsed  # python-hl7's Message of the MSH segment
        self.msh = parsed[0]
        self.segments = segments
        seps = parsed.separators  # segment, field, repetition, component, subcomponent
        self.rep, self.comp = seps[2], seps[3]
        self.esc = parsed.esc

    def msh_field(self, n: int) -> list[list[str]]:
        """MSH-n as repetitions of components (python-hl7's tree)."""
        f = self.msh[n] if len(self.msh) > n else None
        if not f:
            return []
        return [[rep] if isinstance(rep, str) else [c if isinstance(c, str) else str(c) for c in rep] for rep in f]

    def field(self, seg: list[str], n: int) -> list[list[str]]:
        """Field n of a segment as repetitions of (unescaped) components."""
        if len(seg) <= n or not seg[n]:
            return []
        out = []
        for rep in seg[n].split(self.rep):
            comps = rep.split(self.comp)
            if self.esc in rep:
                comps = [self.parsed.unescape(c) if self.esc in c else c for c in comps]
            out.append(comps)
        return out

    def first(self, seg: list[str], n: int, comp: int = 0) -> str:
        """Component `comp` of the first repetition of field n ("" if absent)."""
        reps = self.field(seg, n)
        return reps[0][comp] if reps and len(reps[0]) > comp else ""

    def msh_first(self, n: int, comp: int = 0) -> str:
        """Component `comp` of MSH-n ("" if absent)."""
        reps = self.msh_field(n)
        return reps[0][comp] if reps and len(reps[0]) > comp else ""


def _decode(raw: bytes, recv_ms: int, sources: Sources, tz: tzinfo, source_label: str) -> Hl7Result:
    text = _segments(_text(raw))
    if not text.startswith("MSH") or len(text) < 9 or text[3].isalnum():
        return _reject(Header(), "bad_hl7", "not an HL7 v2 message (no MSH segment)", raw, source_label,
                       AckError(*E_REQUIRED, "MSH^1", "no MSH segment"))
    lines = text.split("\r")
    try:
        msh = hl7.parse(lines[0])
    except (hl7.ParseException, ValueError, IndexError) as e:
        return _reject(_peek_header(raw), "bad_hl7", f"unparseable MSH: {e}", raw, source_label,
                       AckError(*E_DATA_TYPE, "MSH^1", "unparseable MSH segment"))
    fsep = text[3]
    # only the segments we read: Z-segments, PID, NTE and the rest are never looked at
    msg = _Msg(msh, [ln.split(fsep) for ln in lines[1:] if ln[:3] in ("PV1", "OBR", "OBX")])
    mf = msg.msh_first
    header = Header(
        field_sep=fsep, encoding=text[4:text.find(fsep, 4)] if text.find(fsep, 4) > 4 else "^~\\&",
        sending_app=_raw_field(lines[0], fsep, 3), sending_facility=_raw_field(lines[0], fsep, 4),
        receiving_app=_raw_field(lines[0], fsep, 5), receiving_facility=_raw_field(lines[0], fsep, 6),
        message_type=_raw_field(lines[0], fsep, 9), control_id=mf(10),
        processing_id=mf(11) or "P", version=mf(12) or "2.6")
    if not header.control_id:
        return _reject(header, "bad_hl7", "MSH-10 (message control id) is empty", raw, source_label,
                       AckError(*E_REQUIRED, "MSH^1^10", "MSH-10 is required"))
    mtype, event = mf(9, 0), mf(9, 1)
    if mtype != "ORU":
        return _reject(header, "unsupported_message", f"message type {header.message_type!r}: only ORU^R01 is "
                       "taken", raw, source_label, AckError(*E_MSG_TYPE, "MSH^1^9", f"{mtype} not supported"))
    if event != "R01":
        return _reject(header, "unsupported_message", f"event {header.message_type!r}: only ORU^R01 is taken",
                       raw, source_label, AckError(*E_EVENT, "MSH^1^9", f"{mtype}^{event} not supported"))
    if not re.match(r"^2(\.\d+)+$", header.version):
        return _reject(header, "unsupported_version", f"HL7 version {header.version!r}", raw, source_label,
                       AckError(*E_VERSION, "MSH^1^12", f"version {header.version} not supported"))
    default_off = _offset_of(mf(7))
    return _observations(msg, header, raw, recv_ms, sources, tz, default_off, source_label)


def _raw_field(msh_line: str, sep: str, n: int) -> str:
    """MSH-n exactly as received (MSH-1 is the separator itself, so index n-1)."""
    parts = msh_line.split(sep)
    return parts[n - 1] if len(parts) >= n else ""


def _reject(header: Header, reason: str, detail: str, raw: bytes, source: str, err: AckError) -> Hl7Result:
    return Hl7Result("AR", header, refusals=[Refusal(source, reason, detail, raw[:RAW_KEEP])], errors=[err])


def _source_keys(reps: list[list[str]], place: bool = False) -> list[str]:
    """The texts a configured `source` may equal for one EI/HD (or, `place`, PL) field."""
    if not reps or not any(reps[0]):
        return []
    comps = [c.strip() for c in reps[0]]
    while comps and not comps[-1]:
        comps.pop()
    keys = ["^".join(comps)]
    if place:
        keys.append("^".join(comps[:3]).rstrip("^"))  # point of care^room^bed
    else:
        keys += [c for c in comps[:2] if c]  # namespace/entity id, universal id (EUI-64)
    return keys


def _match(keys: list[str], sources: Sources) -> tuple[str, str] | None:
    for k in keys:
        hit = sources.get(k)
        if hit is not None:
            return hit
    return None


@dataclass(slots=True)
class _Group:
    values: dict[str, tuple[int, float]] = field(default_factory=dict)  # metric → (rank, value)
    flags: set[str] = field(default_factory=set)


def _observations(msg: _Msg, header: Header, raw: bytes, recv_ms: int, sources: Sources, tz: tzinfo,
                  default_off: tzinfo | None, source_label: str) -> Hl7Result:
    res = Hl7Result("AA", header)
    msh_keys = _source_keys(msg.msh_field(3))
    pv1_keys: list[str] = []
    groups: dict[tuple[str, str, int], _Group] = {}
    obr_ts: int | None = None
    obr_bad = ""
    group_equipment: list[str] = []
    unknown: set[str] = set()
    n_obx = 0
    for seg in msg.segments:
        name = seg[0]
        if name == "PV1":
            pv1_keys = _source_keys(msg.field(seg, 3), place=True)
            continue
        if name == "OBR":
            group_equipment = []
            obr_ts, obr_bad = None, ""
            t7 = msg.first(seg, 7)
            if t7:
                try:
                    obr_ts = parse_dtm(t7, default_off, tz)
                except ValueError as e:
                    obr_bad = str(e)
            continue
        if name != "OBX":
            continue
        n_obx += 1
        seq = msg.first(seg, 1) or str(n_obx)
        where = f"OBX {seq}"
        eq_keys = _source_keys(msg.field(seg, 18))
        if eq_keys:
            group_equipment = eq_keys
        code = _obx_code(msg, seg)
        dev = _match(group_equipment, sources) or _match(msh_keys, sources) or _match(pv1_keys, sources)
        if dev is not None:
            res.devices.add(dev[1])  # heard from, even if this OBX is not one of ours
        if code is None:
            res.ignored += 1
            continue
        if dev is None:
            unknown.add((group_equipment or msh_keys or pv1_keys or ["(none)"])[0])
            continue
        room, device = dev
        status = msg.first(seg, 11).strip().upper()
        # time first: a status-X reading needs its time too
        t14 = msg.first(seg, 14)
        try:
            ts = parse_dtm(t14, default_off, tz) if t14 else None
        except ValueError as e:
            res.refusals.append(Refusal(device, "bad_ts", f"{where}: OBX-14 {e}", raw[:RAW_KEEP]))
            continue
        if ts is None and obr_bad:
            res.refusals.append(Refusal(device, "bad_ts", f"{where}: OBR-7 {obr_bad}", raw[:RAW_KEEP]))
            continue
        if ts is None:
            ts = obr_ts
        settled, skew = settle_ts(ts, recv_ms)
        if settled != ts:
            res.used_receive_time = True  # no device time, or one too far off: the receive time
        grp = groups.setdefault((room, device, settled), _Group())
        grp.flags |= skew
        if status == "X":
            grp.flags.add("measurement_error")
            continue
        if status not in VALUE_STATUSES:
            res.refusals.append(Refusal(device, "result_status", f"{where} {code.metric}: OBX-11 status "
                                        f"{status!r} is not a result we store", raw[:RAW_KEEP]))
            continue
        value, why = _obx_value(msg, seg)
        if why:
            res.refusals.append(Refusal(device, "bad_value", f"{where} {code.metric}: {why}", raw[:RAW_KEEP]))
            continue
        if value is None:
            res.ignored += 1
            continue
        try:
            units = msg.field(seg, 6)
            value = vitalcodes.to_metric_unit(code.metric, value, tuple(units[0]) if units else ())
        except vitalcodes.UnitError as e:
            res.refusals.append(Refusal(device, "bad_unit", f"{where}: {e}", raw[:RAW_KEEP]))
            continue
        held = grp.values.get(code.metric)
        if held is None or code.rank < held[0]:
            grp.values[code.metric] = (code.rank, value)
        else:
            res.ignored += 1
    for (room, device, ts), grp in groups.items():
        values = {m: v for m, (_rank, v) in grp.values.items()}
        if not values and grp.flags <= {"clock_skew"}:
            continue  # nothing but our own skew note: no reading
        reading, refs = accept(room, device, ts, values, frozenset(grp.flags), source=device, raw=raw[:RAW_KEEP])
        res.refusals.extend(refs)
        if reading is not None:
            res.readings.append(reading)
    if not res.devices and not unknown:  # a stranger sending only codes we do not take
        unknown.add((msh_keys or pv1_keys or ["(none)"])[0])
    if unknown:
        label = ", ".join(sorted(unknown))[:200]
        res.refusals.append(Refusal(source_label, "unknown_source", f"no configured device has source {label} "
                                    "(OBX-18, MSH-3 or PV1-3)", raw[:RAW_KEEP]))
        res.errors.append(AckError(*E_UNKNOWN_KEY, "OBX^1^18", f"unknown source {label}"[:80]))
    if not res.readings:
        res.ack = "AE"
        if not unknown:
            res.refusals.append(Refusal(next(iter(sorted(res.devices)), source_label), "no_values",
                                        f"no usable vital-sign value in {n_obx} OBX segment(s)", raw[:RAW_KEEP]))
            res.errors.append(AckError(*E_REQUIRED, "OBX^1^5", "no usable vital-sign value"))
    return res


def _obx_code(msg: _Msg, seg: list[str]) -> vitalcodes.Code | None:
    reps = msg.field(seg, 3)
    if not reps:
        return None
    c = reps[0] + [""] * 6
    return vitalcodes.code_metric(c[0], c[1], c[2]) or (
        vitalcodes.code_metric(c[3], c[4], c[5]) if c[3] or c[4] else None)


def _obx_value(msg: _Msg, seg: list[str]) -> tuple[float | None, str]:
    """(value, "") or (None, "") for absent, or (None, why) for a value we refuse."""
    vtype = msg.first(seg, 2).strip().upper()
    reps = msg.field(seg, 5)
    comps = reps[0] if reps else []
    if not comps or not any(c.strip() for c in comps) or comps[0] == '""':
        return None, ""
    if vtype == "SN":  # comparator ^ num1 [^ separator ^ num2]
        comparator = comps[0].strip()
        if comparator not in ("", "="):
            return None, f"structured value {'^'.join(comps)!r} is not an exact number"
        text = comps[1] if len(comps) > 1 else ""
    elif vtype in ("NM", "ST", "TX", ""):
        text = comps[0] if len(comps) == 1 else "^".join(comps)
    else:
        return None, f"value type {vtype} is not numeric"
    if not _NUMBER.match(text):
        return None, f"{text[:40]!r} is not a number"
    value = float(text)
    if value < 0:
        return None, ""  # vendors' "no valid data" marker (-100, -999, -99.9)
    return (int(value) if value.is_integer() else value), ""


# --- time -----------------------------------------------------------------------------------
def _offset_of(dtm: str) -> tzinfo | None:
    m = _DTM.match(dtm.strip()) if dtm else None
    if m is None or m.group(8) is None:
        return None
    minutes = int(m.group(9)) * 60 + int(m.group(10))
    return timezone(timedelta(minutes=-minutes if m.group(8) == "-" else minutes))


def parse_dtm(text: str, default_offset: tzinfo | None, tz: tzinfo) -> int:
    """HL7 DTM (at least YYYYMMDDHHMM, optional seconds, fraction, ±ZZZZ) → ms since epoch.

    No offset: `default_offset` (MSH-7's) when given, else the clinic's zone `tz`.
    Raises ValueError with a short reason.
    """
    m = _DTM.match(text.strip())
    if m is None:
        raise ValueError(f"{text[:32]!r} is not an HL7 time to the minute (YYYYMMDDHHMM[SS[.S]][+ZZZZ])")
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    frac_ms = int((m.group(7) or "0").ljust(4, "0")[:3])
    if m.group(8):
        minutes = int(m.group(9)) * 60 + int(m.group(10))
        zone: tzinfo = timezone(timedelta(minutes=-minutes if m.group(8) == "-" else minutes))
    else:
        zone = default_offset or tz
    try:
        dt = datetime(year, month, day, hour, minute, second, frac_ms * 1000, tzinfo=zone)
    except ValueError as e:
        raise ValueError(f"{text[:32]!r}: {e}") from e
    return int(dt.timestamp() * 1000)


# --- the answer -----------------------------------------------------------------------------
def _escape(text: str, header: Header) -> str:
    """Our text made safe inside a field of the sender's encoding (HL7 escape sequences)."""
    enc = (header.encoding + "^~\\&"[len(header.encoding):])[:4]
    comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3]
    out = text.replace(esc, f"{esc}E{esc}")
    for ch, code in ((header.field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def _dtm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d%H%M%S+0000")


def ack_message(result: Hl7Result, now_ms: int, *, app: str = "VITALWATCH", facility: str = "") -> bytes:
    """The ACK for `result` (original mode: MSA-1 AA/AE/AR), in the sender's separators and
    version; ERR segments as the version expects (ERR-1 up to 2.4, ERR-2/3/4 from 2.5)."""
    h = result.header
    s = h.field_sep
    comp = (h.encoding or "^")[0]
    try:
        major_minor = tuple(int(x) for x in h.version.split(".")[:2])
    except ValueError:
        major_minor = (2, 6)
    v25 = major_minor >= (2, 5)
    msg_type = f"ACK{comp}R01{comp}ACK" if major_minor >= (2, 4) else f"ACK{comp}R01"
    ctrl = ("A" + h.control_id)[:20] if h.control_id else f"A{now_ms}"
    segs = [s.join(["MSH", h.encoding, _escape(app, h), _escape(facility, h), h.sending_app, h.sending_facility,
                    _dtm(now_ms), "", msg_type, ctrl, h.processing_id or "P", h.version or "2.6"])]
    msa = ["MSA", result.ack, h.control_id]
    if not v25 and result.ack != "AA" and result.errors:
        msa.append(_escape(result.errors[0].detail or result.errors[0].text, h)[:80])
    segs.append(s.join(msa))
    sub = (h.encoding + "^~\\&"[len(h.encoding):])[3]
    severity = "W" if result.ack == "AA" else "E"  # AA with ERR: some values were refused
    for e in result.errors:
        loc = e.location.replace("^", comp)
        if v25:
            segs.append(s.join(["ERR", "", loc, comp.join([e.code, _escape(e.text, h), "HL70357"]), severity,
                                "", "", "", _escape(e.detail, h)]))
        elif result.ack != "AA":  # before 2.5 ERR has no severity: only for AE/AR
            segs.append(s.join(["ERR", comp.join([*loc.split(comp)[:3], sub.join([e.code, _escape(e.text, h),
                                                                                "HL70357"])])]))
    return ("\r".join(segs) + "\r").encode("utf-8")
