"""Pure rules of the account pages (dashboard/accounts.py), users.unlock, and the pages'
registration with the middleware's id-prefix → role mapping."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import redis

from dashboard.accounts import (
    account_row,
    enabled_admins,
    leaves_no_admin,
    lock_text,
    login_times,
    password_change_problem,
)
from dashboard.app import Router, discover_pages
from monitor.accounts import audit, users
from monitor.accounts.throttle import LoginPolicy
from monitor.model.keys import Keys

UTC = ZoneInfo("UTC")


def test_password_change_problem() -> None:
    assert password_change_problem("", "newpass-1", "newpass-1") == "enter your current password"
    assert password_change_problem("old-pass-1", "", "") == "enter a new password"
    assert password_change_problem("old-pass-1", "newpass-1", "newpass-2") == "the new passwords do not match"
    assert password_change_problem("old-pass-1", "short", "short") == "password too short: at least 8 characters"
    assert "same as the current" in (password_change_problem("old-pass-1", "old-pass-1", "old-pass-1") or "")
    assert password_change_problem("old-pass-1", "newpass-1", "newpass-1") is None


def test_last_enabled_admin_cannot_be_demoted_or_disabled() -> None:
    recs = [{"name": "ada", "role": "admin", "disabled": False},
            {"name": "bob", "role": "admin", "disabled": True},
            {"name": "nina", "role": "nurse", "disabled": False}]
    assert enabled_admins(recs) == {"ada"}
    assert leaves_no_admin(recs, "ada", disabled=True)
    assert leaves_no_admin(recs, "ada", role="director")
    assert not leaves_no_admin(recs, "ada", role="admin")
    assert not leaves_no_admin(recs, "nina", disabled=True)
    assert not leaves_no_admin(recs, "bob", role="nurse")
    recs[1]["disabled"] = False  # a second enabled admin: either may now step down
    assert not leaves_no_admin(recs, "ada", disabled=True)
    assert not leaves_no_admin(recs, "bob", role="nurse")
    # a clinic with no admin at all (CLI-managed) is not blocked by this rule
    assert not leaves_no_admin([{"name": "nina", "role": "nurse"}], "nina", disabled=True)


def test_account_row_and_lock_text() -> None:
    rec = {"name": "nina", "role": "nurse", "disabled": True, "failures": 3, "locked_until_ms": 90_000,
           "updated_ms": 0}
    assert lock_text(rec, 10_000, UTC) == "backing off until 00:01:30"
    assert lock_text(rec, 90_000, UTC) == "—"  # the lock ends at locked_until_ms
    row = account_row(rec, 10_000, UTC)
    assert row == {"name": "nina", "role": "nurse", "state": "disabled", "lock": "backing off until 00:01:30",
                   "failures": "3", "updated": "—"}


def test_login_times_only_dashboard_sign_ins_of_that_user() -> None:
    entries = [{"ts": 30, "user": "nina", "action": "login", "details": {"via": "dashboard"}},
               {"ts": 25, "user": "nina", "action": "login", "details": {"via": "station:sta"}},
               {"ts": 20, "user": "dora", "action": "login", "details": {"via": "dashboard"}},
               {"ts": 15, "user": "nina", "action": "login_failed", "details": {"via": "dashboard"}},
               {"ts": 10, "user": "nina", "action": "login", "details": {"via": "dashboard"}}]
    assert login_times(entries, "nina") == [30, 10]


def test_unlock_clears_backoff_and_is_audited(rclient: redis.Redis, keys: Keys) -> None:
    users.create_user(rclient, keys, "nina", "nurse", "nurse-pass-1", actor="ada")
    policy = LoginPolicy(pair_failures=3)
    for _ in range(3):
        users.authenticate(rclient, keys, "nina", "wrong-pass", policy=policy)
    assert users.authenticate(rclient, keys, "nina", "nurse-pass-1", policy=policy).reason == "throttled"
    assert users.unlock(rclient, keys, "nina", actor="ada") is True
    assert users.authenticate(rclient, keys, "nina", "nurse-pass-1", policy=policy).ok
    assert users.unlock(rclient, keys, "nina", actor="ada") is False
    entry = next(e for e in audit.entries(rclient, keys) if e["action"] == "user_unlock")
    assert entry["user"] == "ada" and entry["details"] == {"name": "nina", "was_locked": False}


def test_pages_registered_with_unique_prefixes_and_roles() -> None:
    pages = {m.__name__.rsplit(".", 1)[1]: m for m in discover_pages()}
    acct, admin = pages["user_account"], pages["users_admin"]
    prefixes = [m.ID_PREFIX for m in pages.values()]
    assert len(set(prefixes)) == len(prefixes)
    assert not any(p != q and q.startswith(p) for p in prefixes for q in prefixes)
    router = Router(list(pages.values()))
    assert router.page_role("/account") == "nurse" and router.page_role("/admin/users") == "admin"
    assert router.callback_role(["acct-msg"]) == "nurse"
    assert router.callback_role(["users-msg", "users-table"]) == "admin"
    assert router.callback_role(['{"page": "users", "sel": "nina"}']) == "admin"
    assert acct.NAV and admin.NAV
