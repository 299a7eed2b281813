"""What differs when `redis.url` is a Redis Cluster (`redis+cluster://`), in one place.

All of a clinic's keys share the hash tag `{<clinic>}` (monitor/model/keys.py), so they live in
one slot: every multi-key command, transaction (WATCH/MULTI/EXEC) and Lua script of ours is
single-slot and works unchanged on redis-py's RedisCluster. What does not:

- keyless commands go to *every* node (redis-py's default for PING, INFO and SCAN): `ping`,
  `node_info` and `scan_keys` ask only the master serving the clinic's slot — the one that
  matters, and one clinic keeps working while another clinic's shard is down;
- a cluster pipeline refuses EVALSHA (and ECHO, PING, INFO…): `pipeline_script` sends the
  script with EVAL there.

With a single server or Sentinel these helpers do what the plain commands do.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterPipeline as AioClusterPipeline
from redis.asyncio.cluster import RedisCluster as AioRedisCluster
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script

_CLUSTER = (RedisCluster, ClusterPipeline, AioRedisCluster, AioClusterPipeline)


def is_cluster(client: Any) -> bool:
    """True for a (sync or asyncio) RedisCluster client or one of its pipelines."""
    return isinstance(client, _CLUSTER)


def ping(client: Any, key: str) -> bool:
    """PING the server, or in a cluster the master serving `key`'s slot (not every node:
    a clinic is served while its own shard answers). Raises the client's errors."""
    if isinstance(client, RedisCluster):
        return bool(client.ping(target_nodes=client.get_node_from_key(key)))
    return bool(client.ping())


def node_info(client: Any, key: str, section: str = "all") -> dict[str, Any]:
    """INFO of the server, or in a cluster of the master serving `key`'s slot."""
    if isinstance(client, RedisCluster):
        return dict(client.info(section, target_nodes=client.get_node_from_key(key)))
    return dict(client.info(section))


async def node_info_async(client: Any, key: str, section: str = "all") -> dict[str, Any]:
    """`node_info` for an asyncio client."""
    if isinstance(client, AioRedisCluster):
        return dict(await client.info(section, target_nodes=client.get_node_from_key(key)))
    return dict(await client.info(section))


def scan_keys(client: Any, key: str, match: str, count: int = 500) -> list[str]:
    """SCAN for `match` (a pattern within one clinic's keys) on the server, or in a cluster on
    the master serving `key`'s slot only (all of that clinic's keys are there)."""
    if isinstance(client, RedisCluster):
        return list(client.scan_iter(match=match, count=count, target_nodes=client.get_node_from_key(key)))
    return list(client.scan_iter(match=match, count=count))


def pipeline_script(pipe: Any, script: Script, keys: list[str], args: list[Any]) -> None:
    """Queue a registered Lua script on a pipeline. A cluster pipeline refuses EVALSHA, so
    there the script goes with EVAL (its keys share one slot); elsewhere as redis-py does."""
    if is_cluster(pipe):
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)  # .eval is not EVAL here
    else:
        script(keys=keys, args=args, client=pipe)
