"""redis.url forms (CONTRACT "Redis deployments"): parsed, or refused with the reason."""

from __future__ import annotations

import pytest

from monitor.model.redis_url import RedisUrlError, parse


def test_single_server_urls_pass_through() -> None:
    for url in ("redis://h:6380/2", "rediss://:pw@h:6380", "unix:///run/r.sock?db=1", "redis://[::1]:6379/0",
                "redis://u:p%40ss@h?health_check_interval=2", "redis://localhost"):
        t = parse(url)
        assert (t.kind, t.url) == ("single", url)
    assert parse("rediss://h").tls and not parse("redis://h").tls


def test_sentinel_url_names_hosts_master_db_and_credentials() -> None:
    t = parse("redis+sentinel://vw:p%40ss@s1:26379,s2,[::1]:26381/clinic-master/3?ssl_ca_certs=/ca")
    assert t.kind == "sentinel"
    assert t.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26381))
    assert (t.master, t.db, t.username, t.password) == ("clinic-master", 3, "vw", "p@ss")
    assert dict(t.options) == {"ssl_ca_certs": "/ca"}
    assert parse("rediss+sentinel://s1/m").tls
    # a lone secret before @ is a password, as redis-py reads redis://secret@host
    assert (parse("redis+sentinel://secret@s1/m").password,
            parse("redis+sentinel://secret@s1/m").username) == ("secret", None)


def test_cluster_url_names_seed_nodes() -> None:
    t = parse("redis+cluster://n1:7000,n2:7001")
    assert (t.kind, t.hosts, t.db) == ("cluster", (("n1", 7000), ("n2", 7001)), 0)


@pytest.mark.parametrize("url, words", [
    ("http://h", "unsupported Redis URL scheme"),
    ("redis+sentinel://s1:26379", "needs the master name"),
    ("redis+sentinel://s1/m/x", "bad database number"),
    ("redis+sentinel://s1/m/1/2", "path is"),
    ("redis+cluster://n1:7000/3", "takes no path"),
    ("redis+cluster://n1:port", "bad port"),
    ("redis+cluster://n1,,n2", "empty host"),
    # a single server's URL went to redis-py unchecked: check-config said OK, every role
    # then died with a ValueError traceback at start
    ("redis://h:notaport", "bad port"),
    ("rediss://:pw@h:99999/0", "bad host:port"),
    ("redis://h:6379/zero", "bad database number"),
    ("redis://h1:6379,h2:6379", "one host"),
])
def test_bad_urls_are_refused_with_the_reason(url: str, words: str) -> None:
    with pytest.raises(RedisUrlError, match=words):
        parse(url)


def test_config_refuses_a_bad_redis_url_and_says_why(tmp_path) -> None:
    from pydantic import ValidationError

    from monitor.model.config import RedisConfig

    assert RedisConfig(url="redis+sentinel://s1,s2/m").url.startswith("redis+sentinel")
    with pytest.raises(ValidationError, match="needs the master name"):
        RedisConfig(url="redis+sentinel://s1:26379")


def test_sentinels_get_the_url_credentials_unless_their_own_are_given() -> None:
    from monitor.store.redis_conn import _common, _sentinel_kwargs

    t = parse("rediss+sentinel://vw:srv@s1,s2/m?ssl_ca_certs=/ca")
    kw = _sentinel_kwargs(t, _common(t, 5.0))
    assert (kw["username"], kw["password"], kw["ssl"], kw["ssl_ca_certs"]) == ("vw", "srv", True, "/ca")
    assert "decode_responses" not in kw
    t = parse("redis+sentinel://:srv@s1/m?sentinel_password=sent")
    assert _sentinel_kwargs(t, _common(t, 5.0))["password"] == "sent"
    t = parse("redis+sentinel://:srv@s1/m?sentinel_password=")  # Sentinels without a password
    assert "password" not in _sentinel_kwargs(t, _common(t, 5.0))


def test_min_replicas_needs_one_master() -> None:
    from pydantic import ValidationError

    from monitor.model.config import RedisConfig

    assert RedisConfig(url="redis+sentinel://s1/m", min_replicas=1).min_replicas == 1
    assert RedisConfig().min_replicas == 0
    with pytest.raises(ValidationError, match="min_replicas needs one master"):
        RedisConfig(url="redis+cluster://n1:7000", min_replicas=1)
    with pytest.raises(ValidationError, match="embedded server has none"):
        RedisConfig(min_replicas=1)
