"""`/admin/users` (admin): list accounts, add one, reset a password, change a role,
disable/enable, clear sign-in failures, issue API tokens (scopes, lifetime, label), list
them and revoke one or all of an account's.

Every change goes through monitor/accounts (users.py, tokens.py) — the same functions as
`vitalwatch user` — which validate, store and write the audit entry with the acting admin's
name (so nothing is audited twice here). The page refuses a change that would leave no
enabled admin (the last admin disabling or demoting themselves). Disabling, a role change
and a password reset take effect at once: the user's sign-ins end, and their open live
screens close within seconds; a revoked token stops on its next request and its sockets
close within seconds too.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from dash import ALL, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx

from dashboard.accounts import account_row, leaves_no_admin, token_row, valid_role
from dashboard.context import AppContext, PageContext
from monitor.accounts import tokens, users
from monitor.accounts.throttle import LoginPolicy
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/admin/users",)
MIN_ROLE = "admin"
ID_PREFIX = "users-"
TITLE = "Users"
NAV = True
ERROR_STYLE = {"color": "#c62828", "fontWeight": "bold"}
OK_STYLE = {"color": "#2e7d32", "fontWeight": "bold"}
ACTIONS = ("users-add", "users-reset", "users-setrole", "users-disable", "users-enable", "users-unlock",
           "users-token", "users-revoke")
COLUMNS = (("name", "User"), ("role", "Role"), ("state", "State"), ("lock", "Sign-in backoff"),
           ("failures", "Failed attempts"), ("updated", "Changed"))
TOKEN_COLUMNS = (("id", "Token"), ("name", "User"), ("label", "Label"), ("scopes", "Scopes"),
                 ("created", "Issued"), ("expires", "Expires"), ("state", "State"))


def users_table(records: list[dict[str, Any]], now_ms: int, tz: ZoneInfo) -> html.Table:
    """Accounts with role, enabled/disabled, lockout and failure count (pure)."""
    head = html.Tr([html.Th(t) for _k, t in COLUMNS] + [html.Th("")])
    body = []
    for r in records:
        row = account_row(r, now_ms, tz)
        cells = [html.Td(row[k], **{"data-vw-field": k}) for k, _t in COLUMNS]  # type: ignore[arg-type]
        cells.append(html.Td(html.Button("Select", id={"page": "users", "sel": r["name"]}, n_clicks=0,
                                         className="vw-pause")))
        body.append(html.Tr(cells, **{"data-vw-user": r["name"]}))
    if not body:
        body = [html.Tr(html.Td("No accounts.", colSpan=len(COLUMNS) + 1))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table")


def tokens_table(items: list[dict[str, Any]], tz: ZoneInfo) -> html.Table:
    """Every API token (never the token itself: its id) with a Revoke button each (pure)."""
    head = html.Tr([html.Th(t) for _k, t in TOKEN_COLUMNS] + [html.Th("")])
    body = []
    for t in items:
        row = token_row(t, tz)
        cells = [html.Td(row[k], **{"data-vw-field": k}) for k, _t in TOKEN_COLUMNS]  # type: ignore[arg-type]
        cells.append(html.Td(html.Button("Revoke", id={"page": "users", "revoke": t["id"]}, n_clicks=0,
                                         className="vw-danger")))
        body.append(html.Tr(cells, **{"data-vw-token": t["id"]}))
    if not body:
        body = [html.Tr(html.Td("No API tokens.", colSpan=len(TOKEN_COLUMNS) + 1))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table")


def _roles(cid: str, value: str) -> dcc.RadioItems:
    return dcc.RadioItems(id=cid, options=list(users.ROLES), value=value, inline=True,
                          inputStyle={"marginLeft": ".8em", "marginRight": ".2em"})


def _inp(cid: str, placeholder: str, kind: str = "text") -> dcc.Input:
    return dcc.Input(id=cid, type=kind, placeholder=placeholder, autoComplete="off",  # type: ignore[arg-type]
                     style={"padding": ".3em", "minWidth": "12em"})


def _btn(cid: str, label: str, cls: str = "vw-ack") -> html.Button:
    return html.Button(label, id=cid, n_clicks=0, className=cls)


def layout(ctx: PageContext, **_params: str) -> Any:
    """The accounts table and the two forms (add; act on one account)."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    records = users.list_users(ctx.data.client, ctx.keys, LoginPolicy.from_config(ctx.cfg.dashboard), ctx.now_ms)
    return html.Div([
        html.H2("Users"),
        html.Div(users_table(records, ctx.now_ms, tz), id="users-table"),
        html.H3("Add a user", className="vw-h"),
        html.Div([_inp("users-add-name", "user name"), _roles("users-add-role", "nurse"),
                  _inp("users-add-pw", f"initial password ({users.MIN_PASSWORD_LEN}+ characters)", "password"),
                  _btn("users-add", "Add user")], className="vw-controls"),
        html.H3("Change an account", className="vw-h"),
        html.Div([_inp("users-target", "user name (or Select in the table)")], className="vw-controls"),
        html.Div([_inp("users-pw", "new password", "password"), _btn("users-reset", "Reset password")],
                 className="vw-controls"),
        html.Div([_roles("users-role", "nurse"), _btn("users-setrole", "Change role")], className="vw-controls"),
        html.Div([_btn("users-disable", "Disable", "vw-danger"), _btn("users-enable", "Enable"),
                  _btn("users-unlock", "Clear sign-in failures"),
                  _btn("users-revoke", "Revoke all API tokens", "vw-danger")], className="vw-controls"),
        html.Div([dcc.Checklist(id="users-token-scopes", options=[{"label": f" {k}", "value": k}
                                                                  for k in tokens.SCOPES],
                                value=list(tokens.DEFAULT_SCOPES), inline=True,
                                inputStyle={"marginLeft": ".8em", "marginRight": ".2em"}),
                  dcc.Input(id="users-token-days", type="number", min=1, max=tokens.MAX_DAYS,
                            value=tokens.DEFAULT_DAYS, style={"width": "5em"}),
                  html.Span("days", className="vw-muted"),
                  _inp("users-token-label", "label (e.g. pager 3)"),
                  _btn("users-token", "Issue API token")], className="vw-controls"),
        html.Div(id="users-msg", role="status"),
        html.Div(id="users-tokenbox"),
        html.H3("API tokens", className="vw-h"),
        html.Div(tokens_table(tokens.list_tokens(ctx.data.client, ctx.keys, now_ms=ctx.now_ms), tz),
                 id="users-tokens"),
    ], className="vw-users")


def apply_action(actx: AppContext, actor: str, action: str, v: dict[str, Any]) -> tuple[bool, str, str]:
    """Run one button's change through monitor.accounts.users; (ok, message, token shown once or "")."""
    client, keys = actx.data.client, actx.keys
    if action == "users-add":
        rec = users.create_user(client, keys, (v["add_name"] or "").strip(), v["add_role"] or "",
                                v["add_pw"] or "", actor=actor)
        return True, f"Added {rec['name']} ({rec['role']}).", ""
    name = (v["target"] or "").strip()
    if not name:
        return False, "Refused: enter the user name to change (or press Select in the table).", ""
    if users.get_user(client, keys, name) is None:
        return False, f"Refused: no user {name!r}.", ""
    if action == "users-reset":
        users.set_password(client, keys, name, v["pw"] or "", actor=actor)
        return True, f"Password reset for {name} (any lockout cleared).", ""
    if action in ("users-setrole", "users-disable"):
        role = v["role"] if action == "users-setrole" else None
        if action == "users-setrole" and not valid_role(role):
            return False, f"Refused: unknown role {role!r}.", ""
        if leaves_no_admin(users.list_users(client, keys), name, role=role,
                           disabled=True if action == "users-disable" else None):
            return False, f"Refused: {name} is the last enabled admin; add or enable another admin first.", ""
        if action == "users-setrole":
            users.set_role(client, keys, name, role or "", actor=actor)
            return True, f"{name} is now {role}.", ""
        users.set_disabled(client, keys, name, True, actor=actor)
        return True, f"{name} disabled: their sign-ins and tokens stop working now.", ""
    if action == "users-enable":
        users.set_disabled(client, keys, name, False, actor=actor)
        return True, f"{name} enabled.", ""
    if action == "users-unlock":
        was = users.unlock(client, keys, name, actor=actor)
        return True, f"{name}: sign-in failures cleared." if was else f"{name} had no sign-in failures.", ""
    if action == "users-token":
        try:
            days = float(v.get("token_days") or tokens.DEFAULT_DAYS)
        except (TypeError, ValueError):
            return False, "Refused: the token lifetime must be a number of days.", ""
        token = tokens.issue_token(client, keys, name, actor=actor, scopes=list(v.get("token_scopes") or []),
                                   days=days, label=(v.get("token_label") or "").strip())
        return True, f"API token issued for {name}. It is shown once, below: copy it now.", token
    if action == "users-revoke":
        n = tokens.revoke_tokens(client, keys, name, actor=actor)
        return True, f"Revoked {n} API token(s) of {name}.", ""
    return False, f"Refused: unknown action {action!r}.", ""


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """All account changes (one callback, by button) and the table's Select buttons."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)

    policy = LoginPolicy.from_config(ctx.cfg.dashboard)

    def tables() -> tuple[Any, Any]:
        now = ctx.clock_ms()
        return (users_table(users.list_users(ctx.data.client, ctx.keys, policy, now), now, tz),
                tokens_table(tokens.list_tokens(ctx.data.client, ctx.keys, now_ms=now), tz))

    @app.callback(Output("users-msg", "children"), Output("users-msg", "style"),
                  Output("users-tokenbox", "children"), Output("users-table", "children"),
                  Output("users-tokens", "children"),
                  Output("users-add-pw", "value"), Output("users-pw", "value"),
                  *[Input(a, "n_clicks") for a in ACTIONS],
                  State("users-add-name", "value"), State("users-add-role", "value"),
                  State("users-add-pw", "value"), State("users-target", "value"),
                  State("users-pw", "value"), State("users-role", "value"),
                  State("users-token-scopes", "value"), State("users-token-days", "value"),
                  State("users-token-label", "value"),
                  prevent_initial_call=True)
    def _act(*args: Any) -> tuple[Any, ...]:
        add_name, add_role, add_pw, target, pw, role, t_scopes, t_days, t_label = args[len(ACTIONS):]
        user = ctx.current_user()
        # the middleware already refused non-admins (ids "users-…"); checked again at the write
        if user is None or not user.can(MIN_ROLE):
            return "Refused: managing users needs the admin role.", ERROR_STYLE, "", no_update, no_update, "", ""
        values = {"add_name": add_name, "add_role": add_role, "add_pw": add_pw, "target": target,
                  "pw": pw, "role": role, "token_scopes": t_scopes, "token_days": t_days, "token_label": t_label}
        token = ""
        try:
            ok, text, token = apply_action(ctx, user.name, str(dash_ctx.triggered_id), values)
        except users.UserError as e:
            ok, text = False, f"Refused: {e}."
        except REDIS_DOWN:
            return ("NOT MONITORING: Redis unreachable — nothing changed.", ERROR_STYLE, "", no_update, no_update,
                    "", "")
        box = html.Div([html.Span("API token (shown once): "), html.Code(token, id="users-tokenval")],
                       className="vw-warning") if token else ""
        return (text, OK_STYLE if ok else ERROR_STYLE, box, *tables(), "", "")

    @app.callback(Output("users-msg", "children", allow_duplicate=True),
                  Output("users-msg", "style", allow_duplicate=True),
                  Output("users-tokens", "children", allow_duplicate=True),
                  Input({"page": "users", "revoke": ALL}, "n_clicks"), prevent_initial_call=True)
    def _revoke_one(clicks: list[int | None]) -> tuple[Any, ...]:
        trig = dash_ctx.triggered_id
        user = ctx.current_user()
        # re-rendering the table adds fresh buttons (n_clicks 0), which also fires this
        if not isinstance(trig, dict) or not dash_ctx.triggered[0].get("value"):
            return no_update, no_update, no_update
        if user is None or not user.can(MIN_ROLE):
            return "Refused: managing tokens needs the admin role.", ERROR_STYLE, no_update
        try:
            done = tokens.revoke_token(ctx.data.client, ctx.keys, str(trig["revoke"]), actor=user.name)
        except users.UserError as e:
            return f"Refused: {e}.", ERROR_STYLE, no_update
        except REDIS_DOWN:
            return "NOT MONITORING: Redis unreachable — nothing changed.", ERROR_STYLE, no_update
        text = f"Token {trig['revoke']} revoked." if done else f"No token {trig['revoke']} (already revoked?)."
        return text, OK_STYLE if done else ERROR_STYLE, tables()[1]

    @app.callback(Output("users-target", "value"), Input({"page": "users", "sel": ALL}, "n_clicks"),
                  prevent_initial_call=True)
    def _select(clicks: list[int | None]) -> Any:
        trig = dash_ctx.triggered_id
        # re-rendering the table adds fresh buttons (n_clicks 0), which also fires this
        if not isinstance(trig, dict) or not any(clicks or []):
            return no_update
        hit = [c for c, item in zip(clicks, dash_ctx.inputs_list[0], strict=False)
               if item["id"] == trig]
        return trig["sel"] if hit and hit[0] else no_update
