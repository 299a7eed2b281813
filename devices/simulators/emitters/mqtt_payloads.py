"""`json` and `senml` MQTT payloads (CONTRACT.md), and what an MQTT device publishes when.

A device whose id contains `nibp` (or `bp`) is an NIBP: it publishes sbp/dbp/map/hr on the
NIBP cycle only. Any other MQTT device is a multi-parameter monitor: hr, spo2, rr, temp, pi
every second, plus sbp/dbp/map in the message of the second a new NIBP result is ready.
"""

from __future__ import annotations

import json
from typing import Any

from devices.simulators.emitters.base import Chunk, Context, TruthReading, nibp_due
from monitor.model.readings import settle_ts

SENML_UNITS = {"hr": "beat/min", "spo2": "%", "sbp": "mmHg", "dbp": "mmHg", "map": "mmHg",
               "rr": "1/min", "temp": "Cel", "pi": "%"}


def json_payload(ts_ms: int, values: dict[str, float], flags: list[str]) -> bytes:
    """`{"ts": …, "<metric>": …, "flags": [...]}` (flags only when present)."""
    obj: dict[str, Any] = {"ts": ts_ms, **values}
    if flags:
        obj["flags"] = sorted(flags)
    return json.dumps(obj, separators=(",", ":")).encode()


def senml_payload(base_name: str, ts_ms: int, values: dict[str, float], flags: list[str]) -> bytes:
    """An RFC 8428 pack: bn/bt on the first record; flags as a `{"n":"flags","vs":…}` record."""
    recs: list[dict[str, Any]] = [{"n": m, "u": SENML_UNITS[m], "v": v} for m, v in values.items()]
    if flags:
        recs.append({"n": "flags", "vs": ",".join(sorted(flags))})
    recs[0] = {"bn": base_name, "bt": ts_ms / 1000, **recs[0]}
    return json.dumps(recs, separators=(",", ":")).encode()


def is_nibp_device(device_id: str) -> bool:
    """Does this MQTT device id name a blood-pressure device (publishes on the NIBP cycle)?"""
    return "nibp" in device_id or device_id.startswith("bp")


class MqttDevice:
    """Builds the payloads of one MQTT device per one-second tick."""

    period_s = 1.0

    def __init__(self, protocol: str, room: str, device: str) -> None:
        if protocol not in ("json", "senml"):
            raise ValueError(f"not an MQTT payload protocol: {protocol!r}")
        self.protocol, self.room, self.device = protocol, room, device
        self.nibp_only = is_nibp_device(device)
        self._prev_sim_s: float | None = None
        self._bp: dict[str, float] = {}  # a BP result not yet published
        self._bp_failed = False  # the last NIBP measurement failed (sensor off)

    def encode(self, ts_ms: int, values: dict[str, float], flags: list[str]) -> bytes:
        """The payload in this device's format."""
        if self.protocol == "json":
            return json_payload(ts_ms, values, flags)
        return senml_payload(f"{self.room}/{self.device}/", ts_ms, values, flags)

    def tick(self, ctx: Context) -> list[Chunk]:
        """Zero or one payload for this second."""
        v = ctx.vitals.rounded()
        if nibp_due(self._prev_sim_s, ctx.sim_s, ctx.dose_s):
            if self.nibp_only and ctx.sensor_off:
                self._bp = {}
                self._bp_failed = True
            else:
                self._bp = {"sbp": v["sbp"], "dbp": v["dbp"], "map": v["map"]}
                if self.nibp_only:
                    self._bp["hr"] = v["hr"]
        self._prev_sim_s = ctx.sim_s
        values: dict[str, float] = {}
        flags: list[str] = []
        if self._bp_failed:
            flags.append("measurement_error")
        if self.nibp_only:
            values.update(self._bp)
        elif ctx.sensor_off:
            flags.append("sensor_off")  # values (and a pending BP) wait: sensor_off drops values
        else:
            values.update(self._bp)
            values.update(hr=v["hr"], spo2=v["spo2"], rr=v["rr"], temp=v["temp"], pi=v["pi"])
        if not values and not flags:
            return []
        device_ts = ctx.now_ms + ctx.clock_skew_ms
        truth = TruthReading(values, flags)
        if ctx.clock_skew_ms:
            truth.device_ts_ms = device_ts
            if settle_ts(device_ts, ctx.now_ms)[1]:  # a clock behind (within 24 h) keeps its label
                truth.flags = sorted({*flags, "clock_skew"})
        payload = self.encode(device_ts, values, flags)
        if ctx.noisy is not None and ctx.noisy.random() < ctx.corrupt_p:
            truth.expect, truth.fault = "refused", "invalid_json"  # a pending BP waits for the next
            return [Chunk(payload[: max(1, len(payload) // 2)], reading=truth, noise="invalid_json")]
        if "sbp" in values or self._bp_failed:
            self._bp, self._bp_failed = {}, False
        return [Chunk(payload, reading=truth)]
