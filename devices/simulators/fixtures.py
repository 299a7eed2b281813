"""Simulators as test fixtures: context managers yielding a pty path (or socket URL) or topic.

    with simulated_serial("masimo-ascii", tmp_path / "tty/oxi", truth=log) as port:
        ser = serial.serial_for_url(port, baudrate=9600)   # real bytes from a real pty

    with simulated_mqtt("json", "mqtt://127.0.0.1:1883", "vw/room-1/mon-1") as topic: ...

    with simulated_clinic(cfg, "hypertensive,noisy-line", speed=120, truth=log) as clinic: ...
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devices.simulators.clinic import Clinic
from devices.simulators.mqtt_pub import MqttTarget
from devices.simulators.runners import SimClock
from devices.simulators.scenarios import FaultWindow, Timeline, parse_scenario, with_faults
from devices.simulators.truth import TruthLog
from monitor.model.config import Config, parse_config


def _timeline(scenario: str | Timeline, faults: tuple[FaultWindow, ...]) -> Timeline:
    tl = parse_scenario(scenario) if isinstance(scenario, str) else scenario
    return with_faults(tl, *faults) if faults else tl


def one_device_config(protocol: str, *, port: str | None = None, topic: str | None = None,
                      room: str = "room-1", device: str = "sim-1", clinic: str = "sim") -> Config:
    """A minimal validated Config holding one device (serial when `port`, else MQTT)."""
    dev: dict[str, object] = {"id": device, "protocol": protocol}
    if topic is not None:
        dev.update(transport="mqtt", topic=topic)
    else:
        dev.update(transport="serial", port=port)
    return parse_config({"clinic": {"id": clinic}, "rooms": [{"id": room, "devices": [dev]}]},
                        source="<simulator fixture>")


@contextmanager
def simulated_serial(protocol: str, port: str | Path | None = None, *, scenario: str | Timeline = "routine",
                     faults: tuple[FaultWindow, ...] = (), seed: int = 1, speed: float = 60.0,
                     truth: TruthLog | None = None, room: str = "room-1", device: str = "sim-1",
                     clock: SimClock | None = None) -> Iterator[str]:
    """A simulated serial device; yields its port (pty symlink path, or the socket:// URL)."""
    with tempfile.TemporaryDirectory(prefix="vw-sim-") as tmp:
        where = str(port) if port is not None else str(Path(tmp) / "tty" / device)
        cfg = one_device_config(protocol, port=where, room=room, device=device)
        clinic = Clinic(cfg, _timeline(scenario, faults), seed=seed, speed=speed, truth=truth, clock=clock)
        with clinic:
            yield where


@contextmanager
def simulated_mqtt(protocol: str, mqtt_url: str, topic: str = "vitalwatch/room-1/sim-1", *,
                   version: str = "5", scenario: str | Timeline = "routine", faults: tuple[FaultWindow, ...] = (),
                   seed: int = 1, speed: float = 60.0, truth: TruthLog | None = None, room: str = "room-1",
                   device: str = "sim-1", clock: SimClock | None = None) -> Iterator[str]:
    """A simulated MQTT device publishing `protocol` payloads to `topic`; yields the topic."""
    cfg = one_device_config(protocol, topic=topic, room=room, device=device)
    clinic = Clinic(cfg, _timeline(scenario, faults), seed=seed, speed=speed, truth=truth, clock=clock,
                    mqtt_target=MqttTarget(mqtt_url, version))
    with clinic:
        yield topic


@contextmanager
def simulated_clinic(cfg: Config, scenario: str | Timeline = "routine", *, faults: tuple[FaultWindow, ...] = (),
                     seed: int = 1, speed: float = 60.0, truth: TruthLog | None = None,
                     mqtt_target: MqttTarget | None = None, base_dir: Path | None = None) -> Iterator[Clinic]:
    """Every device of `cfg` simulated; yields the running Clinic (its truth log at .truth)."""
    clinic = Clinic(cfg, _timeline(scenario, faults), seed=seed, speed=speed, truth=truth,
                    mqtt_target=mqtt_target, base_dir=base_dir)
    with clinic:
        yield clinic
