"""A simulated clinic: one patient per room, one runner per configured device.

`Clinic(cfg, timeline, …).start()` returns once every device is reachable (ptys linked,
listeners bound, MQTT clients started); `stop()` ends the threads, removes the ptys and
closes the truth log's run. Used by `vitalwatch simulate`, the fixtures and the demo.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from devices.simulators.link import link_for
from devices.simulators.mqtt_pub import MqttPublisher, MqttTarget
from devices.simulators.physiology import Physiology
from devices.simulators.runners import (
    DeviceSpec,
    Hl7Runner,
    MqttRunner,
    NibpRunner,
    Runner,
    SimClock,
    StreamingRunner,
)
from devices.simulators.scenarios import Timeline, build_physiology
from devices.simulators.truth import TruthLog
from monitor.model.config import Config, DeviceConfig, RoomConfig

log = logging.getLogger(__name__)

START_TIMEOUT_S = 5.0


class SimulationError(RuntimeError):
    """A simulated device could not start (port in use, bad path, broker URL missing)."""


def make_runner(room: str, dev: DeviceConfig, physiology: Physiology, clock: SimClock, truth: TruthLog,
                timeline: Timeline, seed: int, stop: threading.Event, mqtt_target: MqttTarget | None,
                base_dir: Path | None = None, hl7_listen: str | None = None) -> Runner:
    """The runner for one configured device."""
    spec = DeviceSpec(room=room, device=dev.id, protocol=dev.protocol,
                      faults=timeline.faults_for(dev.id, dev.protocol), seed=seed, topic=dev.topic,
                      status_topic=dev.status_topic)
    if dev.transport == "mqtt":
        if mqtt_target is None:
            raise SimulationError(f"device {dev.id}: an MQTT device needs a broker URL")
        pub = MqttPublisher(mqtt_target, client_id=f"vitalwatch-sim-{dev.id}", status_topic=dev.status_topic)
        return MqttRunner(spec, physiology, clock, truth, pub, stop)
    if dev.transport == "mllp":
        if not hl7_listen:
            raise SimulationError(f"device {dev.id}: an HL7 device needs [hl7] listen")
        host, _, port = hl7_listen.rpartition(":")
        host = host.strip("[]")
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # a wildcard bind: send to this host
        return Hl7Runner(spec, physiology, clock, truth, (host, int(port)), dev.source or dev.id, stop)
    link = link_for(dev.port or "", base_dir)
    if dev.protocol == "nibp-un300":
        return NibpRunner(spec, physiology, clock, truth, link, stop)
    return StreamingRunner(spec, physiology, clock, truth, link, stop)


class Clinic:
    """Every configured device of `cfg` (or the given subset), simulated."""

    def __init__(self, cfg: Config, timeline: Timeline, *, seed: int = 1, speed: float = 1.0,
                 truth: TruthLog | None = None, mqtt_target: MqttTarget | None = None,
                 devices: Iterable[tuple[RoomConfig, DeviceConfig]] | None = None,
                 clock: SimClock | None = None, base_dir: Path | None = None) -> None:
        self.cfg, self.timeline, self.seed = cfg, timeline, seed
        self.clock = clock or SimClock(speed)
        self.truth = truth or TruthLog()
        self.stop_event = threading.Event()
        pairs = list(devices) if devices is not None else cfg.devices()
        room_index = {r.id: i for i, r in enumerate(cfg.rooms)}
        self.physiology: dict[str, Physiology] = {}
        self.runners: list[Runner] = []
        for room, dev in pairs:
            if room.id not in self.physiology:
                self.physiology[room.id] = build_physiology(seed, room.id, room_index.get(room.id, 0), timeline)
            self.runners.append(make_runner(room.id, dev, self.physiology[room.id], self.clock, self.truth,
                                            timeline, seed, self.stop_event, mqtt_target, base_dir,
                                            hl7_listen=cfg.hl7.listen))

    def start(self) -> Clinic:
        """Start every device; return once each is reachable (or raise SimulationError)."""
        self.truth.write("run", seed=self.seed, speed=self.clock.speed, scenario=",".join(self.timeline.names),
                         ts_ms=self.clock.now_ms(), devices=[r.spec.device for r in self.runners])
        for room, phys in self.physiology.items():
            for d in phys.doses:
                self.truth.write("dose", room=room, route=d.route, dose_mg=d.dose_mg, sim_s=d.at_s,
                                 infusion_s=d.infusion_s, ts_ms=self.clock.wall_ms_at_sim(d.at_s))
        for r in self.runners:
            r.start()
        for r in self.runners:
            r.ready.wait(START_TIMEOUT_S)
        failed = [r for r in self.runners if r.error is not None]
        if failed:
            self.stop()
            raise SimulationError("; ".join(f"{r.spec.device}: {r.error}" for r in failed))
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every device (ptys removed, MQTT flushed and disconnected)."""
        self.stop_event.set()
        for r in self.runners:
            if r.is_alive():
                r.join(timeout_s)
        self.truth.write("stop", ts_ms=self.clock.now_ms())

    def __enter__(self) -> Clinic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> list[str]:
        """One line per device: where it can be reached."""
        out = []
        for r in self.runners:
            if isinstance(r, MqttRunner):
                where = f"mqtt topic {r.topic}"
            elif isinstance(r, Hl7Runner):
                where = f"ORU^R01 over MLLP to {r.address[0]}:{r.address[1]} as source {r.monitor.source}"
            else:
                link = r.link  # type: ignore[attr-defined]
                where = link.where + (f" -> {link.slave_name}" if getattr(link, "slave_name", "") else "")
            out.append(f"{r.spec.room}/{r.spec.device} {r.spec.protocol}: {where}")
        return out
