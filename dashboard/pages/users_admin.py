"""`/admin/users` (admin): list accounts, add one, reset a password, change a role,
disable/enable, unlock after failed sign-ins, issue or revoke API tokens.

Every change goes through monitor/accounts/users.py — the same functions as `vitalwatch user` — which
validates, stores and writes the audit entry with the acting admin's name (so nothing is
audited twice here). The page refuses a change that would leave no enabled admin (the last
admin disabling or demoting themselves). Disabling takes effect at once: the user's
sign-ins and tokens stop working on their next request.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from dash import ALL, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx

from dashboard.accounts import account_row, leaves_no_admin, valid_role
from dashboard.context import AppContext, PageContext
from monitor.accounts import users
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
COLUMNS = (("name", "User"), ("role", "Role"), ("state", "State"), ("lock", "Lockout"),
           ("failures", "Failed attempts"), ("updated", "Changed"))


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
    records = users.list_users(ctx.data.client, ctx.keys)
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
                  _btn("users-unlock", "Unlock"), _btn("users-token", "Issue API token"),
                  _btn("users-revoke", "Revoke API tokens", "vw-danger")], className="vw-controls"),
        html.Div(id="users-msg", role="status"),
        html.Div(id="users-tokenbox"),
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
        return True, f"{name} unlocked." if was else f"{name} was not locked (failure count cleared).", ""
    if action == "users-token":
        token = users.issue_token(client, keys, name, actor=actor)
        return True, f"API token issued for {name}. It is shown once, below: copy it now.", token
    if action == "users-revoke":
        n = users.revoke_tokens(client, keys, name, actor=actor)
        return True, f"Revoked {n} API token(s) of {name}.", ""
    return False, f"Refused: unknown action {action!r}.", ""


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """All account changes (one callback, by button) and the table's Select buttons."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)

    @app.callback(Output("users-msg", "children"), Output("users-msg", "style"),
                  Output("users-tokenbox", "children"), Output("users-table", "children"),
                  Output("users-add-pw", "value"), Output("users-pw", "value"),
                  *[Input(a, "n_clicks") for a in ACTIONS],
                  State("users-add-name", "value"), State("users-add-role", "value"),
                  State("users-add-pw", "value"), State("users-target", "value"),
                  State("users-pw", "value"), State("users-role", "value"),
                  prevent_initial_call=True)
    def _act(*args: Any) -> tuple[Any, ...]:
        add_name, add_role, add_pw, target, pw, role = args[len(ACTIONS):]
        user = ctx.current_user()
        # the middleware already refused non-admins (ids "users-…"); checked again at the write
        if user is None or not user.can(MIN_ROLE):
            return "Refused: managing users needs the admin role.", ERROR_STYLE, "", no_update, "", ""
        values = {"add_name": add_name, "add_role": add_role, "add_pw": add_pw, "target": target,
                  "pw": pw, "role": role}
        token = ""
        try:
            ok, text, token = apply_action(ctx, user.name, str(dash_ctx.triggered_id), values)
        except users.UserError as e:
            ok, text = False, f"Refused: {e}."
        except REDIS_DOWN:
            return ("NOT MONITORING: Redis unreachable — nothing changed.", ERROR_STYLE, "", no_update, "", "")
        box = html.Div([html.Span("API token (shown once): "), html.Code(token, id="users-tokenval")],
                       className="vw-warning") if token else ""
        table = users_table(users.list_users(ctx.data.client, ctx.keys), ctx.clock_ms(), tz)
        return text, OK_STYLE if ok else ERROR_STYLE, box, table, "", ""

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
