"""Sign-in rate limits with backoff, kept in Redis and updated atomically (Lua).

Three limits, each "N free failures, then wait base·2^k (capped) after the last one":

- per (user name, source): `lockout_failures` free, then backoff up to `lockout_min`. A
  guesser at one address or screen slows only their own attempts.
- per user name, over every source the name has not signed in from recently: a higher
  threshold and a short cap (`login_account_backoff_max_s`), against guessing spread over
  many addresses. Sources where the name signed in within KNOWN_TTL_S, and station screens
  checking an acting nurse (the station is itself signed in), are exempt: an anonymous
  attacker cannot keep a nurse out at her own station.
- per source over all names (password spraying): `login_source_failures` free.

Nothing is a hard lock anyone can trigger. Counting is by the *typed* name (a digest of
it), whether an account exists or not, so an unknown name and a real one answer the same
way at the same attempt. An attempt first reserves its check (`reserve`, one script: test
every limit, then count the attempt as a failure); a right password then gives the
reservation back (`settle`). So 40 parallel attempts cannot all pass the test before the
first failure is written: exactly the free attempts are checked, the rest are refused and
counted. The sources are client addresses (IPv6 by /64), "station:<account>", or
"self:<account>" (a signed-in person re-entering her own password).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

import redis

from monitor.model.keys import Keys

KNOWN_TTL_S = 30 * 24 * 3600
EXEMPT_PREFIXES = ("station:", "self:")


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """Thresholds and backoff (see the module docstring); from [dashboard] in the config."""

    pair_failures: int = 5
    account_failures: int = 20
    source_failures: int = 30
    backoff_s: float = 30.0
    pair_max_s: float = 900.0
    account_max_s: float = 60.0
    source_max_s: float = 900.0
    window_s: float = 900.0  # failures are forgotten this long after the last one

    @classmethod
    def from_config(cls, dash: Any) -> LoginPolicy:
        """The policy of a DashboardConfig."""
        lock_s = float(dash.lockout_min) * 60
        return cls(pair_failures=int(dash.lockout_failures), account_failures=int(dash.login_account_failures),
                   source_failures=int(dash.login_source_failures), backoff_s=float(dash.login_backoff_s),
                   pair_max_s=lock_s, account_max_s=float(dash.login_account_backoff_max_s),
                   source_max_s=lock_s, window_s=max(lock_s, float(dash.login_account_backoff_max_s)))


def name_id(name: str) -> str:
    """Key-safe digest of a typed user name (which may be anything, even a password)."""
    return hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:32]


def ip_source(host: str | None) -> str:
    """`ip:<address>` for a client address; IPv6 by its /64 (one host owns a whole /64)."""
    if not host:
        return "ip:unknown"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return "ip:" + host[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"ip:{addr.ipv4_mapped}"
        return "ip:" + str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return f"ip:{addr}"


def backoff_wait_ms(count: int, last_ms: int, threshold: int, base_s: float, max_s: float, now_ms: int) -> int:
    """How long an attempt must still wait after `count` failures, the last at `last_ms` (pure)."""
    if count < threshold:
        return 0
    delay_ms = min(base_s * 2 ** min(count - threshold, 20), max_s) * 1000
    return max(0, int(last_ms + delay_ms - now_ms))


_RESERVE = """
local now, src = tonumber(ARGV[1]), ARGV[2]
local function wait(c, t, thr, base, cap)
  if c < thr then return 0 end
  local e = c - thr
  if e > 20 then e = 20 end
  local d = base * (2 ^ e)
  if d > cap then d = cap end
  local w = t + d - now
  if w < 0 then return 0 end
  return w
end
local f = redis.call('HMGET', KEYS[1], 'c', 't', 'c:' .. src, 't:' .. src)
local s = redis.call('HMGET', KEYS[2], 'c', 't')
local window = tonumber(ARGV[10])
local ws = wait(tonumber(s[1] or '0'), tonumber(s[2] or '0'), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[9]))
if ws > 0 then
  -- spraying from one source: counted there only (no key per made-up name)
  redis.call('HINCRBY', KEYS[2], 'r', 1)
  redis.call('PEXPIRE', KEYS[2], window)
  return ws
end
local w = wait(tonumber(f[3] or '0'), tonumber(f[4] or '0'), tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7]))
local exempt = ARGV[11] == '1' or redis.call('SISMEMBER', KEYS[3], src) == 1
if not exempt then
  local wa = wait(tonumber(f[1] or '0'), tonumber(f[2] or '0'), tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[8]))
  if wa > w then w = wa end
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
if w > 0 then
  redis.call('HINCRBY', KEYS[1], 'r', 1)
  redis.call('PEXPIRE', KEYS[1], window)
  return w
end
redis.call('HINCRBY', KEYS[1], 'c:' .. src, 1)
redis.call('HSET', KEYS[1], 't:' .. src, now)
if not exempt then
  redis.call('HINCRBY', KEYS[1], 'c', 1)
  redis.call('HSET', KEYS[1], 't', now)
end
redis.call('HINCRBY', KEYS[2], 'c', 1)
redis.call('HSET', KEYS[2], 't', now)
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return 0
"""

# ARGV: src, exempt, success ('1': the password was right → remember the source; '0': the
# check never ran → only give the reservation back), known_ttl_ms
_SETTLE = """
local src = ARGV[1]
local function dec(key, field)
  if redis.call('EXISTS', key) == 0 then return end
  if redis.call('HINCRBY', key, field, -1) < 0 then redis.call('HSET', key, field, 0) end
end
dec(KEYS[1], 'n')
-- as in reserve: stations, self-checks and known sources never counted toward the account
if ARGV[2] ~= '1' and redis.call('SISMEMBER', KEYS[3], src) == 0 then dec(KEYS[1], 'c') end
dec(KEYS[2], 'c')
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], 'c:' .. src, 't:' .. src)
  redis.call('SADD', KEYS[3], src)
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[4]))
else
  dec(KEYS[1], 'c:' .. src)
end
return 1
"""


class Throttle:
    """The three limits for one clinic (scripts registered once per client)."""

    def __init__(self, client: redis.Redis, keys: Keys, policy: LoginPolicy) -> None:
        self.client, self.keys, self.policy = client, keys, policy
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, name: str, source: str) -> list[str]:
        nid = name_id(name)
        return [self.keys.login_failures(nid), self.keys.login_source(source), self.keys.login_known(nid)]

    def reserve(self, name: str, source: str, now_ms: int) -> int:
        """0 when this attempt may check its password (counted as a failure until settled),
        else how many ms it must still wait (counted as a refused attempt)."""
        p = self.policy
        exempt = "1" if source.startswith(EXEMPT_PREFIXES) else "0"
        wait = self._reserve(keys=self._keys(name, source), args=[
            now_ms, source, p.pair_failures, p.account_failures, p.source_failures, int(p.backoff_s * 1000),
            int(p.pair_max_s * 1000), int(p.account_max_s * 1000), int(p.source_max_s * 1000),
            int(p.window_s * 1000), exempt])
        return int(wait)

    def settle(self, name: str, source: str, success: bool) -> None:
        """Give a reservation back: the password was right (`success`), or it was never checked."""
        exempt = "1" if source.startswith(EXEMPT_PREFIXES) else "0"
        self._settle(keys=self._keys(name, source),
                     args=[source, exempt, "1" if success else "0", KNOWN_TTL_S * 1000])

    def clear(self, name: str) -> bool:
        """Forget a name's failures (admin unlock, password reset); True when there were any."""
        key = self.keys.login_failures(name_id(name))
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.delete(key)
        raw = pipe.execute()[0] or {}
        return any(_int(v) > 0 for k, v in raw.items() if k in ("n", "c") or str(k).startswith("c:"))


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def login_state(raw: dict[str, str], policy: LoginPolicy, now_ms: int) -> dict[str, int]:
    """A name's failure hash as the admin page shows it (pure): failed attempts (checked
    and refused), refused ones, and until when its worst source (or the whole account,
    for sources it has not signed in from) has to wait; 0 when nobody waits."""
    def num(k: str) -> int:
        return _int(raw.get(k))

    until = 0
    for k in raw:
        if k.startswith("c:"):
            src = k[2:]
            wait = backoff_wait_ms(num(k), num("t:" + src), policy.pair_failures, policy.backoff_s,
                                   policy.pair_max_s, now_ms)
            until = max(until, now_ms + wait if wait else 0)
    wait = backoff_wait_ms(num("c"), num("t"), policy.account_failures, policy.backoff_s,
                           policy.account_max_s, now_ms)
    until = max(until, now_ms + wait if wait else 0)
    return {"failures": num("n"), "refused": num("r"), "locked_until_ms": until}
