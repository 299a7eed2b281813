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
import webbrowser
from pathlib import Path

from monitor.config import Config, load_config
from monitor.runtime import RuntimeFailure, resolve
from monitor.supervise import Child, run_roles, vitalwatch_argv

log = logging.getLogger(__name__)

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
                    lines.append("  cycle_s = 120")
            else:
                lines.append(f'  topic = "vitalwatch/room-{i}/{dev}"')
            lines.append("")
    return "\n".join(lines) + "\n"


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
    cfg = load_config(str(conf_path), env={})
    endpoints = resolve(cfg, start_embedded=True)
    try:
        accounts = _demo_accounts(endpoints.redis_url, cfg)
        conf = ["-c", str(conf_path)]
        children = [
            Child("simulate", vitalwatch_argv("simulate", *conf, "--seed", str(args.seed),
                                              "--speed", str(args.speed))),
            Child("ingest", vitalwatch_argv("ingest", *conf)),
            Child("alerts", vitalwatch_argv("alerts", *conf)),
            Child("dashboard", vitalwatch_argv("dashboard", *conf, "--port", str(args.port))),
        ]
        url = f"http://127.0.0.1:{args.port}/"

        def ready() -> None:
            print(f"VitalWatch demo: {args.rooms} rooms, data in {data_dir}", flush=True)
            print(f"dashboard: {url}", flush=True)
            print(f"redis: {endpoints.redis_url}", flush=True)
            print(f"mqtt: {endpoints.mqtt_url} (MQTT {endpoints.mqtt_version})", flush=True)
            for user, password in accounts:
                print(f"login: {user} / {password}", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            if not args.no_browser:
                webbrowser.open(url)

        return run_roles(cfg, endpoints, children, on_ready=ready)
    finally:
        endpoints.stop()
        if owned_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def _demo_accounts(redis_url: str, cfg: Config) -> list[tuple[str, str]]:
    """Create nurse/director/admin accounts with fresh passwords (printed once)."""
    from monitor.keys import Keys
    from monitor.redis_conn import connect

    try:
        from monitor.users import ensure_demo_accounts
    except ImportError:
        log.error("accounts module missing: the dashboard will not accept logins")
        return []
    client = connect(redis_url)
    try:
        return list(ensure_demo_accounts(client, Keys(cfg.clinic.id)))
    finally:
        client.close()
