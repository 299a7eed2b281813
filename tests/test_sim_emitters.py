"""Emitters checked against the documented layouts and the real ANSAR-B capture (not our parsers)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from devices.simulators.emitters.ansar_b import AnsarB, message, text_lines, waveforms
from devices.simulators.emitters.base import Context, nibp_due
from devices.simulators.emitters.masimo_ascii import MasimoAscii, format_line
from devices.simulators.emitters.mqtt_payloads import MqttDevice, json_payload, senml_payload
from devices.simulators.emitters.nibp_un300 import (
    Un300Module,
    checksum,
    frame,
    reply_payload,
    split_frames,
)
from devices.simulators.emitters.nonin_df7 import FRAME_HZ, NoninDf7
from devices.simulators.physiology import Vitals

CAPTURE = Path(__file__).resolve().parent / "data" / "ivy450c-ansarb.bin"  # the real Ivy 450C capture

VITALS = Vitals(hr=72.2, sbp=121.4, dbp=79.3, spo2=97.6, rr=14.2, temp=36.84, pi=2.3)
T0_MS = 1_795_813_200_123


def ctx(**kw) -> Context:
    base = dict(now_ms=T0_MS, sim_s=60.0, vitals=VITALS, dose_s=120.0)
    base.update(kw)
    return Context(**base)


# ---- masimo-ascii ------------------------------------------------------------------------
MASIMO_DOC_DASHES = (b"05/15/07 08:12:21 SN=0000070986 SPO2=---% BPM=--- PI=--.--% SPCO=--.-% SPMET=--.-% "
                     b"DESAT=-- PIDELTA=+-- PVI=--- ALARM=0000 EXC=000000")
MASIMO_RE = re.compile(rb"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d SN=\d{10} SPO2=(\d{3}|---)% BPM=(\d{3}|---) "
                       rb"PI=(\d\d\.\d\d|--\.--)% .* ALARM=([0-9A-F]{4}) EXC=([0-9A-F]{6})\r\n$")


def test_masimo_reproduces_the_documented_dash_line_verbatim():
    assert format_line("05/15/07 08:12:21", "0000070986", None, None, None, 0, 0) == MASIMO_DOC_DASHES


def test_masimo_value_fields_match_the_documented_example():
    line = format_line("12/01/05 11:56:29", "0123456789", 98, 240, 20.0, 0, 0x820)
    assert line.startswith(b"12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% ")
    assert line.endswith(b"ALARM=0000 EXC=000820")


def test_masimo_tick_normal_sensor_off_and_alarm():
    em = MasimoAscii()
    [chunk] = em.tick(ctx())
    m = MASIMO_RE.match(chunk.data)
    assert m and m.group(1) == b"098" and m.group(2) == b"072" and m.group(3) == b"02.30"
    assert int(m.group(5), 16) == 0x800  # "Masimo SET": normal, no flag
    assert chunk.reading.values == {"spo2": 98, "hr": 72, "pi": 2.3} and chunk.reading.flags == []
    [off] = em.tick(ctx(sensor_off=True))
    m = MASIMO_RE.match(off.data)
    assert m.group(1) == b"---" and m.group(2) == b"---" and int(m.group(5), 16) & 0x20
    assert off.reading.values == {} and off.reading.flags == ["sensor_off"]
    low = Vitals(hr=130, sbp=120, dbp=80, spo2=86, rr=14, temp=36.8, pi=0.3)
    [alarm] = em.tick(ctx(vitals=low))
    m = MASIMO_RE.match(alarm.data)
    assert int(m.group(4), 16) == 0x2 | 0x4 | 0x10 and int(m.group(5), 16) & 0x4
    assert set(alarm.reading.flags) == {"device_alarm", "low_perfusion"}


def test_masimo_clock_skew_changes_only_the_device_time():
    [c] = MasimoAscii().tick(ctx(clock_skew_ms=3_600_000))
    assert c.reading.device_ts_ms == T0_MS + 3_600_000 and c.reading.flags == []


def test_masimo_noisy_line_garbage_and_cut_lines_are_marked():
    em, rng = MasimoAscii(), random.Random(4)
    chunks = [c for _ in range(300) for c in em.tick(ctx(noisy=rng))]
    garbage = [c for c in chunks if c.noise == "garbage"]
    cut = [c for c in chunks if c.noise == "cut"]
    assert garbage and cut
    assert all(c.data.endswith(b"\r\n") and b"\r" not in c.data[:-2] and b"\n" not in c.data[:-2] for c in garbage)
    assert all(c.reading.expect == "lost" and b"=" not in c.data for c in cut)  # cut inside the time stamp
    assert all(MASIMO_RE.match(c.data) for c in chunks if c.noise is None)


# ---- nonin-df7 ---------------------------------------------------------------------------
def frames_of(data: bytes) -> list[bytes]:
    assert len(data) % 5 == 0
    return [data[i:i + 5] for i in range(0, len(data), 5)]


def test_nonin_frames_layout_checksum_sync_and_values():
    em = NoninDf7()
    assert FRAME_HZ == 75 and em.period_s == pytest.approx(1 / 3)
    chunks = [c for _ in range(3) for c in em.tick(ctx())]
    assert len(chunks) == 3  # three packets = one second = 75 frames
    frames = [f for c in chunks for f in frames_of(c.data)]
    assert len(frames) == 75
    for i, f in enumerate(frames):
        assert f[0] & 0x80, "STATUS bit 7 always set"
        assert f[4] == (f[0] + f[1] + f[2] + f[3]) & 0xFF
        assert bool(f[0] & 0x01) == (i % 25 == 0), "SYNC marks frame 1 of each packet only"
        assert f[0] & 0x06 == 0x02  # green perfusion at PI 2.3
    pkt = frames[:25]
    hr = ((pkt[0][3] & 0x03) << 7) | (pkt[1][3] & 0x7F)
    assert hr == 72 and pkt[2][3] == 98
    assert pkt[8][3] == pkt[9][3] == pkt[10][3] == 98 and pkt[15][3] == 98
    assert (((pkt[13][3] & 3) << 7) | (pkt[14][3] & 0x7F)) == 72
    assert [c.reading is not None for c in chunks] == [True, False, False]
    assert chunks[0].reading.values == {"hr": 72, "spo2": 98}


def test_nonin_hr_above_127_uses_the_high_bits():
    fast = Vitals(hr=190, sbp=120, dbp=80, spo2=97, rr=14, temp=36.8, pi=2)
    [c] = NoninDf7().tick(ctx(vitals=fast))
    f = frames_of(c.data)
    assert f[0][3] == 1 and f[1][3] == 190 - 128


def test_nonin_sensor_off_sends_sentinels_and_snsd():
    [c] = NoninDf7().tick(ctx(sensor_off=True))
    f = frames_of(c.data)
    assert all(fr[0] & 0x40 for fr in f)
    assert (((f[0][3] & 3) << 7) | (f[1][3] & 0x7F)) == 511 and f[2][3] == 127
    assert c.reading.values == {} and c.reading.flags == ["sensor_off"]


def test_nonin_noisy_second_has_one_bad_checksum_per_packet_and_garbage_never_looks_like_status():
    em, rng = NoninDf7(), random.Random(1)
    chunks = [c for _ in range(600) for c in em.tick(ctx(noisy=rng))]
    bad = [c for c in chunks if c.noise == "bad_checksum"]
    assert bad and len(bad) % 3 == 0
    for c in bad:
        assert sum(f[4] != (sum(f[:4]) & 0xFF) for f in frames_of(c.data)) == 1
    assert all(not (b & 0x80) for c in chunks if c.noise == "garbage" for b in c.data)
    lost = [c.reading for c in chunks if c.reading and c.reading.expect == "refused"]
    assert len(lost) == len(bad) // 3


# ---- nibp-un300 --------------------------------------------------------------------------
@pytest.mark.parametrize("payload,doc_frame", [
    (b"01;;", b"\x0201;;D7\x03"), (b"03;;", b"\x0203;;D9\x03"), (b"18;;", b"\x0218;;DF\x03")])
def test_nibp_command_frames_match_the_documented_ones(payload, doc_frame):
    assert frame(payload) == doc_frame


def test_nibp_reply_matches_the_documented_example_and_checksum_rule():
    body = reply_payload(0, 0, (128, 82, 97, 74), 6890)
    assert body == b"S0;A0;C00;M00;P128082097;R074;T6890;;"
    assert checksum(body) == b"%02X" % (sum(body) % 256)
    assert re.fullmatch(rb"[0-9A-F]{2}", checksum(body))
    assert reply_payload(1, 0, None, 5) == b"S1;A0;C00;M00;P999999999;R999;T5;;"


def test_nibp_module_measures_then_reports_once():
    mod = Un300Module(speed=1.0, rng=random.Random(3))
    vit = lambda: VITALS  # noqa: E731
    replies = []

    def send(cmd: bytes, t: float) -> list:
        mod.update(t, vit, False)
        return mod.handle(cmd, t, None)

    [r] = send(b"03;;", 0.0)
    assert r.data.startswith(b"\x02S0;") and r.data.endswith(b"\x03\r") and r.reading is None
    [r] = send(b"01;;", 1.0)
    assert r.data.startswith(b"\x02S1;")
    t = 2.0
    while True:
        [r] = send(b"18;;", t)
        replies.append(r)
        if r.data.startswith(b"\x02S0;"):
            break
        t += 1.0
    assert 30 <= t - 1.0 <= 46  # a realistic 30–45 s measurement at speed 1
    assert r.reading.values == {"sbp": 121, "dbp": 79, "map": 93, "hr": 72}
    assert b"P121079093;R072;" in r.data
    [again] = send(b"18;;", t + 1)
    assert again.reading is None  # one measurement, one reading
    assert send(b"99;;", t + 2) == []  # unknown command: no answer


def test_nibp_measurement_is_scaled_by_speed_but_observable():
    mod = Un300Module(speed=60.0, rng=random.Random(3))
    mod.start(0.0)
    assert mod.measuring_until_s == pytest.approx(2.5)  # 30–45 s / 60 < 2.5 s floor


def test_nibp_sensor_off_fails_the_measurement():
    mod = Un300Module(speed=60.0)
    mod.start(0.0)
    mod.update(5.0, lambda: VITALS, True)
    [r] = mod.handle(b"18;;", 5.0, None)
    assert b";M01;P999999999;R999;" in r.data and r.reading.flags == ["measurement_error"]


def test_nibp_split_frames_checks_checksums_and_skips_junk():
    buf = bytearray(b"zz" + frame(b"18;;") + b"\x02" + b"18;;00\x03" + b"\x020")
    assert split_frames(buf) == [(b"18;;", True), (b"18;;", False)]
    assert buf == bytearray(b"\x020")  # an incomplete frame waits for more bytes


# ---- ansar-b -------------------------------------------------------------------------------
def capture_messages() -> list[bytes]:
    data = CAPTURE.read_bytes()
    starts = [m.start() for m in re.finditer(re.escape(b"\xffANSAR-B "), data)]
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=False) if data[a:b].endswith(b"\xfe")]


def test_ansar_b_message_has_the_capture_structure_byte_for_byte():
    caps = capture_messages()
    # The capture's 27 whole messages are 562 bytes each (1 + 8 + 400 + 152 text + 1; the
    # protocol note says 561, but 252 + 27 × 562 is exactly the file's 15,426 bytes).
    assert len(caps) == 27 and all(len(c) == 562 for c in caps)
    cap = caps[0]
    ours = message(waveforms(0.0, 80, 35), text_lines(80, 35, 100, 80, (121, 75, 92, 80), None, p1=(111, 73, 88)))
    assert len(ours) == 562
    assert ours[:9] == cap[:9] == b"\xffANSAR-B "
    assert ours[409:] == cap[409:]  # every text line, CR and the end byte identical
    assert ours[-1] == 0xFE and cap[359:409] == bytes([0xFB]) * 50 == ours[359:409]  # P2: no transducer


def test_ansar_b_waveform_bytes_include_the_frame_markers():
    w = waveforms(0.0, 80, 15)
    assert len(w) == 400 and 0xFF in w[:200]  # R peaks clip at 0xFF: a receiver must not resync there


def test_ansar_b_nibp_repeats_until_next_cycle_and_reading_values():
    em = AnsarB()
    first = em.tick(ctx(sim_s=0.0, dose_s=120.0))[0]
    assert first.reading.values["sbp"] == 121 and b"NIBP=4;121;79;93;72;;\r" in first.data
    later = em.tick(ctx(sim_s=1.0, dose_s=120.0, vitals=Vitals(90, 150, 95, 97, 14, 36.8, 2)))[0]
    assert b"NIBP=4;121;79;93;72;;\r" in later.data  # the old result rides along
    assert "sbp" not in later.reading.values and later.reading.values["hr"] == 90
    new = em.tick(ctx(sim_s=300.0, dose_s=120.0, vitals=Vitals(90, 150, 95, 97, 14, 36.8, 2)))[0]
    assert new.reading.values["sbp"] == 150 and b"NIBP=4;150;95;113;90;;\r" in new.data
    text = new.data[409:-1].split(b"\r")[:-1]
    assert [ln.split(b"=")[0] for ln in text] == [b"HR", b"RR", b"ETCO2", b"SPO2", b"NIBP", b"P1", b"P2", b"T1", b"T2"]
    assert all(ln.endswith(b";") for ln in text)


def test_ansar_b_sensor_off_empties_spo2_with_alarm_text():
    c = AnsarB().tick(ctx(sensor_off=True))[0]
    assert b"SPO2=1;;PR= ;SPO2 PROBE OFF;\r" in c.data
    assert "spo2" not in c.reading.values and c.reading.flags == ["device_alarm"]


def test_nibp_schedule_every_5_min_while_dosing_then_every_15():
    due = [t for t in range(0, 3 * 3600, 60) if nibp_due(t - 60 if t else None, t, 120.0)]
    after = [(t - 120) // 60 for t in due if t > 120]
    assert due[:2] == [0, 120] and after[:3] == [5, 10, 15]
    assert 60 in after and 75 in after and 65 not in after


# ---- MQTT payloads -------------------------------------------------------------------------
def test_json_payload_is_the_contract_shape():
    p = json.loads(json_payload(1795813200123, {"hr": 72, "spo2": 98}, ["sensor_off"]))
    assert p == {"ts": 1795813200123, "hr": 72, "spo2": 98, "flags": ["sensor_off"]}
    assert "flags" not in json.loads(json_payload(1, {"hr": 1}, []))


def test_senml_payload_is_the_contract_example():
    contract = ('[{"bn":"room-1/nibp-1/","bt":1795813200.123,"n":"sbp","u":"mmHg","v":121},'
                '{"n":"dbp","u":"mmHg","v":79},{"n":"map","u":"mmHg","v":93}]')
    assert senml_payload("room-1/nibp-1/", 1795813200123, {"sbp": 121, "dbp": 79, "map": 93}, []) == contract.encode()
    flagged = json.loads(senml_payload("r/d/", 1795813200123, {"hr": 70}, ["artifact"]))
    assert flagged[-1] == {"n": "flags", "vs": "artifact"} and flagged[0]["u"] == "beat/min"


def test_mqtt_monitor_and_nibp_devices():
    mon, bp = MqttDevice("json", "room-4", "mon-4"), MqttDevice("senml", "room-4", "nibp-4")
    first = json.loads(mon.tick(ctx(sim_s=0.0))[0].data)
    assert {"hr", "spo2", "rr", "temp", "pi", "sbp", "dbp", "map"} <= set(first)
    second = json.loads(mon.tick(ctx(sim_s=1.0))[0].data)
    assert "sbp" not in second and second["ts"] == T0_MS
    assert bp.tick(ctx(sim_s=0.0)) and bp.tick(ctx(sim_s=1.0)) == []  # BP only on its cycle
    skewed = mon.tick(ctx(sim_s=2.0, clock_skew_ms=600_000))[0]
    assert json.loads(skewed.data)["ts"] == T0_MS + 600_000 and "clock_skew" in skewed.reading.flags
    behind = mon.tick(ctx(sim_s=2.5, clock_skew_ms=-120_000))[0]  # a clock behind keeps its label
    assert json.loads(behind.data)["ts"] == T0_MS - 120_000 and "clock_skew" not in behind.reading.flags
    assert behind.reading.device_ts_ms == T0_MS - 120_000
    off = mon.tick(ctx(sim_s=3.0, sensor_off=True))[0]
    assert json.loads(off.data) == {"ts": T0_MS, "flags": ["sensor_off"]}
