"""The `/metrics` HTTP listener of `vitalwatch ingest` and `vitalwatch alerts`
(`--metrics-port P`, or `[metrics] ingest_port` / `alerts_port`; bound to `[metrics] host`).

A small threaded HTTP server from the standard library: GET /metrics answers the role's
registry under the `Access` rule; anything else is 404. It runs in daemon threads and never
touches the role's own work; a scrape only reads state (monitor/observe/collectors.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry

from monitor.observe.access import Access, exposition, proxied

log = logging.getLogger(__name__)


class MetricsServer:
    """Serves one registry on host:port until `stop()`."""

    def __init__(self, registry: CollectorRegistry, access: Access, host: str, port: int) -> None:
        self.registry, self.access = registry, access
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                outer._answer(self)

            def do_HEAD(self) -> None:  # noqa: N802
                outer._answer(self, body=False)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("metrics %s: " + format, self.client_address[0], *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.host = host
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        """Start serving (returns at once)."""
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def _answer(self, req: BaseHTTPRequestHandler, body: bool = True) -> None:
        if req.path.split("?", 1)[0] != "/metrics":
            self._send(req, 404, b"not found\n", "text/plain; charset=utf-8", body)
            return
        verdict = self.access.decide(req.client_address[0], req.headers.get("Authorization"), proxied(req.headers))
        if not verdict.ok:
            extra = {"WWW-Authenticate": 'Bearer realm="vitalwatch metrics"'} if verdict.status == 401 else {}
            self._send(req, verdict.status, (verdict.text + "\n").encode(), "text/plain; charset=utf-8", body, extra)
            return
        try:
            data, ctype = exposition(self.registry)
        except Exception:  # noqa: BLE001 - a collector bug must not end the listener
            log.exception("metrics collection failed")
            self._send(req, 500, b"metrics collection failed\n", "text/plain; charset=utf-8", body)
            return
        self._send(req, 200, data, ctype, body)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str, body: bool,
              extra: dict[str, str] | None = None) -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            req.send_header(k, v)
        req.end_headers()
        if body:
            req.wfile.write(data)


def serve_metrics(cli_port: int | None, config_port: int, host: str, registry: CollectorRegistry,
                  token_ok: Callable[[str], bool]) -> MetricsServer | None:
    """A role's listener on `--metrics-port` (`cli_port`), else its `[metrics]` port; None
    when that is 0 — or when it cannot listen there (logged as an error: the role goes on
    monitoring without metrics). Loopback scrapes freely; others need a token `token_ok`
    accepts."""
    port = config_port if cli_port is None else cli_port
    if not port:
        return None
    try:
        server = MetricsServer(registry, Access(token_ok), host, port)
    except OSError as e:  # port taken, address not here: monitoring matters more than metrics
        log.error("cannot serve /metrics on %s:%d (%s): running WITHOUT metrics", host, port, e)
        return None
    return server.start()
