"""`GET /metrics` on the dashboard's own port: the push hub, sign-in failures, the process.

The hub is only read (monitor/observe/collectors.py `DashboardCollector`): tabs connected,
the fullest tab's queue, the loop's progress, and the push lag — how long the oldest
reading stored in Redis but not yet pushed has waited, asked of Redis at scrape time with
one pipelined XRANGE per room after the id the hub last pushed. The route is sync, so
FastAPI runs it on a worker thread: a scrape never runs on the push loop's event loop.

Access (monitor/observe/access.py): the path is public for the sign-in middleware; the
route lets loopback clients in and asks others for a bearer token with the `metrics` scope.
A request that came through a proxy (X-Forwarded-For or Forwarded present) is never taken
for a loopback one, whatever `[dashboard] forwarded_allow_ips` made of its address.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response

from dashboard.data import Data
from dashboard.live import Hub
from monitor.accounts import tokens
from monitor.model.clock import now_ms
from monitor.observe.access import Access, exposition, proxied
from monitor.observe.collectors import DashboardCollector, push_lag_s, role_registry
from monitor.store.retry import REDIS_ERRORS, cause

log = logging.getLogger(__name__)

PATH = "/metrics"


def install_metrics(server: FastAPI, hub: Hub, data: Data) -> Any:
    """Add GET /metrics; returns the registry (tests read it)."""
    prefix = data.keys.vitals("")

    def lag() -> float | None:
        try:
            ids = {k: v for k, v in dict(hub.last_ids).items() if k.startswith(prefix)}
            return push_lag_s(data.client, ids, now_ms())
        except REDIS_ERRORS as e:
            log.debug("push lag not measured: %s", cause(e))
            return None
        except RuntimeError:  # the loop changed last_ids while it was copied: next scrape
            return None

    registry = role_registry(DashboardCollector(hub, lag))
    access = Access(lambda token: tokens.allows(data.client, data.keys, token, "metrics"))

    @server.get(PATH, include_in_schema=False)
    def metrics(request: Request) -> Response:
        verdict = access.decide(request.client.host if request.client else None,
                                request.headers.get("authorization"), proxied(request.headers))
        if not verdict.ok:
            headers = {"WWW-Authenticate": 'Bearer realm="vitalwatch metrics"'} if verdict.status == 401 else None
            return Response(verdict.text + "\n", verdict.status, headers=headers, media_type="text/plain")
        body, ctype = exposition(registry)
        return Response(body, 200, media_type=ctype)

    return registry
