"""Prometheus metrics of the long-running roles (docs/operations.md, "Metrics").

- `catalogue.py`: every metric name, type, labels and meaning — the one list the collectors,
  the docs, the Grafana dashboard and its test are held to.
- `collectors.py`: custom collectors that read each role's existing state at scrape time
  (the stream writer's storage state, device states, the push hub, the alert worker), so
  the hot paths only keep the counters they already kept.
- `access.py`: who may scrape: loopback freely, anyone else with a bearer token.
- `serve.py`: the `/metrics` listener of `ingest` and `alerts` (`--metrics-port`).

This package sits beside `monitor.store` in the layers: it imports only `monitor.model` and
`prometheus_client`; the roles hand it their objects (duck-typed) and a token check.
"""
