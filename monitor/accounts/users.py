"""Accounts: hashed passwords, roles, disable/enable, lockout, API tokens — all in Redis.

`keys.users` is a hash user name → JSON record {name, role, pw_hash, disabled, failures,
locked_until_ms, created_ms, updated_ms}. Passwords are argon2id hashes (argon2-cffi).
`keys.tokens` is a hash sha256(token) hex → user name; the token itself is shown once and
never stored. Every change is written to the audit log with the acting user.
Roles, lowest first: station < nurse < director < admin (CONTRACT.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from monitor.accounts import audit
from monitor.model import clock
from monitor.model.keys import Keys
from monitor.store import redis_types

ROLES: tuple[str, ...] = ("station", "nurse", "director", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "vwt_"
MIN_PASSWORD_LEN = 8
DEMO_USERS: tuple[tuple[str, str], ...] = (("nurse", "nurse"), ("director", "director"), ("admin", "admin"))

# OWASP's argon2id baseline (19 MiB, t=2, p=1): ~20 ms a check here, so logins stay quick
# on a shared 2-core box while an offline guess stays expensive.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the user does not exist, so timing does not reveal who exists.
_DUMMY_HASH = _HASHER.hash("not-a-real-password")


class UserError(ValueError):
    """A user operation was refused (unknown user, bad role, weak password, exists...)."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """Outcome of `authenticate`: the user record when ok, else a reason code."""

    ok: bool
    user: dict[str, Any] | None
    reason: str  # "ok" | "unknown" | "bad_password" | "disabled" | "locked"
    locked_until_ms: int = 0


def role_rank(role: str) -> int:
    """Position of `role` in ROLES (higher may do more); -1 for an unknown role."""
    return ROLES.index(role) if role in ROLES else -1


def has_role(role: str | None, min_role: str) -> bool:
    """True when `role` is at least `min_role`."""
    return role is not None and role_rank(role) >= role_rank(min_role) >= 0


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (pure apart from the random salt)."""
    return _HASHER.hash(password)


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


def get_user(client: redis.Redis, keys: Keys, name: str) -> dict[str, Any] | None:
    """The stored record of `name`, or None."""
    raw = client.hget(keys.users, name)
    return json.loads(raw) if raw else None


def list_users(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """All accounts (without hashes), by name."""
    out = [public(json.loads(v)) for v in client.hgetall(keys.users).values()]
    return sorted(out, key=lambda r: r["name"])


def _save(client: redis.Redis, keys: Keys, record: dict[str, Any], now_ms: int) -> None:
    record["updated_ms"] = now_ms
    client.hset(keys.users, record["name"], json.dumps(record, sort_keys=True))


def _require(client: redis.Redis, keys: Keys, name: str) -> dict[str, Any]:
    rec = get_user(client, keys, name)
    if rec is None:
        raise UserError(f"no user {name!r}")
    return rec


def create_user(client: redis.Redis, keys: Keys, name: str, role: str, password: str,
                actor: str = "system", now_ms: int | None = None) -> dict[str, Any]:
    """Create an account; UserError if it exists or the name/role/password is bad."""
    _check_name(name)
    _check_role(role)
    _check_password(password)
    now = clock.now_ms() if now_ms is None else now_ms
    record = {"name": name, "role": role, "pw_hash": hash_password(password), "disabled": False,
              "failures": 0, "locked_until_ms": 0, "created_ms": now, "updated_ms": now}
    if not client.hsetnx(keys.users, name, json.dumps(record, sort_keys=True)):
        raise UserError(f"user {name!r} already exists")
    audit.record(client, keys, actor, "user_add", name=name, role=role)
    return public(record)


def set_password(client: redis.Redis, keys: Keys, name: str, password: str, actor: str = "system") -> None:
    """Replace a user's password (also clears a lockout)."""
    _check_password(password)
    rec = _require(client, keys, name)
    rec.update(pw_hash=hash_password(password), failures=0, locked_until_ms=0)
    _save(client, keys, rec, clock.now_ms())
    audit.record(client, keys, actor, "user_passwd", name=name)


def set_role(client: redis.Redis, keys: Keys, name: str, role: str, actor: str = "system") -> None:
    """Change a user's role."""
    _check_role(role)
    rec = _require(client, keys, name)
    old = rec["role"]
    rec["role"] = role
    _save(client, keys, rec, clock.now_ms())
    audit.record(client, keys, actor, "user_role", name=name, old=old, role=role)


def set_disabled(client: redis.Redis, keys: Keys, name: str, disabled: bool, actor: str = "system") -> None:
    """Disable (no login, tokens refused) or enable an account; enabling clears a lockout."""
    rec = _require(client, keys, name)
    rec["disabled"] = bool(disabled)
    if not disabled:
        rec.update(failures=0, locked_until_ms=0)
    _save(client, keys, rec, clock.now_ms())
    audit.record(client, keys, actor, "user_disable" if disabled else "user_enable", name=name)


def unlock(client: redis.Redis, keys: Keys, name: str, actor: str = "system") -> bool:
    """Clear a lockout and the failure count; True when the account was locked or had failures."""
    rec = _require(client, keys, name)
    was = bool(rec.get("locked_until_ms") or rec.get("failures"))
    rec.update(failures=0, locked_until_ms=0)
    _save(client, keys, rec, clock.now_ms())
    audit.record(client, keys, actor, "user_unlock", name=name, was_locked=was)
    return was


def authenticate(client: redis.Redis, keys: Keys, name: str, password: str, *,
                 max_failures: int = 5, lockout_s: float = 900, now_ms: int | None = None) -> LoginResult:
    """Check a password, counting failures: `max_failures` in a row lock the account.

    Does not write the audit log (the caller knows the context: login form, station
    acknowledge, API) — see `audit_login`.
    """
    now = clock.now_ms() if now_ms is None else now_ms
    rec = get_user(client, keys, name) if NAME_RE.match(name or "") else None
    if rec is None:
        _verify(_DUMMY_HASH, password or "")
        return LoginResult(False, None, "unknown")
    if rec.get("locked_until_ms", 0) > now:
        return LoginResult(False, None, "locked", rec["locked_until_ms"])
    if not _verify(rec["pw_hash"], password or ""):
        rec["failures"] = int(rec.get("failures", 0)) + 1
        if rec["failures"] >= max_failures:
            rec["locked_until_ms"] = now + int(lockout_s * 1000)
            rec["failures"] = 0
        _save(client, keys, rec, now)
        if rec.get("locked_until_ms", 0) > now:
            return LoginResult(False, None, "locked", rec["locked_until_ms"])
        return LoginResult(False, None, "bad_password")
    if rec.get("disabled"):
        return LoginResult(False, None, "disabled")
    if rec.get("failures") or rec.get("locked_until_ms"):
        rec.update(failures=0, locked_until_ms=0)
        _save(client, keys, rec, now)
    if _HASHER.check_needs_rehash(rec["pw_hash"]):
        rec["pw_hash"] = hash_password(password)
        _save(client, keys, rec, now)
    return LoginResult(True, public(rec), "ok")


def verify_password(client: redis.Redis, keys: Keys, name: str, password: str, *,
                    max_failures: int = 5, lockout_s: float = 900,
                    now_ms: int | None = None) -> dict[str, Any] | None:
    """The user record if `password` is right and the account usable, else None."""
    res = authenticate(client, keys, name, password, max_failures=max_failures,
                       lockout_s=lockout_s, now_ms=now_ms)
    return res.user if res.ok else None


def audit_login(client: redis.Redis, keys: Keys, name: str, result: LoginResult, via: str) -> None:
    """Write a login attempt (success or refusal, with its reason) to the audit log."""
    action = "login" if result.ok else "login_failed"
    audit.record(client, keys, name if result.ok or result.reason != "unknown" else f"?{name[:64]}",
                 action, via=via, reason=result.reason)


def _verify(pw_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(pw_hash, password)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    """The stored form of an API token: sha256 hex (a token is random, so no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(client: redis.Redis, keys: Keys, name: str, actor: str = "system") -> str:
    """A new API token for `name`; only its digest is stored. Shown once to the caller."""
    _require(client, keys, name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    client.hset(keys.tokens, token_digest(token), name)
    audit.record(client, keys, actor, "token_issue", name=name, digest=token_digest(token)[:12])
    return token


def revoke_tokens(client: redis.Redis, keys: Keys, name: str, actor: str = "system") -> int:
    """Remove every token of `name`; returns how many."""
    gone = [d for d, u in client.hgetall(keys.tokens).items() if u == name]
    if gone:
        client.hdel(keys.tokens, *gone)
        audit.record(client, keys, actor, "token_revoke", name=name, count=len(gone))
    return len(gone)


def user_for_token(client: redis.Redis, keys: Keys, token: str) -> dict[str, Any] | None:
    """The (enabled) user an API token belongs to, or None."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    name = redis_types.opt_str(client.hget(keys.tokens, token_digest(token)))
    if not name:
        return None
    rec = get_user(client, keys, name)
    if rec is None or rec.get("disabled"):
        return None
    return public(rec)


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
