"""Pure rules behind the account pages (`/account`, `/admin/users`): no Redis, no Dash.

The pages call monitor/accounts/users.py for every change (it validates, stores and audits); these
functions decide what to refuse *before* that and how to show an account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.accounts.users import MIN_PASSWORD_LEN, ROLES


def password_change_problem(current: str | None, new: str | None, repeat: str | None) -> str | None:
    """Why a change-own-password form is refused before any check against Redis, or None."""
    if not current:
        return "enter your current password"
    if not new:
        return "enter a new password"
    if new != repeat:
        return "the new passwords do not match"
    if len(new) < MIN_PASSWORD_LEN:
        return f"password too short: at least {MIN_PASSWORD_LEN} characters"
    if new == current:
        return "the new password is the same as the current one"
    return None


def enabled_admins(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the enabled admin accounts."""
    return {r["name"] for r in records if r.get("role") == "admin" and not r.get("disabled")}


def leaves_no_admin(records: Iterable[Mapping[str, Any]], name: str, *, role: str | None = None,
                    disabled: bool | None = None) -> bool:
    """True when changing `name`'s role and/or disabled flag would leave no enabled admin.

    Nobody could then manage accounts or thresholds from the dashboard (only the CLI), so the
    page refuses it — in practice: the last enabled admin demoting or disabling themselves.
    """
    after = []
    for r in records:
        r2 = dict(r)
        if r2["name"] == name:
            if role is not None:
                r2["role"] = role
            if disabled is not None:
                r2["disabled"] = disabled
        after.append(r2)
    return bool(enabled_admins(records)) and not enabled_admins(after)


def fmt_ms(ts_ms: int | None, tz: ZoneInfo) -> str:
    """Clinic-local date and time of `ts_ms`, or an em dash."""
    if not ts_ms:
        return "—"
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def is_locked(record: Mapping[str, Any], now_ms: int) -> bool:
    """True while failed sign-ins make some source wait before the next try."""
    return int(record.get("locked_until_ms") or 0) > now_ms


def lock_text(record: Mapping[str, Any], now_ms: int, tz: ZoneInfo) -> str:
    """"backing off until HH:MM:SS" while failed sign-ins hold some source back, else "—"."""
    if not is_locked(record, now_ms):
        return "—"
    return "backing off until " + fmt_ms(int(record["locked_until_ms"]), tz)[11:]


def account_row(record: Mapping[str, Any], now_ms: int, tz: ZoneInfo) -> dict[str, str]:
    """One account as the users table shows it (all strings)."""
    return {"name": record["name"], "role": record.get("role", "?"),
            "state": "disabled" if record.get("disabled") else "enabled",
            "lock": lock_text(record, now_ms, tz),
            "failures": str(int(record.get("failures") or 0)),
            "updated": fmt_ms(record.get("updated_ms"), tz)}


def login_times(entries: Iterable[Mapping[str, Any]], name: str) -> list[int]:
    """ts_ms of `name`'s dashboard sign-ins among audit entries, in the entries' order.

    A station's acknowledge dialog also writes `login` (via "station:<screen>"); that checks
    a password but is not a sign-in, so it is left out.
    """
    return [int(e["ts"]) for e in entries if e.get("action") == "login" and e.get("user") == name
            and (e.get("details") or {}).get("via", "dashboard") == "dashboard"]


def valid_role(role: str | None) -> bool:
    """True for one of the four roles."""
    return role in ROLES


def token_row(token: Mapping[str, Any], tz: ZoneInfo) -> dict[str, str]:
    """One API token as the tokens table shows it (all strings)."""
    return {"id": token["id"], "name": token["name"], "label": token.get("label") or "—",
            "scopes": ", ".join(token.get("scopes") or []) or "—",
            "created": fmt_ms(token.get("created_ms"), tz), "expires": fmt_ms(token.get("expires_ms"), tz),
            "state": token.get("state", "")}
