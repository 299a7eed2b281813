"""`python -m devices.simulators.bench`: figures for docs/simulators.md.

Prints: how long `vitalwatch simulate` takes from exec to "every device reachable" on a
4-room serial config and to exit after SIGTERM; emitter cost per tick per protocol; and
physiology samples per second. (Kept here because the simulators engineer owns only this
package; run it on an idle machine.)
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devices.simulators.emitters import STREAMING
from devices.simulators.emitters.base import Context
from devices.simulators.emitters.mqtt_payloads import MqttDevice
from devices.simulators.physiology import Physiology, default_dose, draw_patient


def startup_figures() -> tuple[float, float]:
    """(seconds to "simulating…" line with ptys linked, seconds from SIGTERM to exit)."""
    with tempfile.TemporaryDirectory() as tmp:
        rooms = []
        for i in range(1, 5):
            rooms.append(f'[[rooms]]\nid = "room-{i}"\n' + "".join(
                f'[[rooms.devices]]\nid = "{p}-{i}"\nprotocol = "{proto}"\ntransport = "serial"\n'
                f'port = "{tmp}/tty/{p}-{i}"\n' for p, proto in (("oxi", "masimo-ascii"), ("nibp", "nibp-un300"))))
        cfg = Path(tmp) / "c.toml"
        cfg.write_text('[clinic]\nid = "bench"\n' + "\n".join(rooms))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "simulate", "-c", str(cfg), "--speed", "60"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        return started, time.perf_counter() - t1


def emitter_figures(ticks: int = 2000) -> dict[str, float]:
    """Microseconds of CPU per tick, per protocol."""
    p = draw_patient(1)
    ph = Physiology(p, (default_dose("iv", p.weight_kg, 120),))
    out = {}
    makers: dict[str, Callable[[], Any]] = {**STREAMING, "json": lambda: MqttDevice("json", "r", "mon-1")}
    for name, make in makers.items():
        em = make()
        t0 = time.perf_counter()
        for i in range(ticks):
            em.tick(Context(now_ms=1_795_813_200_000 + i * 333, sim_s=i, vitals=ph.vitals_at(i),
                            noisy=random.Random(i) if i % 10 == 0 else None, dose_s=120))
        out[name] = (time.perf_counter() - t0) / ticks * 1e6
    return out


def physiology_rate(n: int = 20000) -> float:
    """vitals_at() calls per second."""
    p = draw_patient(2)
    ph = Physiology(p, (default_dose("intranasal", p.weight_kg, 0),), frozenset({"hypertensive"}))
    t0 = time.perf_counter()
    for i in range(n):
        ph.vitals_at(i * 0.5)
    return n / (time.perf_counter() - t0)


def main() -> None:
    """Print the figures."""
    started, stopped = startup_figures()
    print(f"simulate (8 serial devices): reachable after {started:.2f} s, exit after SIGTERM {stopped:.2f} s")
    for name, us in emitter_figures().items():
        print(f"emitter {name:<13} {us:8.1f} µs/tick (incl. physiology)")
    print(f"physiology: {physiology_rate():,.0f} vitals_at() calls/s")


if __name__ == "__main__":
    main()
