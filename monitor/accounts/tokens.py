"""API tokens for scripts, pagers and phones: random, stored as a digest, expiring, scoped.

`keys.tokens` is a hash sha256(token) hex → JSON {name, role, scopes, label, created_ms,
expires_ms}. The token itself is shown once and never stored. A token acts as its account
with at most its scopes (`SCOPES`), and only while the account is enabled and still has the
role the token was issued for (a role change voids it: issue a new one). Its id in listings
and for revoking one token is the first 12 hex digits of the digest.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import redis

from monitor.accounts import audit
from monitor.accounts.users import UserError, get_user
from monitor.model import clock
from monitor.model.keys import Keys
from monitor.store import redis_types

TOKEN_PREFIX = "vwt_"
ID_LEN = 12
SCOPES: dict[str, str] = {
    "read": "live overview, rooms, alerts (GET /api/v1/rooms, /api/v1/alerts, /ws/live)",
    "acknowledge": "acknowledge, pause and reset alarms (POST /api/v1/alerts/<id>/…)",
    "sessions": "a session with its readings and patient id (GET /api/v1/sessions/…); the director's reports "
                "and the REMS forms (GET /api/v1/report, /research.csv, /patients/…, /rems/…)",
    "metrics": "Prometheus metrics from another host (GET /metrics on the dashboard, ingest and alerts)",
}
DEFAULT_SCOPES: tuple[str, ...] = ("read", "acknowledge")
DEFAULT_DAYS = 90
MAX_DAYS = 365


def token_digest(token: str) -> str:
    """The stored form of an API token: sha256 hex (a token is random, so no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Scopes from "read,acknowledge" or a list; UserError for an unknown one (pure)."""
    items = value.split(",") if isinstance(value, str) else list(value or DEFAULT_SCOPES)
    out = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise UserError(f"unknown token scope(s) {', '.join(bad) or '(none)'}; expected some of {', '.join(SCOPES)}")
    return out


def decode(raw: str | None) -> dict[str, Any] | None:
    """A stored token value (pure); None when unreadable. Values of the old format (a bare
    user name: no scopes, no expiry) come back as `legacy` and are refused."""
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return {"name": raw, "legacy": True, "scopes": [], "expires_ms": 0, "created_ms": 0, "role": "", "label": ""}
    return rec if isinstance(rec, dict) and "name" in rec else None


def issue_token(client: redis.Redis, keys: Keys, name: str, actor: str = "system",
                scopes: str | list[str] | tuple[str, ...] | None = None, days: float = DEFAULT_DAYS,
                label: str = "", now_ms: int | None = None) -> str:
    """A new API token for `name`; only its digest is stored. Shown once to the caller."""
    rec = get_user(client, keys, name)
    if rec is None:
        raise UserError(f"no user {name!r}")
    if not 0 < days <= MAX_DAYS:
        raise UserError(f"token lifetime must be between 0 and {MAX_DAYS} days")
    sc = parse_scopes(scopes)
    now = clock.now_ms() if now_ms is None else now_ms
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = token_digest(token)
    value = {"name": name, "role": rec["role"], "scopes": list(sc), "label": label[:80],
             "created_ms": now, "expires_ms": now + int(days * 86_400_000)}
    client.hset(keys.tokens, digest, json.dumps(value, sort_keys=True))
    audit.record(client, keys, actor, "token_issue", name=name, token=digest[:ID_LEN], scopes=",".join(sc),
                 expires_ms=value["expires_ms"])
    return token


def list_tokens(client: redis.Redis, keys: Keys, name: str | None = None,
                now_ms: int | None = None) -> list[dict[str, Any]]:
    """Tokens (of `name`, or all) newest first: id, name, role, scopes, label, created_ms,
    expires_ms, and `state`: "active", "expired" or "legacy" (old format: refused)."""
    now = clock.now_ms() if now_ms is None else now_ms
    out = []
    for digest, raw in redis_types.str_hash(client.hgetall(keys.tokens)).items():
        rec = decode(raw)
        if rec is None or (name is not None and rec["name"] != name):
            continue
        state = "legacy" if rec.get("legacy") else "expired" if int(rec.get("expires_ms") or 0) <= now else "active"
        out.append({"id": digest[:ID_LEN], "name": rec["name"], "role": rec.get("role", ""),
                    "scopes": list(rec.get("scopes") or []), "label": rec.get("label", ""),
                    "created_ms": int(rec.get("created_ms") or 0), "expires_ms": int(rec.get("expires_ms") or 0),
                    "state": state})
    return sorted(out, key=lambda t: (-t["created_ms"], t["id"]))


def revoke_token(client: redis.Redis, keys: Keys, token_id: str, actor: str = "system") -> bool:
    """Remove the one token whose id (digest prefix) is `token_id`; True when found."""
    tid = (token_id or "").strip().lower()
    if len(tid) < 8:
        raise UserError("give the token id as listed (12 hex digits)")
    hits = [d for d in redis_types.str_hash(client.hgetall(keys.tokens)) if d.startswith(tid)]
    if len(hits) != 1:
        return False
    rec = decode(client.hget(keys.tokens, hits[0])) or {"name": "?"}  # type: ignore[arg-type]
    client.hdel(keys.tokens, hits[0])
    audit.record(client, keys, actor, "token_revoke", name=rec["name"], token=hits[0][:ID_LEN], count=1)
    return True


def revoke_tokens(client: redis.Redis, keys: Keys, name: str, actor: str = "system") -> int:
    """Remove every token of `name`; returns how many."""
    gone = [d for d, raw in redis_types.str_hash(client.hgetall(keys.tokens)).items()
            if (decode(raw) or {}).get("name") == name]
    if gone:
        client.hdel(keys.tokens, *gone)
        audit.record(client, keys, actor, "token_revoke", name=name, count=len(gone))
    return len(gone)


def user_for_digest(client: redis.Redis, keys: Keys, digest: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """{name, role, scopes, token} of a valid token by digest, else None (unknown, expired,
    legacy, account disabled or gone, or its role changed since the token was issued)."""
    rec = decode(redis_types.opt_str(client.hget(keys.tokens, digest)))
    now = clock.now_ms() if now_ms is None else now_ms
    if rec is None or rec.get("legacy") or int(rec.get("expires_ms") or 0) <= now:
        return None
    account = get_user(client, keys, rec["name"])
    if account is None or account["disabled"] or account["role"] != rec.get("role"):
        return None
    return {"name": account["name"], "role": account["role"], "scopes": frozenset(rec.get("scopes") or ()),
            "token": digest}


def user_for_token(client: redis.Redis, keys: Keys, token: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """`user_for_digest` for a token as sent (`Authorization: Bearer <token>`)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    return user_for_digest(client, keys, token_digest(token), now_ms)


def allows(client: redis.Redis, keys: Keys, token: str, scope: str, now_ms: int | None = None) -> bool:
    """Whether `token` (as sent) is valid now and carries `scope` (Redis errors propagate)."""
    rec = user_for_token(client, keys, token, now_ms)
    return rec is not None and scope in rec["scopes"]
