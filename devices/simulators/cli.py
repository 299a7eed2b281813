"""`vitalwatch simulate [--scenario NAME] [--speed X] [--seed S] [--duration SEC] [--truth FILE]`.

Simulates every configured device: a serial device whose `port` is a path gets a pty linked
there, `socket://host:port` gets a TCP listener, an MQTT device publishes to its topic. Runs
until --duration wall seconds have passed or SIGINT/SIGTERM; then removes its ptys, flushes
MQTT and closes the truth log. Exit 0, 2 on a bad scenario/speed, 1 if a device failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from devices.simulators.clinic import Clinic, SimulationError
from devices.simulators.link import LinkError
from devices.simulators.mqtt_pub import MqttTarget
from devices.simulators.scenarios import ScenarioError, parse_scenario
from devices.simulators.truth import TruthLog
from monitor.model.config import Config, RedisConfig
from monitor.store.runtime import RuntimeFailure, resolve

log = logging.getLogger(__name__)


def mqtt_target(cfg: Config, env: dict[str, str] | os._Environ[str]) -> MqttTarget:
    """Broker URL and version (embedded broker found via monitor.store.runtime), credentials
    from env — or the embedded broker's simulator account."""
    # The simulator never talks to Redis: resolve only the MQTT side, so an embedded Redis
    # need not be running for it.
    probe = cfg.model_copy(update={"redis": RedisConfig(url="redis://127.0.0.1:1/0")})
    ep = resolve(probe, env=env, mqtt_role="simulate")
    return MqttTarget(ep.mqtt_url, ep.mqtt_version, ep.mqtt_username or None, ep.mqtt_password or None,
                      cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Entry point of `vitalwatch simulate`."""
    try:
        timeline = parse_scenario(args.scenario)
    except ScenarioError as e:
        print(f"vitalwatch simulate: {e}", file=sys.stderr)
        return 2
    if not args.speed or args.speed <= 0:
        print("vitalwatch simulate: --speed must be a positive number", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration < 0:
        print("vitalwatch simulate: --duration must not be negative", file=sys.stderr)
        return 2
    if not cfg.devices():
        print(f"vitalwatch simulate: {cfg.source} configures no devices", file=sys.stderr)
        return 2
    target = None
    if any(d.transport == "mqtt" for _, d in cfg.devices()):
        target = mqtt_target(cfg, os.environ)  # RuntimeFailure → exit 1 with its message
    truth = TruthLog(args.truth, keep=False)  # the file is the record; memory stays flat
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        clinic = Clinic(cfg, timeline, seed=args.seed, speed=args.speed, truth=truth, mqtt_target=target)
        try:
            clinic.start()
        except (SimulationError, LinkError) as e:
            raise RuntimeFailure(f"cannot start the simulators: {e}") from None
        dose_min = timeline.dose_at_min
        print(f"simulating {len(clinic.runners)} device(s) of {cfg.source}: scenario "
              f"{','.join(timeline.names)}, speed ×{args.speed:g}, seed {args.seed}; first dose at "
              f"{dose_min:g} simulated min (in {dose_min * 60 / args.speed:.0f} s)"
              + (f"; truth log {args.truth}" if args.truth else ""), flush=True)
        for room, phys in clinic.physiology.items():
            d = phys.doses[0]
            print(f"  {room}: {d.route} {d.dose_mg:g} mg" + (f" over {d.infusion_s / 60:g} min" if d.infusion_s else "")
                  + (f" [{', '.join(sorted(phys.modifiers))}]" if phys.modifiers else ""), flush=True)
        for line in clinic.describe():
            print("  " + line, flush=True)
        stop.wait(args.duration)  # None: until a signal
        clinic.stop()
        failed = [r for r in clinic.runners if r.error is not None]
        for r in failed:
            print(f"vitalwatch simulate: device {r.spec.device} failed: {r.error}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        truth.close()
        for s, handler in old.items():
            signal.signal(s, handler)
