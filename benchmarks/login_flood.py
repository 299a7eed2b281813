"""Benchmark: a sign-in flood against a dashboard process, a nurse's API latency alongside.

Starts `vitalwatch dashboard` as its own process on the shared Redis (a throw-away clinic),
signs a nurse in, measures her `GET /api/v1/rooms` for a few quiet seconds, then sends
`--attempts` wrong-password sign-ins from `--workers` threads — each from its own address
(X-Forwarded-For, trusted from 127.0.0.1) and with its own user name, so no per-source or
per-name limit helps: every attempt reaches the bounded password-check queue — while the
nurse keeps polling. Prints the answers' mix and her latency quiet and during the flood.
Issue 12's target: her median stays under 1 s on these machines.

    .venv/bin/python benchmarks/login_flood.py [--redis redis://127.0.0.1:6379/0] [--attempts 200]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from monitor.accounts import users  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.store.embedded import free_port  # noqa: E402


def sign_in(url: str, name: str, password: str, ip: str | None = None) -> tuple[int, requests.Session]:
    """The sign-in form's GET + POST; (status, session)."""
    s = requests.Session()
    if ip:
        s.headers["X-Forwarded-For"] = ip
    token = re.search(r'name="csrf" value="([^"]*)"', s.get(url + "/login", timeout=60).text).group(1)  # type: ignore[union-attr]
    r = s.post(url + "/login", data={"username": name, "password": password, "csrf": token},
               allow_redirects=False, timeout=60)
    return r.status_code, s


def poll(url: str, s: requests.Session, stop: threading.Event, lat: list[float], codes: list[int]) -> None:
    """The nurse's screen asking for the rooms every 50 ms."""
    while not stop.is_set():
        t0 = time.perf_counter()
        codes.append(s.get(url + "/api/v1/rooms", timeout=60).status_code)
        lat.append(time.perf_counter() - t0)
        stop.wait(0.05)


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[max(0, int(len(xs) * q) - 1)]


def main() -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--attempts", type=int, default=200)
    ap.add_argument("--workers", type=int, default=50)
    args = ap.parse_args()
    clinic = "bench-" + uuid.uuid4().hex[:8]
    keys = Keys(clinic)
    client = redis.Redis.from_url(args.redis, decode_responses=True)
    users.create_user(client, keys, "nina", "nurse", "nurse-pass-1")
    tmp = Path(tempfile.mkdtemp(prefix="vw-flood-"))
    conf = tmp / "vw.toml"
    conf.write_text(f'[clinic]\nid = "{clinic}"\n[redis]\nurl = "{args.redis}"\n[data]\ndir = "{tmp / "data"}"\n'
                    f'[archive]\nurl = "sqlite:///{tmp / "archive.db"}"\n'
                    '[[rooms]]\nid = "room-1"\n  [[rooms.devices]]\n  id = "oxi-1"\n  protocol = "masimo-ascii"\n'
                    '  transport = "serial"\n  port = "/dev/null"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALWATCH_")}
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "dashboard", "-c", str(conf), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/health", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        _status, nurse = sign_in(url, "nina", "nurse-pass-1")
        stop, quiet, codes = threading.Event(), [], []
        t = threading.Thread(target=poll, args=(url, nurse, stop, quiet, codes))
        t.start()
        time.sleep(5)
        stop.set()
        t.join()

        stop, during, codes2 = threading.Event(), [], []
        t = threading.Thread(target=poll, args=(url, nurse, stop, during, codes2))
        t.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            answers = list(pool.map(lambda i: sign_in(url, f"flood-{i}", "wrong", f"10.99.{i // 250}.{i % 250}")[0],
                                    range(args.attempts)))
        flood_s = time.perf_counter() - t0
        stop.set()
        t.join()
        print(f"sign-in flood: {args.attempts} attempts from {args.workers} threads in {flood_s:.1f} s — "
              f"{answers.count(401)} checked (401), {answers.count(503)} refused busy (503), "
              f"{answers.count(429)} throttled (429), other {len(answers) - answers.count(401) - answers.count(503) - answers.count(429)}")
        print(f"nurse GET /api/v1/rooms quiet:  median {statistics.median(quiet) * 1000:.0f} ms, "
              f"p95 {pct(quiet, 0.95) * 1000:.0f} ms (n={len(quiet)})")
        print(f"nurse GET /api/v1/rooms flood:  median {statistics.median(during) * 1000:.0f} ms, "
              f"p95 {pct(during, 0.95) * 1000:.0f} ms, max {max(during) * 1000:.0f} ms (n={len(during)}); "
              f"answers {sorted(set(codes + codes2))}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        for k in client.scan_iter(match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"):
            client.delete(k)
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
