"""The pure HL7 side: the message corpus, every refusal reason, times, sources, units, ACKs."""

from __future__ import annotations

import json
import random
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocols import hl7_oru
from monitor.model import vitalcodes
from monitor.model.mllp import END, START, Garbage, MllpFramer, frame
from tests.hl7_support import BPM, HR, PCT, SPO2, dtm, nm, oru

DATA = Path(__file__).parent / "data" / "hl7"
CORPUS = sorted(p.stem for p in DATA.glob("*.hl7"))
SRC = {"ABC123": ("room-1", "mon-1")}
T0 = 1_780_000_000_000  # a fixed instant (2026-05-28); receive time of the table cases


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def decode(raw: bytes, recv: int = T0, sources=SRC, tz: str = "UTC") -> hl7_oru.Hl7Result:
    return hl7_oru.decode(raw, recv, sources, ZoneInfo(tz))


def reasons(res: hl7_oru.Hl7Result) -> list[str]:
    return sorted(r.reason for r in res.refusals)


# --- the corpus -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("line_end", ["as-is", "CR"])
def test_corpus_message_gives_its_expected_readings(name, line_end):
    raw = (DATA / f"{name}.hl7").read_bytes()
    if line_end == "CR":
        raw = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    want = json.loads((DATA / f"{name}.json").read_text())
    sources = {k: tuple(v) for k, v in want["sources"].items()}
    res = decode(raw, ms(want["recv"]), sources, want.get("tz", "UTC"))
    assert res.ack == want["ack"], res.refusals
    got = sorted(({"room": r.room, "device": r.device, "ts": r.ts_ms, "values": dict(r.values),
                   "flags": sorted(r.flags)} for r in res.readings), key=lambda d: d["ts"])
    expected = sorted(({**d, "ts": ms(d["ts"])} for d in want["readings"]), key=lambda d: d["ts"])
    assert got == expected
    assert reasons(res) == sorted(want["refusals"])
    assert res.header.control_id  # every corpus message is answerable


def test_corpus_messages_parse_with_python_hl7_too():
    """The corpus is valid HL7 as an independent parser reads it (not only as ours does)."""
    for name in CORPUS:
        text = (DATA / f"{name}.hl7").read_text(encoding="latin-1").replace("\n", "\r")
        msg = hl7.parse(text)
        assert len(msg.segments("OBX")) >= 2, name


# --- refusal reasons, one by one ---------------------------------------------------------------
REFUSALS = [
    # (what, message, ack, reasons)
    ("garbage in a frame", b"\x00\x01hello", "AR", ["bad_hl7"]),
    ("no MSH-10", oru("", T0, [nm(HR, 70, BPM)]), "AR", ["bad_hl7"]),
    ("not an ORU", oru("c", T0, [nm(HR, 70, BPM)]).replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01"), "AR",
     ["unsupported_message"]),
    ("a waveform ORU^W01", oru("c", T0, [nm(HR, 70, BPM)]).replace(b"ORU^R01^ORU_R01", b"ORU^W01^ORU_W01"), "AR",
     ["unsupported_message"]),
    ("not version 2.x", oru("c", T0, [nm(HR, 70, BPM)], version="3.0"), "AR", ["unsupported_version"]),
    ("unknown source", oru("c", T0, [nm(HR, 70, BPM)], app="OTHER", pv1="X^^1"), "AE", ["unknown_source"]),
    ("no usable value", oru("c", T0, ["NM|108^MNDRY_ECG_PAUSE_RATE^99MNDRY||0|" + BPM]), "AE", ["no_values"]),
    ("a text value", oru("c", T0, [nm(HR, "fast", BPM), nm(SPO2, 97, PCT)]), "AA", ["bad_value"]),
    ("a coded value for a number", oru("c", T0, ["CWE|" + HR + "||72^seventy-two^L|" + BPM, nm(SPO2, 97, PCT)]),
     "AA", ["bad_value"]),
    ("SN with a comparator", oru("c", T0, ["SN|" + HR + "||<^40|" + BPM, nm(SPO2, 97, PCT)]), "AA", ["bad_value"]),
    ("a unit we cannot convert", oru("c", T0, [nm("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", 16, "cm[H2O]"),
                                               nm(SPO2, 97, PCT)]), "AA", ["bad_unit"]),
    ("BP without unit", oru("c", T0, [nm("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", 120, ""), nm(SPO2, 97, PCT)]),
     "AA", ["bad_unit"]),
    ("SpO2 in bpm", oru("c", T0, [nm(SPO2, 97, BPM), nm(HR, 70, BPM)]), "AA", ["bad_unit"]),
    ("status W (wrong)", oru("c", T0, [nm(HR, 70, BPM, status="W"), nm(SPO2, 97, PCT)]), "AA", ["result_status"]),
    ("status D (delete)", oru("c", T0, [nm(HR, 70, BPM, status="D"), nm(SPO2, 97, PCT)]), "AA", ["result_status"]),
    ("a bad OBX-14", oru("c", None, [nm(HR, 70, BPM) + "|||2026-05-01", nm(SPO2, 97, PCT)]), "AA", ["bad_ts"]),
    ("out of range", oru("c", T0, [nm(HR, 400, BPM), nm(SPO2, 97, PCT)]), "AA", ["out_of_range"]),
    ("only out of range", oru("c", T0, [nm(HR, 400, BPM)]), "AE", ["no_values", "out_of_range"]),
]


@pytest.mark.parametrize("what,raw,ack,why", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal(what, raw, ack, why):
    res = decode(raw)
    assert res.ack == ack
    assert reasons(res) == sorted(why)
    if ack != "AA":
        assert res.errors, "an AE/AR carries an ERR"
    answer = hl7_oru.ack_message(res, T0).decode()
    assert f"MSA|{ack}|" in answer


def test_a_parser_bug_answers_ar_and_is_recorded(monkeypatch):
    def boom(*_a, **_k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(hl7_oru, "_observations", boom)
    res = decode(oru("c9", T0, [nm(HR, 70, BPM)]))
    assert res.ack == "AR" and reasons(res) == ["internal_error"]
    assert res.header.control_id == "c9"  # the AR still answers the right message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data):
    res = decode(b"MSH|^~\\&|" + data)
    assert res.ack in ("AA", "AE", "AR")
    res = decode(data)
    assert res.ack in ("AE", "AR")


# --- what a value is ---------------------------------------------------------------------------
def values(raw: bytes, **kw) -> dict[str, float]:
    res = decode(raw, **kw)
    assert len(res.readings) == 1, res.refusals
    return dict(res.readings[0].values)


def test_units_are_converted():
    t = values(oru("c", T0, [nm("150364^MDC_TEMP_BODY^MDC", 98.6, "266560^MDC_DIM_FAHR^MDC"),
                             nm("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", 16, "kPa^kPa^UCUM")]))
    assert t == {"temp": 37.0, "sbp": 120.0}


def test_ecg_heart_rate_wins_over_pulse_rate_whatever_the_order():
    pr = nm("149530^MDC_PULS_OXIM_PULS_RATE^MDC", 80, BPM)
    assert values(oru("c", T0, [pr, nm(HR, 70, BPM)])) == {"hr": 70}
    assert values(oru("c", T0, [nm(HR, 70, BPM), pr])) == {"hr": 70}


def test_negative_values_are_absent_not_refused():
    res = decode(oru("c", T0, [nm(HR, -100, BPM), nm(SPO2, 97, PCT)]))
    assert reasons(res) == [] and dict(res.readings[0].values) == {"spo2": 97}


def test_abnormal_flags_are_ignored():
    body = f"NM|{HR}||130|{BPM}||HH|||F"
    assert values(oru("c", T0, [body])) == {"hr": 130}


def test_status_x_flags_measurement_error_and_stores_no_value():
    res = decode(oru("c", T0, [nm(SPO2, "", PCT, status="X"), nm(HR, 70, BPM)]))
    r = res.readings[0]
    assert dict(r.values) == {"hr": 70} and r.flags == {"measurement_error"}
    only_x = decode(oru("c", T0, [nm("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", "", "mmHg", status="X")]))
    assert only_x.ack == "AA" and only_x.readings[0].flags == {"measurement_error"}


# --- times ------------------------------------------------------------------------------------
def ts_of(raw: bytes, recv: int = T0, tz: str = "UTC") -> tuple[int, frozenset[str], bool]:
    res = decode(raw, recv=recv, tz=tz)
    return res.readings[0].ts_ms, res.readings[0].flags, res.used_receive_time


def test_time_comes_from_obx14_then_obr7_then_receive_time():
    t14, tobr = T0 - 5000, T0 - 9000
    assert ts_of(oru("c", t14, [nm(HR, 70, BPM)], obr_ts=tobr))[0] == t14 // 1000 * 1000
    assert ts_of(oru("c", None, [nm(HR, 70, BPM)], obr_ts=tobr))[0] == tobr // 1000 * 1000
    assert ts_of(oru("c", None, [nm(HR, 70, BPM)])) == (T0, frozenset(), True)


def test_offsets_msh7_offset_and_the_clinic_zone():
    body = nm(HR, 70, BPM) + "|||20260528123000"  # no offset in OBX-14
    denver = oru("c", None, [body])
    assert ts_of(denver, recv=ms("2026-05-28T18:30:05Z"), tz="America/Denver")[0] == ms("2026-05-28T18:30:00Z")
    with_msh7 = denver.replace(b"||ORU^R01", b"20260528123000+0200||ORU^R01", 1)
    assert ts_of(with_msh7, recv=ms("2026-05-28T10:30:05Z"), tz="America/Denver")[0] == ms("2026-05-28T10:30:00Z")
    half = oru("c", None, [nm(HR, 70, BPM) + "|||20260528120000-0030"])
    assert ts_of(half, recv=ms("2026-05-28T12:30:01Z"))[0] == ms("2026-05-28T12:30:00Z")


def test_clock_skew_rule_applies():
    ahead = T0 + 10 * 60_000
    ts, flags, receive = ts_of(oru("c", ahead, [nm(HR, 70, BPM)]))
    assert (ts, flags, receive) == (T0, frozenset({"clock_skew"}), True)


# --- sources ----------------------------------------------------------------------------------
def test_source_order_obx18_then_msh3_then_pv1():
    sources = {"EQ1": ("room-1", "by-obx18"), "APP1": ("room-1", "by-msh3"), "ICU^^5": ("room-1", "by-pv1")}
    obx18 = nm(HR, 70, BPM) + "|||" + dtm(T0) + "||||EQ1^^EQ1^EUI-64"
    assert decode(oru("c", None, [obx18], app="APP1"), sources=sources).readings[0].device == "by-obx18"
    assert decode(oru("c", T0, [nm(HR, 70, BPM)], app="APP1"), sources=sources).readings[0].device == "by-msh3"
    assert decode(oru("c", T0, [nm(HR, 70, BPM)], app="X"), sources=sources).readings[0].device == "by-pv1"
    whole_pv1 = oru("c", T0, [nm(HR, 70, BPM)], app="X", pv1="ICU^^5^HOSP^^^^^00-0F")
    assert decode(whole_pv1, sources=sources).readings[0].device == "by-pv1"


def test_one_message_two_devices_by_obx18():
    sources = {"A": ("room-1", "dev-a"), "B": ("room-2", "dev-b")}
    t = dtm(T0)
    raw = oru("c", None, [nm(HR, 70, BPM) + f"|||{t}||||A", nm(SPO2, 97, PCT) + f"|||{t}",
                          nm(HR, 90, BPM) + f"|||{t}||||B"])
    got = {(r.room, r.device): dict(r.values) for r in decode(raw, sources=sources).readings}
    assert got == {("room-1", "dev-a"): {"hr": 70, "spo2": 97}, ("room-2", "dev-b"): {"hr": 90}}


# --- the answers --------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.6", "2.7"])
@pytest.mark.parametrize("case", ["AA", "AE", "AR"])
def test_acks_are_valid_hl7_for_an_independent_library(version, case):
    raw = {"AA": oru("m1", T0, [nm(HR, 70, BPM)], version=version),
           "AE": oru("m1", T0, [nm(HR, 70, BPM)], version=version, app="NOPE", pv1="X"),
           "AR": oru("m1", T0, [nm(HR, 70, BPM)], version=version).replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01")}[case]
    res = decode(raw)
    assert res.ack == case
    ack = hl7_oru.ack_message(res, T0, facility="lonerock").decode()
    m = parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert m.validate()
    assert m.msa.msa_1.value == case and m.msa.msa_2.value == "m1"
    if case != "AA":
        assert m.err.err_3.err_3_1.value in ("200", "204")


def test_v23_ack_uses_err1_and_msa3():
    res = decode(oru("m1", T0, [nm(HR, 70, BPM)], version="2.3", app="NOPE", pv1="X"))
    ack = hl7_oru.ack_message(res, T0).decode()
    segs = ack.split("\r")
    assert segs[0].split("|")[8] == "ACK^R01" and segs[0].split("|")[11] == "2.3"
    assert segs[1].startswith("MSA|AE|m1|unknown source")
    assert segs[2].startswith("ERR|OBX^1^18^204&Unknown key identifier&HL70357")
    assert hl7.parse(ack).segment("MSA")[1][0] == "AE"


def test_ack_uses_the_senders_separators_and_escapes_our_text():
    raw = (DATA / "custom_separators_lf.hl7").read_bytes()
    res = decode(raw, sources={})
    assert res.ack == "AE"
    ack = hl7_oru.ack_message(res, T0).decode()
    assert ack.startswith("MSH#*!@%#VITALWATCH##BEDGW#CLINIC#")
    assert "MSA#AE#Z-77" in ack


# --- the code table -----------------------------------------------------------------------------
@pytest.mark.parametrize("metric", list(vitalcodes.SEND))
def test_what_we_send_we_also_read(metric):
    s = vitalcodes.SEND[metric]
    assert vitalcodes.code_metric(s.mdc, s.mdc_name, "MDC").metric == metric
    assert vitalcodes.code_metric(s.loinc, "", "LN").metric == metric
    assert vitalcodes.to_metric_unit(metric, 42.0, (s.ucum,)) == 42.0


# --- MLLP framing --------------------------------------------------------------------------------
def frames_of(pieces):
    return [p for p in pieces if isinstance(p, bytes)]


def test_framer_resyncs_on_garbage_and_cut_frames():
    f = MllpFramer()
    out = f.feed(b"junk" + frame(b"A") + b"\r\n" + START + b"cut" + START + b"B" + END + bytes([0x1C]) + START
                 + b"C" + bytes([0x1C]))
    assert frames_of(out) == [b"A", b"B", b"C"]
    assert [g.reason for g in out if isinstance(g, Garbage)] == ["outside_frame", "cut_off", "outside_frame"]


def test_framer_drops_oversize_frames_and_goes_on():
    f = MllpFramer(max_bytes=10)
    out = f.feed(START + b"x" * 50) + f.feed(b"y" * 50 + END + frame(b"ok"))
    assert frames_of(out) == [b"ok"]
    big = [g for g in out if isinstance(g, Garbage)]
    assert len(big) == 1 and big[0].reason == "too_large" and big[0].size == 101


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")
                                                         or b"m"), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=2**32))
def test_framer_finds_the_same_frames_however_the_bytes_are_cut(msgs, seed):
    stream = b"".join(frame(m) for m in msgs)
    rng = random.Random(seed)
    f, got, i = MllpFramer(), [], 0
    while i < len(stream):
        n = rng.randint(1, 17)
        got += frames_of(f.feed(stream[i:i + n]))
        i += n
    assert got == msgs


def _tree(field) -> list[list[str]]:
    if not field:
        return []
    reps = [[rep] if isinstance(rep, str) else [c if isinstance(c, str) else str(c) for c in rep] for rep in field]
    return [] if reps == [[""]] else reps


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab1 .^~&", max_size=12), min_size=1, max_size=20))
def test_our_field_split_matches_python_hl7s_tree(fields):
    """hl7_oru splits OBX/OBR/PV1 itself (speed); it must read them as python-hl7 does."""
    msh = "MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.6"
    obx = "OBX|" + "|".join(fields) + "|end"  # python-hl7 strips trailing blanks of a message
    full = hl7.parse(msh + "\r" + obx + "\r")
    theirs = full.segments("OBX")[0]
    ours = hl7_oru._Msg(hl7.parse(msh), [obx.split("|")])
    for n in range(1, len(fields) + 1):
        assert ours.field(ours.segments[0], n) == _tree(theirs[n] if len(theirs) > n else None), (n, fields)
