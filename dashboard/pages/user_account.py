"""`/account`: a person's own account — role, recent sign-ins, change password.

For personal accounts only (nurse and up): a `station` account is a shared screen, its
password is managed by an admin (`/admin/users` or `vitalwatch user passwd`). The change
goes through monitor.accounts.users.set_password, which applies the CLI's rules and writes the audit
entry (`user_passwd`, by the user) and signs out every other sign-in of the account (this
one stays). A wrong current password counts toward the sign-in limits (source
"self:<name>") like a failed sign-in and is audited as `user_passwd_refused`.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from dash import Input, Output, State, dcc, html

from dashboard.accounts import fmt_ms, login_times, password_change_problem
from dashboard.context import AppContext, PageContext
from monitor.accounts import audit, users
from monitor.accounts.throttle import LoginPolicy
from monitor.model.clock import now_ms
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/account",)
MIN_ROLE = "nurse"
ID_PREFIX = "acct-"
TITLE = "My account"
NAV = True
LOGIN_SCAN = 5000  # newest audit entries searched for sign-ins (bounded: the page stays quick)
ERROR_STYLE = {"color": "#c62828", "fontWeight": "bold"}
OK_STYLE = {"color": "#2e7d32", "fontWeight": "bold"}


def _pw_input(cid: str, label: str) -> html.Label:
    return html.Label([label, dcc.Input(id=cid, type="password", autoComplete="off", debounce=False,
                                        style={"display": "block", "padding": ".3em", "minWidth": "16em"})],
                      style={"display": "block", "margin": ".4em 0"})


def layout(ctx: PageContext, **_params: str) -> Any:
    """Who you are, your recent sign-ins and the change-password form."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    name = ctx.user.name if ctx.user else ""
    rec = users.get_user(ctx.data.client, ctx.keys, name) or {}
    times = login_times(audit.entries(ctx.data.client, ctx.keys, count=LOGIN_SCAN), name)
    signins = ("this sign-in " + fmt_ms(times[0], tz)
               + (f"; previous {fmt_ms(times[1], tz)}" if len(times) > 1 else "")) if times else "not recorded"
    return html.Div([
        html.H2("My account"),
        html.Table(html.Tbody([
            html.Tr([html.Th("User"), html.Td(name, id="acct-name")]),
            html.Tr([html.Th("Role"), html.Td(rec.get("role", ctx.user.role if ctx.user else ""), id="acct-role")]),
            html.Tr([html.Th("Sign-ins"), html.Td(signins, id="acct-logins")]),
            html.Tr([html.Th("Account created"), html.Td(fmt_ms(rec.get("created_ms"), tz))]),
        ]), className="vw-table"),
        html.H3("Change password", className="vw-h"),
        html.Div([
            _pw_input("acct-current", "Current password"),
            _pw_input("acct-new", f"New password (at least {users.MIN_PASSWORD_LEN} characters)"),
            _pw_input("acct-new2", "New password again"),
            html.Button("Change password", id="acct-submit", n_clicks=0, className="vw-ack"),
            html.Div(id="acct-msg", role="status", style={"marginTop": ".5em"}),
        ], id="acct-form"),
    ], className="vw-account")


def change_own_password(actx: AppContext, name: str, current: str | None, new: str | None,
                        repeat: str | None, session_digest: str = "") -> tuple[bool, str]:
    """Check the form, the current password (under the sign-in limits), then store; the
    sign-in `session_digest` stays, every other one of the account ends. (ok, message)"""
    problem = password_change_problem(current, new, repeat)
    if problem:
        return False, f"Refused: {problem}."
    client, keys, dcfg = actx.data.client, actx.keys, actx.cfg.dashboard
    res = users.authenticate(client, keys, name, current or "", source=f"self:{name}",
                             policy=LoginPolicy.from_config(dcfg))
    if not res.ok:
        audit.record(client, keys, name, "user_passwd_refused", reason=res.reason, via="dashboard")
        if res.reason == "throttled":
            until = fmt_ms(now_ms() + res.retry_after_ms, ZoneInfo(actx.cfg.clinic.timezone))[11:]
            return False, f"Refused: too many wrong passwords; try again after {until}."
        return False, "Refused: the current password is wrong."
    try:
        users.set_password(client, keys, name, new or "", actor=name,  # audits user_passwd
                           keep_session=session_digest or None)
    except users.UserError as e:
        return False, f"Refused: {e}."
    return True, ("Password changed. Your other sign-ins were signed out; use the new password "
                  "from your next sign-in.")


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """The change-password button."""

    @app.callback(Output("acct-msg", "children"), Output("acct-msg", "style"),
                  Output("acct-current", "value"), Output("acct-new", "value"), Output("acct-new2", "value"),
                  Input("acct-submit", "n_clicks"),
                  State("acct-current", "value"), State("acct-new", "value"), State("acct-new2", "value"),
                  prevent_initial_call=True)
    def _change(_n: int, current: str | None, new: str | None, repeat: str | None) -> tuple[Any, ...]:
        user = ctx.current_user()
        # the middleware already refused anyone below nurse; checked again where the write is
        if user is None or not user.can(MIN_ROLE):
            return "Refused: a personal (nurse or higher) sign-in is needed.", ERROR_STYLE, "", "", ""
        try:
            ok, text = change_own_password(ctx, user.name, current, new, repeat, user.session_id)
        except REDIS_DOWN:
            ok, text = False, "NOT MONITORING: Redis unreachable — password not changed."
        return text, OK_STYLE if ok else ERROR_STYLE, "", "", ""
