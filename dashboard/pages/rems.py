"""REMS Patient Monitoring Forms: `/rems` (forms not yet submitted) and `/rems/<session>`.

For nurses and directors (role nurse and up). The form of one archived esketamine session:
what VitalWatch prefilled from the session (with its source), the fields staff complete
(lot number, concomitant medications, the HCP conducting monitoring, vital signs
acceptable, serious adverse events, attestation …), the completeness state, the due date,
"Save" (append-only entries in the archive; on a signed session they are addenda), the PDF
and "Mark submitted". Every save, submission mark, view and PDF is written to the audit log.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dash import ALL, Input, Output, State, dcc, html, no_update

from dashboard import rems_view
from dashboard.context import AppContext, PageContext
from monitor.accounts import audit
from monitor.sessions import archive, rems_form, rems_pdf, rems_store
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/rems", "/rems/<session>")
MIN_ROLE = "nurse"
ID_PREFIX = "rems-"
TITLE = "REMS forms"
NAV = True


def _arch(app: AppContext) -> archive.Archive:
    return archive.open_archive(app.cfg.archive.url)


def _audit(app: AppContext, user: str, action: str, **details: Any) -> None:
    try:
        audit.record(app.data.client, app.keys, user, action, **details)
    except REDIS_DOWN:  # never lose an audit entry: the archive's own audit table
        archive.record_audit_local(_arch(app), app.cfg.clinic.id, user, action, **details)


def _setting(app: AppContext) -> dict[str, str]:
    return rems_form.setting_defaults(app.cfg.rems.setting, app.cfg.clinic.name)


def form_page(state: rems_form.FormState, setting: dict[str, str], tz: ZoneInfo, can_review: bool) -> html.Div:
    """The whole `/rems/<session>` page (pure)."""
    links: list[Any] = [dcc.Link("All forms not yet submitted", href="/rems")]
    if can_review:
        links += [" · ", dcc.Link("Session review", href=f"/review/{state.session}")]
    return html.Div([
        dcc.Store(id="rems-sid", data=state.session),
        dcc.Store(id="rems-initial", data=rems_view.initial_values(state, setting)),
        html.H2(["REMS Patient Monitoring Form — session ", html.Span(state.session, id="rems-session-id")]),
        html.Div(links, className="vw-row"),
        html.P(["Patient id ", html.B(state.patient, id="rems-patient-id"),
                ". VitalWatch fills what the session recorded; complete the rest, save, then submit the form "
                "at www.SPRAVATOrems.com (or by the program's fax form) within "
                f"{state.due_days} days and mark it submitted here."]),
        html.Div(rems_view.status_text(state, tz), id="rems-status", className=rems_view.status_class(state)),
        html.Ul([html.Li(w) for w in state.warnings], id="rems-warnings"),
        html.Div([
            html.Button("Save", id="rems-save", n_clicks=0, className="vw-btn"),
            html.Button("Download REMS form (PDF)", id="rems-pdf", n_clicks=0, className="vw-btn"),
            dcc.Download(id="rems-download"),
            html.Span(id="rems-message"),
        ], className="vw-row"),
        html.Div(rems_view.form_body(state, setting), id="rems-form-body"),
        html.H3("Submission"),
        html.Div([
            dcc.Dropdown(id="rems-submit-method", options=[{"label": "online at www.SPRAVATOrems.com",
                                                            "value": "portal"},
                                                           {"label": "by fax", "value": "fax"}],
                         value="portal", clearable=False, style={"minWidth": "18em"}),
            dcc.Input(id="rems-submit-ref", type="text", placeholder="confirmation / reference (optional)"),
            html.Button("Mark submitted", id="rems-submit", n_clicks=0, className="vw-btn",
                        disabled=bool(state.submitted)),
            html.Span(id="rems-submit-message"),
        ], className="vw-row"),
    ], className="rems-form")


def layout(ctx: PageContext, session: str | None = None) -> Any:
    """The list of forms not yet submitted, or one session's form."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    try:
        arch = _arch(ctx.app)
        if session is None:
            states, total = rems_store.forms_due(arch, ctx.cfg, ctx.now_ms)
            return html.Div([html.H2("REMS Patient Monitoring Forms not yet submitted"),
                             html.P(f"The program asks for each esketamine session's form within "
                                    f"{ctx.cfg.rems.due_days} days of the treatment.", className="vw-muted"),
                             rems_view.due_table(states, total, tz, "rems-due")])
        state = rems_store.form_state(arch, ctx.cfg, session, ctx.now_ms)
    except archive.NotArchived:
        return html.Div([f"Session {session!r} is not in the archive (still open, or unknown). Its REMS form "
                         "can be completed once the session has ended. ", dcc.Link("All forms", href="/rems")],
                        className="vw-notfound")
    except sa.exc.SQLAlchemyError as e:
        return html.Div(f"ARCHIVE UNAVAILABLE ({ctx.cfg.archive.url}): {e.__class__.__name__}", className="vw-notfound")
    if not state.required:
        return html.Div([f"Session {session} is not an esketamine (SPRAVATO) session: the REMS Patient Monitoring "
                         "Form does not apply. ", dcc.Link("All forms", href="/rems")], className="vw-notfound")
    user = ctx.user.name if ctx.user else "unknown"
    _audit(ctx.app, user, "rems.view", session=session)
    return form_page(state, _setting(ctx.app), tz, bool(ctx.user and ctx.user.can("director")))


def changed_entries(ids: list[dict[str, Any]], values: list[Any], initial: dict[str, Any]) -> dict[str, str]:
    """The controls whose value differs from what was drawn, as staff entries (pure)."""
    out: dict[str, str] = {}
    for cid, v in zip(ids, values, strict=True):
        key = cid["field"]
        if v == initial.get(key):
            continue
        if isinstance(v, list):  # the attestation checklist
            v = "yes" if "yes" in v else ""
        out[key] = "" if v is None else str(v)
    return out


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """Save, PDF and mark-submitted."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    field_ids = {"page": rems_view.PAGE, "field": ALL}

    def redraw(sid: str) -> tuple[Any, Any, Any, Any, Any]:
        state = rems_store.form_state(_arch(ctx), ctx.cfg, sid, ctx.clock_ms())
        setting = _setting(ctx)
        return (rems_view.form_body(state, setting), rems_view.status_text(state, tz),
                rems_view.status_class(state), rems_view.initial_values(state, setting),
                [html.Li(w) for w in state.warnings])

    @app.callback(Output("rems-form-body", "children"), Output("rems-status", "children"),
                  Output("rems-status", "className"), Output("rems-initial", "data"),
                  Output("rems-warnings", "children"), Output("rems-message", "children"),
                  Input("rems-save", "n_clicks"), State(field_ids, "value"), State(field_ids, "id"),
                  State("rems-initial", "data"), State("rems-sid", "data"), prevent_initial_call=True)
    def _save(n: int, values: list[Any], ids: list[dict[str, Any]], initial: dict[str, Any], sid: str) -> tuple:
        user = ctx.current_user()
        if not n or user is None:
            return (no_update,) * 6
        entries = changed_entries(ids, values, initial or {})
        if not entries:
            return (*(no_update,) * 5, "Nothing changed.")
        try:
            stored = rems_store.save_entries(_arch(ctx), sid, user.name, entries, ctx.clock_ms())
        except (rems_form.InvalidEntry, rems_store.NotRemsSession, archive.NotArchived) as e:
            return (*(no_update,) * 5, f"Not saved: {e}")
        _audit(ctx, user.name, "rems.update", session=sid, fields=sorted(stored))
        return (*redraw(sid), f"Saved {len(stored)} field(s).")

    @app.callback(Output("rems-status", "children", allow_duplicate=True),
                  Output("rems-status", "className", allow_duplicate=True),
                  Output("rems-submit", "disabled"), Output("rems-submit-message", "children"),
                  Input("rems-submit", "n_clicks"), State("rems-submit-method", "value"),
                  State("rems-submit-ref", "value"), State("rems-sid", "data"), prevent_initial_call=True)
    def _submitted(n: int, method: str, ref: str | None, sid: str) -> tuple:
        user = ctx.current_user()
        if not n or user is None:
            return (no_update,) * 4
        try:
            rems_store.mark_submitted(_arch(ctx), ctx.cfg, sid, user.name, ctx.clock_ms(), method, ref or "")
        except (rems_store.FormIncomplete, rems_form.InvalidEntry, rems_store.NotRemsSession) as e:
            return no_update, no_update, False, f"Not marked: {e}"
        _audit(ctx, user.name, "rems.submitted", session=sid, method=method)
        _body, status, cls, _init, _warn = redraw(sid)
        return status, cls, True, "Marked submitted."

    @app.callback(Output("rems-download", "data"), Output("rems-message", "children", allow_duplicate=True),
                  Input("rems-pdf", "n_clicks"), State("rems-sid", "data"), prevent_initial_call=True)
    def _pdf(n: int, sid: str) -> tuple:
        user = ctx.current_user()
        if not n or user is None:
            return no_update, no_update
        rec = archive.load_session(_arch(ctx), sid)
        data = rems_pdf.export_rems(rec, ctx.cfg, user=user.name, now_ms=ctx.clock_ms())
        _audit(ctx, user.name, "session.export", session=sid, format="rems", via="dashboard")
        return dcc.send_bytes(data, f"{sid}-rems.pdf", type="application/pdf"), "REMS form PDF downloaded."
