"""Accounts: hashed passwords, roles, disable/enable, sign-in limits — all in Redis, atomically.

Each account is one hash `keys.user(name)` with a field per attribute (name, role, pw_hash,
disabled, epoch, created_ms, updated_ms) and its name in the set `keys.user_names`. Changes
write only their own fields in one server-side step (Lua), so a sign-in that fails while an
admin disables the account or resets its password cannot write the old record back.
Failed sign-ins are not stored in the account at all: monitor/accounts/throttle.py counts
them in keys of their own (per typed name, per source) with backoff instead of a hard lock.

`epoch` grows with every disable, enable, role change and password change; a dashboard
sign-in remembers the epoch it was made in and is void once it differs, and the change
also deletes the account's sign-ins at once (`end_sessions`). Passwords are argon2id
(monitor/accounts/passwords.py). Every change is written to the audit log with the actor.
Roles, lowest first: station < nurse < director < admin (CONTRACT.md). API tokens:
monitor/accounts/tokens.py.
"""

from __future__ import annotations

import json
import re
import secrets
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import redis

from monitor.accounts import audit, passwords
from monitor.accounts.throttle import LoginPolicy, Throttle, login_state, name_id
from monitor.model import clock
from monitor.model.keys import Keys
from monitor.store import redis_types

ROLES: tuple[str, ...] = ("station", "nurse", "director", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LEN = 8
DEMO_USERS: tuple[tuple[str, str], ...] = (("nurse", "nurse"), ("director", "director"), ("admin", "admin"))
hash_password = passwords.hash_password


class UserError(ValueError):
    """A user operation was refused (unknown user, bad role, weak password, exists...)."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """Outcome of a sign-in check: the user record when ok, else a reason code.

    reason: "ok" | "unknown" | "bad_password" | "disabled" (right password, disabled
    account) | "throttled" (not checked: wait `retry_after_ms`) | "busy" (not checked:
    the password-check queue is full).
    """

    ok: bool
    user: dict[str, Any] | None
    reason: str
    retry_after_ms: int = 0


@dataclass(slots=True)
class Attempt:
    """A sign-in between its reservation and its password check (see `begin_login`)."""

    name: str
    source: str
    wait_ms: int
    record: dict[str, Any] | None = field(repr=False, default=None)

    @property
    def allowed(self) -> bool:
        """True when the password may be checked now."""
        return self.wait_ms == 0


def role_rank(role: str) -> int:
    """Position of `role` in ROLES (higher may do more); -1 for an unknown role."""
    return ROLES.index(role) if role in ROLES else -1


def has_role(role: str | None, min_role: str) -> bool:
    """True when `role` is at least `min_role`."""
    return role is not None and role_rank(role) >= role_rank(min_role) >= 0


def _check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise UserError(f"bad user name {name!r}: letters, digits, . _ @ - (max 64)")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LEN:
        raise UserError(f"password too short: at least {MIN_PASSWORD_LEN} characters")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A user record without its password hash (for listings and the API)."""
    return {k: v for k, v in record.items() if k != "pw_hash"}


def decode(raw: dict[str, str]) -> dict[str, Any] | None:
    """An account hash as a record with typed values (pure); None when empty or partial."""
    if not raw or "role" not in raw or "name" not in raw:
        return None
    return {"name": raw["name"], "role": raw["role"], "pw_hash": raw.get("pw_hash", ""),
            "disabled": raw.get("disabled") == "1", "epoch": int(raw.get("epoch") or 0),
            "created_ms": int(raw.get("created_ms") or 0), "updated_ms": int(raw.get("updated_ms") or 0)}


def _encode(record: dict[str, Any]) -> dict[str, str]:
    return {"name": record["name"], "role": record["role"], "pw_hash": record.get("pw_hash", ""),
            "disabled": "1" if record.get("disabled") else "0", "epoch": str(int(record.get("epoch") or 0)),
            "created_ms": str(int(record.get("created_ms") or 0)),
            "updated_ms": str(int(record.get("updated_ms") or 0))}


# --- server-side steps ------------------------------------------------------------------
# KEYS: user hash, names set. ARGV: field/value pairs. 1 = created, 0 = exists.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('SADD', KEYS[2], redis.call('HGET', KEYS[1], 'name'))
return 1
"""
# KEYS: user hash [, a sign-in to carry over to the new epoch]. ARGV[1] = bump epoch (1/0),
# then field/value pairs. The new epoch, or -1 when the account does not exist.
_UPDATE = """
if redis.call('HEXISTS', KEYS[1], 'role') == 0 then return -1 end
local n = #ARGV
if n > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, n)) end
if ARGV[1] ~= '1' then return tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') end
local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
if #KEYS > 1 then
  local raw = redis.call('GET', KEYS[2])
  if raw then
    local rec = cjson.decode(raw)
    rec['epoch'] = e
    redis.call('SET', KEYS[2], cjson.encode(rec), 'KEEPTTL')
  end
end
return e
"""
# KEYS: user hash. ARGV: expected old hash, new hash. Re-hash only if nobody changed it.
_REHASH = """
if redis.call('HGET', KEYS[1], 'pw_hash') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'pw_hash', ARGV[2])
  return 1
end
return 0
"""


def _script(client: redis.Redis, text: str) -> Any:
    return client.register_script(text)


# --- reading ----------------------------------------------------------------------------
def _migrate_legacy(client: redis.Redis, keys: Keys, only: str | None = None) -> None:
    """Move accounts from the old one-JSON-per-user hash (`keys.users`) to per-field hashes.

    Failure counts and lockouts of the old format are dropped (throttle.py keeps them now).
    """
    legacy: dict[str, str]
    if only is not None:
        raw = redis_types.opt_str(client.hget(keys.users, only))
        legacy = {only: raw} if raw else {}
    elif client.exists(keys.users):
        legacy = redis_types.str_hash(client.hgetall(keys.users))
    else:
        return
    create = _script(client, _CREATE)
    for name, text in legacy.items():
        try:
            rec = json.loads(text)
            rec = {**rec, "name": rec.get("name", name), "epoch": 0}
            create(keys=[keys.user(name), keys.user_names], args=[x for kv in _encode(rec).items() for x in kv])
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: left in the legacy hash for an operator to look at
        client.hdel(keys.users, name)


def get_user(client: redis.Redis, keys: Keys, name: str) -> dict[str, Any] | None:
    """The stored record of `name` (with its password hash), or None."""
    if not NAME_RE.match(name or ""):
        return None
    rec = decode(redis_types.str_hash(client.hgetall(keys.user(name))))
    if rec is None and client.hexists(keys.users, name):
        _migrate_legacy(client, keys, only=name)
        rec = decode(redis_types.str_hash(client.hgetall(keys.user(name))))
    return rec


def list_users(client: redis.Redis, keys: Keys, policy: LoginPolicy | None = None,
               now_ms: int | None = None) -> list[dict[str, Any]]:
    """All accounts (without hashes) by name, with their sign-in failures (`failures`,
    `refused`, `locked_until_ms`: until when their worst source waits)."""
    _migrate_legacy(client, keys)
    names = sorted(redis_types.str_set(client.smembers(keys.user_names)))
    pipe = client.pipeline(transaction=False)
    for n in names:
        pipe.hgetall(keys.user(n))
        pipe.hgetall(keys.login_failures(name_id(n)))
    res = pipe.execute() if names else []
    now = clock.now_ms() if now_ms is None else now_ms
    out = []
    for i in range(0, len(res), 2):
        rec = decode(redis_types.str_hash(res[i]))
        if rec is None:
            continue
        out.append({**public(rec), **login_state(redis_types.str_hash(res[i + 1]), policy or LoginPolicy(), now)})
    return out


def _require(client: redis.Redis, keys: Keys, name: str) -> dict[str, Any]:
    rec = get_user(client, keys, name)
    if rec is None:
        raise UserError(f"no user {name!r}")
    return rec


# --- changes ----------------------------------------------------------------------------
def create_user(client: redis.Redis, keys: Keys, name: str, role: str, password: str,
                actor: str = "system", now_ms: int | None = None) -> dict[str, Any]:
    """Create an account; UserError if it exists or the name/role/password is bad."""
    _check_name(name)
    _check_role(role)
    _check_password(password)
    if get_user(client, keys, name) is not None:  # also moves a legacy record over first
        raise UserError(f"user {name!r} already exists")
    now = clock.now_ms() if now_ms is None else now_ms
    record = {"name": name, "role": role, "pw_hash": hash_password(password), "disabled": False,
              "epoch": 0, "created_ms": now, "updated_ms": now}
    created = _script(client, _CREATE)(keys=[keys.user(name), keys.user_names],
                                       args=[x for kv in _encode(record).items() for x in kv])
    if not created:
        raise UserError(f"user {name!r} already exists")
    audit.record(client, keys, actor, "user_add", name=name, role=role)
    return public(record)


def _update(client: redis.Redis, keys: Keys, name: str, bump: bool, keep_session: str | None = None,
            **fields: str) -> int:
    """Write `fields` of an existing account in one step; the (new) epoch. The sign-in with
    digest `keep_session` moves to the new epoch in the same step (it stays valid)."""
    args: list[Any] = ["1" if bump else "0"]
    for k, v in {**fields, "updated_ms": str(clock.now_ms())}.items():
        args += [k, v]
    skeys = [keys.user(name)] + ([keys.web_session(keep_session)] if keep_session else [])
    epoch = int(_script(client, _UPDATE)(keys=skeys, args=args))
    if epoch < 0:
        raise UserError(f"no user {name!r}")
    return epoch


def end_sessions(client: redis.Redis, keys: Keys, name: str, keep: str | None = None) -> int:
    """Delete every dashboard sign-in of `name` (but the one with digest `keep`); how many."""
    digests = [d for d in redis_types.str_set(client.smembers(keys.user_sessions(name))) if d != keep]
    if not digests:
        return 0
    pipe = client.pipeline(transaction=False)
    for d in digests:
        pipe.delete(keys.web_session(d))
    pipe.srem(keys.user_sessions(name), *digests)
    return sum(int(x) for x in pipe.execute()[:-1])


def set_password(client: redis.Redis, keys: Keys, name: str, password: str, actor: str = "system",
                 keep_session: str | None = None) -> int:
    """Replace a user's password; ends their sign-ins (but `keep_session`, a session digest:
    the person changing her own) and clears sign-in failures. Returns the new epoch."""
    _check_password(password)
    _check_name(name)
    epoch = _update(client, keys, name, True, keep_session=keep_session, pw_hash=hash_password(password))
    end_sessions(client, keys, name, keep=keep_session)
    Throttle(client, keys, LoginPolicy()).clear(name)
    audit.record(client, keys, actor, "user_passwd", name=name)
    return epoch


def set_role(client: redis.Redis, keys: Keys, name: str, role: str, actor: str = "system") -> None:
    """Change a user's role; their sign-ins end (they sign in again with the new role)."""
    _check_role(role)
    old = _require(client, keys, name)["role"]
    _update(client, keys, name, True, role=role)
    end_sessions(client, keys, name)
    audit.record(client, keys, actor, "user_role", name=name, old=old, role=role)


def set_disabled(client: redis.Redis, keys: Keys, name: str, disabled: bool, actor: str = "system") -> None:
    """Disable (sign-ins end, no new ones, tokens refused) or enable an account; enabling
    also clears sign-in failures."""
    _check_name(name)
    _update(client, keys, name, True, disabled="1" if disabled else "0")
    if disabled:
        end_sessions(client, keys, name)
    else:
        Throttle(client, keys, LoginPolicy()).clear(name)
    audit.record(client, keys, actor, "user_disable" if disabled else "user_enable", name=name)


def unlock(client: redis.Redis, keys: Keys, name: str, actor: str = "system") -> bool:
    """Clear a name's sign-in failures and backoff; True when there were any."""
    _require(client, keys, name)
    was = Throttle(client, keys, LoginPolicy()).clear(name)
    audit.record(client, keys, actor, "user_unlock", name=name, was_locked=was)
    return was


# --- signing in -------------------------------------------------------------------------
def begin_login(client: redis.Redis, keys: Keys, name: str, source: str, policy: LoginPolicy,
                now_ms: int | None = None) -> Attempt:
    """Reserve a password check for `name` from `source` (or learn how long to wait)."""
    now = clock.now_ms() if now_ms is None else now_ms
    wait = Throttle(client, keys, policy).reserve(name or "", source, now)
    rec = get_user(client, keys, name) if wait == 0 else None
    return Attempt(name or "", source, wait, rec)


def check(attempt: Attempt, password: str) -> bool:
    """The password check itself (CPU only: run it on a HashPool)."""
    return passwords.verify(attempt.record["pw_hash"] if attempt.record else None, password)


def give_back(client: redis.Redis, keys: Keys, attempt: Attempt, policy: LoginPolicy) -> None:
    """The check never ran (queue full): the reservation does not count as a failure."""
    Throttle(client, keys, policy).settle(attempt.name, attempt.source, success=False)


def finish_login(client: redis.Redis, keys: Keys, attempt: Attempt, ok: bool, password: str,
                 policy: LoginPolicy) -> LoginResult:
    """Turn a checked attempt into a result; a right password gives the reservation back."""
    rec = attempt.record
    if rec is None:
        return LoginResult(False, None, "unknown")
    if not ok:
        return LoginResult(False, None, "bad_password")
    if rec.get("disabled"):
        return LoginResult(False, None, "disabled")
    Throttle(client, keys, policy).settle(attempt.name, attempt.source, success=True)
    if passwords.needs_rehash(rec["pw_hash"]):
        _script(client, _REHASH)(keys=[keys.user(rec["name"])], args=[rec["pw_hash"], hash_password(password)])
    return LoginResult(True, public(rec), "ok")


def authenticate(client: redis.Redis, keys: Keys, name: str, password: str, *, source: str = "local",
                 policy: LoginPolicy | None = None, pool: passwords.HashPool | None = None,
                 now_ms: int | None = None) -> LoginResult:
    """Check a password under the sign-in limits (synchronous: CLI, pages, tests).

    With `pool`, the check runs there (and "busy" comes back when its queue is full).
    Does not write the audit log (the caller knows the context) — see `audit_login`.
    """
    policy = policy or LoginPolicy()
    attempt = begin_login(client, keys, name, source, policy, now_ms)
    if not attempt.allowed:
        return LoginResult(False, None, "throttled", attempt.wait_ms)
    fut: Future[bool] | None = pool.submit(check, attempt, password) if pool is not None else None
    if pool is not None and fut is None:
        give_back(client, keys, attempt, policy)
        return LoginResult(False, None, "busy", 1000)
    ok = fut.result() if fut is not None else check(attempt, password)
    return finish_login(client, keys, attempt, ok, password, policy)


def verify_password(client: redis.Redis, keys: Keys, name: str, password: str, **kw: Any) -> dict[str, Any] | None:
    """The user record if `password` is right and the account usable, else None
    (`authenticate`'s keywords apply)."""
    res = authenticate(client, keys, name, password, **kw)
    return res.user if res.ok else None


def audit_login(client: redis.Redis, keys: Keys, name: str, result: LoginResult, via: str,
                source: str = "") -> None:
    """Write a sign-in attempt to the audit log. A refused attempt from an anonymous source
    is rate-limited per source (audit.record_limited); a typed name that is no account is
    logged as a digest, never as typed (people type passwords into the name field)."""
    if result.ok:
        audit.record(client, keys, name, "login", via=via)
        return
    # the typed name is logged only when it is an account (throttled attempts never loaded it)
    known = result.reason != "unknown" and NAME_RE.match(name or "") is not None \
        and bool(client.exists(keys.user(name)))
    user = name if known else "?"
    details: dict[str, Any] = {"via": via, "reason": result.reason}
    if not known:
        details["name_digest"] = name_id(name or "")[:12]
    if source:
        details["source"] = source
    if source.startswith("ip:"):
        audit.record_limited(client, keys, source, user, "login_failed", **details)
    else:
        audit.record(client, keys, user, "login_failed", **details)


def generate_password(nbytes: int = 9) -> str:
    """A random password that is easy to type (url-safe, no padding)."""
    return secrets.token_urlsafe(nbytes)


def ensure_demo_accounts(client: redis.Redis, keys: Keys, actor: str = "demo",
                         include_station: bool = False) -> list[tuple[str, str]]:
    """Create (or reset) the demo accounts nurse/director/admin with fresh random passwords.

    Returns [(user, password)] for `vitalwatch demo` to print as `login: <user> / <password>`.
    With `include_station`, also a `station` account (role station).
    """
    wanted = list(DEMO_USERS) + ([("station", "station")] if include_station else [])
    out: list[tuple[str, str]] = []
    for name, role in wanted:
        password = generate_password()
        if get_user(client, keys, name) is None:
            create_user(client, keys, name, role, password, actor=actor)
        else:
            set_password(client, keys, name, password, actor=actor)
            set_role(client, keys, name, role, actor=actor)
            set_disabled(client, keys, name, False, actor=actor)
        out.append((name, password))
    return out
