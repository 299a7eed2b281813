"""`vitalwatch run`: one host, one config — start the embedded servers the config asks for,
then run ingest, alerts and dashboard as child processes, restarting any that dies.

Each role stays a separate process (as in production with docker compose), so a crash in
one never takes down another; this supervisor only starts, watches and stops them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.model.config import Config
from monitor.model.redact import redact_url
from monitor.store.embedded import owned_child_kwargs
from monitor.store.runtime import Endpoints, resolve

log = logging.getLogger(__name__)


@dataclass
class Child:
    """One supervised role: its command line and restart bookkeeping."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff_s: float = 1.0
    started_at: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    # started only once this holds (or after `ready_timeout_s`, logged): e.g. the demo's ingest
    # waits for the simulator's ports, so no device is "offline" for a port not made yet
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 20.0


def vitalwatch_argv(*args: str) -> list[str]:
    """Command line running `vitalwatch <args>` with this interpreter."""
    return [sys.executable, "-m", "monitor", *args]


class Supervisor:
    """Start children, restart the ones that exit, stop all on request."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = threading.Event()

    def _spawn(self, child: Child) -> None:
        env = {**os.environ, **child.env}
        child.proc = subprocess.Popen(child.argv, env=env, stdin=subprocess.DEVNULL, **owned_child_kwargs())
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def start(self) -> None:
        """Start every child, in order; one with a `ready` condition waits for it first."""
        for c in self.children:
            if c.ready is not None:
                deadline = time.monotonic() + c.ready_timeout_s
                while not c.ready() and time.monotonic() < deadline and not self.stopping.is_set():
                    time.sleep(0.1)
                if not c.ready():
                    log.warning("%s: what it waits for is not there after %.0f s; starting it anyway",
                                c.name, c.ready_timeout_s)
            self._spawn(c)

    def watch(self) -> None:
        """Restart children that exit, with backoff, until stop() is called."""
        while not self.stopping.wait(0.5):
            for c in self.children:
                if c.proc is None or c.proc.poll() is None:
                    continue
                code = c.proc.returncode
                if time.monotonic() - c.started_at > 60:
                    c.backoff_s = 1.0  # it had been running fine; restart quickly
                log.error("%s exited with code %s; restarting in %.0f s", c.name, code, c.backoff_s)
                if self.stopping.wait(c.backoff_s):
                    return
                c.backoff_s = min(c.backoff_s * 2, 30.0)
                c.restarts += 1
                self._spawn(c)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child (they flush what they hold), then wait; kill stragglers."""
        self.stopping.set()
        for c in self.children:
            if c.proc and c.proc.poll() is None:
                c.proc.terminate()
        deadline = time.monotonic() + timeout_s
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in time; killing it", c.name)
                c.proc.kill()
                c.proc.wait()


def install_stop_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set `stop` (the main thread then shuts down in order)."""
    def handler(signum: int, _frame: object) -> None:
        stop.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_roles(cfg: Config, endpoints: Endpoints, children: list[Child], on_ready=None) -> int:
    """Supervise `children` until SIGINT/SIGTERM, then stop them and the owned servers."""
    sup = Supervisor(children)
    stop = threading.Event()
    install_stop_signals(stop)
    sup.start()
    watcher = threading.Thread(target=sup.watch, name="supervisor", daemon=True)
    watcher.start()
    try:
        if on_ready:
            on_ready()
        while not stop.wait(0.5):
            pass
    finally:
        log.info("stopping")
        sup.stop()
        endpoints.stop()
    return 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    """`vitalwatch run`."""
    endpoints = resolve(cfg, start_embedded=True)
    conf = ["-c", cfg.source]
    children = [
        Child("ingest", vitalwatch_argv("ingest", *conf)),
        Child("alerts", vitalwatch_argv("alerts", *conf)),
        Child("dashboard", vitalwatch_argv("dashboard", *conf)),
    ]
    print(f"VitalWatch running: dashboard http://{cfg.dashboard.host}:{cfg.dashboard.port}/  "
          f"redis {redact_url(endpoints.redis_url)}  mqtt {redact_url(endpoints.mqtt_url)}", flush=True)
    return run_roles(cfg, endpoints, children)
