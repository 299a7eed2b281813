"""Parse a `redis.url` into what a client needs: one server, a Sentinel group or a Cluster.

Pure (no I/O): monitor/store/redis_conn.py builds the clients from a `RedisTarget`. Forms
(CONTRACT.md, "Redis deployments"):

- `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS), `unix:///path.sock[?db=N]`
- `redis+sentinel://[user:pass@]host:port[,host:port…]/<master-name>[/<db>]`
- `redis+cluster://[user:pass@]host:port[,host:port…]`

`rediss+sentinel://` and `rediss+cluster://` use TLS to the data nodes (and, for Sentinel,
to the Sentinels too). The user/password are used for the data nodes and for Sentinels.
Query parameters (e.g. `ssl_ca_certs=…`) are kept and passed on to the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
           "redis+cluster", "rediss+cluster")


def unquote(s: str) -> str:
    """Percent-decoding (as urllib.parse.unquote; this layer imports no I/O packages)."""
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]),
                  s.encode()).decode("utf-8", "replace")


def parse_qsl(query: str) -> list[tuple[str, str]]:
    """`a=1&b=2` → [("a", "1"), ("b", "2")], values percent-decoded."""
    pairs = []
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            pairs.append((unquote(k.replace("+", " ")), unquote(v.replace("+", " "))))
    return pairs


class RedisUrlError(ValueError):
    """The URL is not one of the supported forms; the message says what is wrong."""


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is. `kind` is "single", "sentinel" or "cluster"."""

    kind: str
    url: str                                    # the original URL (single: passed to from_url)
    hosts: tuple[tuple[str, int], ...] = ()     # sentinel/cluster seed nodes
    master: str = ""                            # sentinel: the monitored master's name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    options: tuple[tuple[str, str], ...] = ()   # query parameters, passed to the client


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise RedisUrlError("empty host in the host list")
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port_s = rest.lstrip(":")
        else:
            host, _, port_s = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_s) if port_s else default_port
        except ValueError:
            raise RedisUrlError(f"bad port in {part!r}") from None
        if not host or not 0 < port < 65536:
            raise RedisUrlError(f"bad host:port {part!r}")
        hosts.append((host, port))
    return tuple(hosts)


def parse(url: str) -> RedisTarget:
    """The RedisTarget for `url`; RedisUrlError with a reason if it is not a supported form."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise RedisUrlError(f"unsupported Redis URL scheme {scheme!r}: use 'embedded' or one of "
                            + ", ".join(f"{s}://" for s in SCHEMES))
    if scheme in ("redis", "rediss"):
        _check_single(rest)
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget(kind="single", url=url, tls=scheme == "rediss")
    tls = scheme.startswith("rediss")
    kind = scheme.split("+", 1)[1]
    # urlsplit cannot parse a comma-separated host list; take the credentials off by hand.
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    creds, at, hostlist = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
        if not colon:  # redis://secret@host means a password only, as redis-py reads it
            username, password = None, unquote(user)
    hosts = _hosts(hostlist, 26379 if kind == "sentinel" else 6379)
    segments = [s for s in path.split("/") if s]
    options = tuple(parse_qsl(query))
    master, db = "", 0
    if kind == "sentinel":
        if not segments:
            raise RedisUrlError("redis+sentinel:// needs the master name: "
                                "redis+sentinel://host:26379[,host:port…]/<master-name>[/<db>]")
        master = unquote(segments[0])
        if len(segments) > 2:
            raise RedisUrlError("redis+sentinel:// path is /<master-name>[/<db>]")
        if len(segments) == 2:
            db = _db(segments[1])
    elif segments:
        raise RedisUrlError("redis+cluster:// takes no path (a cluster has only db 0)")
    return RedisTarget(kind=kind, url=url, hosts=hosts, master=master, db=db,
                       username=username, password=password, tls=tls, options=options)


def _check_single(rest: str) -> None:
    """redis:// / rediss:// (what follows `://`): one host, a port 1–65535, an optional /<db>.

    The URL itself goes to redis-py's from_url, which would fail only when a role starts
    (a traceback, not a config error) on a port that is not a number or out of range.
    """
    rest = rest.partition("?")[0].partition("#")[0]
    authority, _, path = rest.partition("/")
    hostport = authority.rpartition("@")[2]
    if "," in hostport:
        raise RedisUrlError("redis:// takes one host; a host list is for redis+sentinel:// or redis+cluster://")
    if hostport:
        _hosts(hostport, 6379)
    if path.strip("/"):
        _db(path.strip("/"))


def _db(s: str) -> int:
    try:
        db = int(s)
    except ValueError:
        raise RedisUrlError(f"bad database number {s!r}") from None
    if db < 0:
        raise RedisUrlError(f"bad database number {s!r}")
    return db
