"""`vitalwatch demo`: the whole system on one machine with zero set-up.

Starts an embedded Redis and MQTT broker, writes a demo config for N rooms (serial devices
over ptys and MQTT devices, mixed), creates demo accounts, and supervises the same roles a
production install runs: simulate, ingest, alerts, dashboard. Prints the dashboard URL,
the Redis URL and one `login: <user> / <password>` line per demo account.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

from monitor.accounts.users import ensure_demo_accounts
from monitor.app.supervise import Child, run_roles, vitalwatch_argv
from monitor.model.config import Config, load_config
from monitor.model.keys import Keys
from monitor.model.redact import redact_url
from monitor.sessions import lifecycle as sessions
from monitor.store.embedded import free_port
from monitor.store.redis_conn import connect
from monitor.store.runtime import RuntimeFailure, resolve

log = logging.getLogger(__name__)

DEMO_SPEED = 20.0  # physiology runs 20× faster: a dosing response within ~2 minutes
DOSE_AT_MIN = 2.0  # simulated minutes after start when each room's patient is dosed
# Per room (cycled): route, dose mg, weight kg, scenarios. Room 2 has a hypertensive surge
# (SBP crosses 180 ~36 simulated min after the dose), room 3 a desaturation.
ROOM_PLANS = [
    ("iv", 40.0, 80.0, []),
    ("intranasal", 56.0, 72.0, ["hypertensive"]),
    ("im", 35.0, 70.0, ["desaturation"]),
    ("intranasal", 84.0, 85.0, []),
]

# Device mixes, cycled over the rooms: (id prefix, protocol, transport)
ROOM_KINDS = [
    [("oxi", "masimo-ascii", "serial"), ("nibp", "nibp-un300", "serial")],
    [("oxi", "nonin-df7", "serial"), ("nibp", "json", "mqtt")],
    [("mon", "ansar-b", "serial")],
    [("mon", "json", "mqtt"), ("nibp", "senml", "mqtt")],
]


def demo_config_text(rooms: int, data_dir: Path, port: int) -> str:
    """TOML of the demo clinic: `rooms` rooms, devices mixed over serial ptys and MQTT."""
    lines = [
        "# Written by `vitalwatch demo`.",
        '[clinic]\nid = "demo"\nname = "VitalWatch Demo Clinic"\ntimezone = "UTC"\n',
        '[redis]\nurl = "embedded"\n',
        '[mqtt]\nurl = "embedded"\n',
        f'[archive]\nurl = "sqlite:///{data_dir / "archive.db"}"\n',
        f'[data]\ndir = "{data_dir}"\n',
        f'[dashboard]\nhost = "127.0.0.1"\nport = {port}\n',
    ]
    for i in range(1, rooms + 1):
        lines.append(f'[[rooms]]\nid = "room-{i}"\nname = "Treatment Room {i}"\n')
        for prefix, protocol, transport in ROOM_KINDS[(i - 1) % len(ROOM_KINDS)]:
            dev = f"{prefix}-{i}"
            lines.append(f'  [[rooms.devices]]\n  id = "{dev}"\n  protocol = "{protocol}"\n'
                         f'  transport = "{transport}"')
            if transport == "serial":
                lines.append(f'  port = "{data_dir / "tty" / dev}"')
                if protocol == "nibp-un300":
                    lines.append("  cycle_s = 60")
            else:
                lines.append(f'  topic = "vitalwatch/room-{i}/{dev}"')
                if prefix == "nibp":  # publishes once per NIBP cycle (≤ 45 s at the demo's speed)
                    lines.append("  silence_s = 60")
            lines.append("")
    return "\n".join(lines) + "\n"


def demo_timeline_text(rooms: int) -> str:
    """The simulator's session timeline for the demo (docs/simulators.md format)."""
    lines = [f"dose_at_min = {DOSE_AT_MIN}", ""]
    for i in range(1, rooms + 1):
        route, dose_mg, weight_kg, scenarios = ROOM_PLANS[(i - 1) % len(ROOM_PLANS)]
        lines += [f"[rooms.room-{i}]", f'route = "{route}"', f"dose_mg = {dose_mg}",
                  f"weight_kg = {weight_kg}", f"scenarios = {scenarios!r}".replace("'", '"'), ""]
    return "\n".join(lines)


def open_demo_sessions(redis_url: str, cfg: Config, dose_in_s: float, stop: threading.Event) -> None:
    """Open a session per room as a nurse would, and record each room's dose when the
    simulated patient is dosed, so tiles show phase and time since dose."""
    keys = Keys(cfg.clinic.id)
    client = connect(redis_url, retries=3)
    try:
        sids = {}
        for i, room in enumerate(cfg.rooms):
            route, dose_mg, weight_kg, _ = ROOM_PLANS[i % len(ROOM_PLANS)]
            sids[room.id] = sessions.start_session(
                client, keys, cfg, room.id, f"DEMO-{i + 1:04d}", route, "nurse",
                dose_mg=dose_mg, weight_kg=weight_kg)
        if stop.wait(dose_in_s):
            return
        for sid in sids.values():
            sessions.record_dose(client, keys, sid, "nurse", note="demo: simulated dose")
    except (sessions.SessionError, OSError) as e:
        log.error("demo sessions could not be opened: %s", e)
    finally:
        client.close()


def ports_ready(cfg: Config) -> bool:
    """True once every serial device's port path exists (the simulator links its ptys there)."""
    return all(Path(d.port).exists() for _r, d in cfg.devices() if d.transport == "serial" and d.port
               and "://" not in d.port)


def _wait_for_dashboard(port: int, timeout_s: float) -> None:
    """Return once the dashboard answers /health, so the printed URL works when printed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (503 while devices come online is still "up")
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    log.error("the dashboard did not answer within %.0f s; see the log above", timeout_s)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def run(args: argparse.Namespace, cfg: Config | None) -> int:
    """`vitalwatch demo`."""
    if args.rooms < 1 or args.rooms > 60:
        print("vitalwatch demo: --rooms must be between 1 and 60")
        return 2
    if not _port_free("127.0.0.1", args.port):
        raise RuntimeFailure(f"port {args.port} is in use; pass --port P with a free port")
    owned_dir = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="vitalwatch-demo-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf_path = data_dir / "demo.toml"
    conf_path.write_text(demo_config_text(args.rooms, data_dir, args.port))
    timeline = data_dir / "demo-timeline.toml"
    timeline.write_text(demo_timeline_text(args.rooms))
    cfg = load_config(str(conf_path), env={})
    speed = args.speed if args.speed is not None else DEMO_SPEED
    endpoints = resolve(cfg, start_embedded=True, bundled=args.bundled_servers)
    try:
        accounts = _demo_accounts(endpoints.redis_url, cfg)
        conf = ["-c", str(conf_path)]
        # every role's /metrics reachable, as a deployment would have them (docs/operations.md)
        ingest_metrics, alerts_metrics = free_port(), free_port()
        children = [
            Child("simulate", vitalwatch_argv("simulate", *conf, "--seed", str(args.seed),
                                              "--speed", str(speed), "--scenario", str(timeline))),
            # ingest opens the serial ports once the simulator has made them: no device is
            # "offline" (and no alarm in every archived session's log) for a port not there yet
            Child("ingest", vitalwatch_argv("ingest", *conf, "--metrics-port", str(ingest_metrics)),
                  ready=lambda: ports_ready(cfg)),
            Child("alerts", vitalwatch_argv("alerts", *conf, "--metrics-port", str(alerts_metrics))),
            Child("dashboard", vitalwatch_argv("dashboard", *conf, "--port", str(args.port))),
        ]
        url = f"http://127.0.0.1:{args.port}/"

        stop_sessions = threading.Event()

        def ready() -> None:
            _wait_for_dashboard(args.port, timeout_s=60)
            print(f"VitalWatch demo: {args.rooms} rooms, data in {data_dir}", flush=True)
            print(f"dashboard: {url}", flush=True)
            print(f"redis: {redact_url(endpoints.redis_url)}", flush=True)
            print(f"mqtt: {redact_url(endpoints.mqtt_url)} (MQTT {endpoints.mqtt_version})", flush=True)
            print(f"metrics: {url}metrics (dashboard), http://127.0.0.1:{ingest_metrics}/metrics (ingest), "
                  f"http://127.0.0.1:{alerts_metrics}/metrics (alerts)", flush=True)
            for user, password in accounts:
                print(f"login: {user} / {password}", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            threading.Thread(target=open_demo_sessions, name="demo-sessions", daemon=True,
                             args=(endpoints.redis_url, cfg, DOSE_AT_MIN * 60 / speed, stop_sessions)).start()
            if not args.no_browser:
                webbrowser.open(url)

        try:
            return run_roles(cfg, endpoints, children, on_ready=ready)
        finally:
            stop_sessions.set()
    finally:
        endpoints.stop()
        if owned_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def _demo_accounts(redis_url: str, cfg: Config) -> list[tuple[str, str]]:
    """Create nurse/director/admin accounts with fresh passwords (printed once)."""
    client = connect(redis_url)
    try:
        return list(ensure_demo_accounts(client, Keys(cfg.clinic.id)))
    finally:
        client.close()
