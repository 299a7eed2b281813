"""HL7 v2.6 ORU^R01 as a Mindray-style bedside monitor or gateway sends it (IHE PCD-01).

Pure: `Hl7Monitor.tick(ctx)` returns one message (unframed; the runner adds MLLP) per
period, modelled on Mindray eGateway / BeneVision output (tests/data/hl7/README.md):
- MSH-3 `<model>^<EUI-64>^EUI-64`, MSH-21 the PCD-01 profile, control ids counting up;
- PID with no name (as monitors without ADT send), PV1-3 `<room>^^<bed>`;
- OBR 1 (periodic parameters): SpO2, pulse rate, perfusion index, ECG heart rate,
  impedance respiration rate, temperature, and one vendor-private code (`99MNDRY`); the
  device's EUI-64 (= its configured `source`) in OBX-18 of the first OBX only, as Mindray
  does (the others inherit it);
- OBR 2 (aperiodic NIBP), only in the message after a measurement: cuff sys/dia/mean;
- a vendor `ZMD` segment.
Faults: `sensor-off` → the SpO2 OBX has status X (cannot be obtained) and no pulse rate/PI;
`clock-skew` → OBX-14/OBR-7 10 min ahead; `noisy-line` → garbage bytes between frames or a
broken frame (answered AR). `unplugged` (dropped connection) and `ignore-acks` are the
runner's (devices/simulators/runners.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from devices.simulators.emitters.base import Chunk, Context, TruthReading, garbage, nibp_due
from monitor.model.readings import settle_ts

PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
MODEL = "BeneVision N12"


def dtm(ms: int) -> str:
    """HL7 DTM with milliseconds and the UTC offset, as PCD-01 devices send it."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y%m%d%H%M%S") + f".{ms % 1000:03d}0+0000"


class Hl7Monitor:
    """Builds one monitor's ORU^R01 messages."""

    period_s = 1.0

    def __init__(self, room: str, device: str, source: str, *, app: str = "MINDRAY_N-SERIES") -> None:
        self.room, self.device, self.source, self.app = room, device, source, app
        self.control = 0
        self._prev_sim_s: float | None = None
        self._bp: dict[str, float] = {}

    def message(self, ts_ms: int, values: dict[str, float], *, spo2_off: bool = False) -> bytes:
        """The ORU^R01 for these values at `ts_ms` (device time); a new control id each call."""
        self.control += 1
        ctrl = str(self.control)
        t = dtm(ts_ms)
        equip = f"{self.source}^{MODEL}^{self.source}^EUI-64"
        segs = [
            f"MSH|^~\\&|{self.app}^{self.source}^EUI-64|MINDRAY|||{t}||ORU^R01^ORU_R01|{ctrl}|P|2.6|||AL|NE||"
            f"UNICODE UTF-8|||{PROFILE}",
            "PID|||^^^Hospital^PI||^^^^^^L",
            f"PV1||I|{self.room}^^1",
            f"OBR|1|{ctrl}^{self.app}|{ctrl}^{self.app}|182777000^monitoring of patient^SCT|||{t}",
        ]
        obx: list[str] = []

        def add(code: str, value: object, unit: str, status: str = "R", sub: str = "1.3.1") -> None:
            n = len(obx) + 1
            tail = f"||||{equip}" if n == 1 else ""
            obx.append(f"OBX|{n}|NM|{code}|{sub}.{code.split('^')[0]}|{value}|{unit}|||||{status}|||{t}{tail}")

        if spo2_off:
            add("150456^MDC_PULS_OXIM_SAT_O2^MDC", "", "262688^MDC_DIM_PERCENT^MDC", "X")
        elif "spo2" in values:
            add("150456^MDC_PULS_OXIM_SAT_O2^MDC", values["spo2"], "262688^MDC_DIM_PERCENT^MDC")
            add("149530^MDC_PULS_OXIM_PULS_RATE^MDC", values["hr"], "264864^MDC_DIM_BEAT_PER_MIN^MDC")
            add("150488^MDC_BLD_PERF_INDEX^MDC", values["pi"], "262688^MDC_DIM_PERCENT^MDC")
        if "hr" in values:
            add("147842^MDC_ECG_HEART_RATE^MDC", values["hr"], "264864^MDC_DIM_BEAT_PER_MIN^MDC", sub="1.7.4")
        if "rr" in values:
            add("151578^MDC_TTHOR_RESP_RATE^MDC", values["rr"], "264928^MDC_DIM_RESP_PER_MIN^MDC", sub="1.7.1")
        if "temp" in values:
            add("150344^MDC_TEMP^MDC", values["temp"], "268192^MDC_DIM_DEGC^MDC", sub="1.2.1")
        add("108^MNDRY_ECG_PAUSE_RATE^99MNDRY", 0, "264864^MDC_DIM_BEAT_PER_MIN^MDC", sub="1.7.2")  # private code
        segs += obx
        if "sbp" in values:
            segs.append(f"OBR|2|{ctrl}^{self.app}|{ctrl}^{self.app}|182777000^monitoring of patient^SCT|||{t}")
            n = len(obx)
            for i, (m, code) in enumerate((("sbp", "150301^MDC_PRESS_CUFF_SYS^MDC"), ("dbp", "150302^MDC_PRESS_CUFF_DIA^MDC"),
                                           ("map", "150303^MDC_PRESS_CUFF_MEAN^MDC")), start=1):
                segs.append(f"OBX|{n + i}|NM|{code}|1.1.9.{code.split('^')[0]}|{values[m]}|266016^MDC_DIM_MMHG^MDC"
                            f"|||||R|||{t}||||{equip}")
        segs.append(f"ZMD|{self.app}|{MODEL}|03.01.00|{self.control}")  # vendor Z-segment
        return ("\r".join(segs) + "\r").encode()

    def tick(self, ctx: Context) -> list[Chunk]:
        """This period's message (and noise, on a noisy line)."""
        v = ctx.vitals.rounded()
        if nibp_due(self._prev_sim_s, ctx.sim_s, ctx.dose_s):
            self._bp = {"sbp": v["sbp"], "dbp": v["dbp"], "map": v["map"]}
        self._prev_sim_s = ctx.sim_s
        values: dict[str, float] = {"hr": v["hr"], "rr": v["rr"], "temp": v["temp"]}
        flags: list[str] = []
        if ctx.sensor_off:
            flags.append("measurement_error")  # OBX-11 X on SpO2
        else:
            values.update(spo2=v["spo2"], pi=v["pi"])
        values.update(self._bp)
        device_ts = ctx.now_ms + ctx.clock_skew_ms
        data = self.message(device_ts, values, spo2_off=ctx.sensor_off)
        truth = TruthReading(dict(values), flags)
        if ctx.clock_skew_ms:
            truth.device_ts_ms = device_ts
            if settle_ts(device_ts, ctx.now_ms)[1]:  # a clock behind (within 24 h) keeps its label
                truth.flags = sorted({*flags, "clock_skew"})
        chunks: list[Chunk] = []
        if ctx.noisy is not None and ctx.noisy.random() < ctx.garbage_p:
            chunks.append(Chunk(garbage(ctx.noisy, exclude=b"\x0b\x1c"), noise="garbage"))
        if ctx.noisy is not None and ctx.noisy.random() < ctx.corrupt_p:
            truth.expect, truth.fault = "refused", "bad_hl7"  # the BP result, if any, comes next time
            return [*chunks, Chunk(b"\x00" + data[len(data) // 2:], reading=truth, noise="bad_hl7")]
        self._bp = {}
        return [*chunks, Chunk(data, reading=truth)]
