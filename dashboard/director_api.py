"""JSON/CSV/PDF API for the director's reports and the REMS forms (installed by dashboard/app.py).

| route | role | |
|---|---|---|
| `GET /api/v1/report?from=YYYY-MM-DD&to=YYYY-MM-DD[&room=R][&format=json\\|csv\\|pdf]` | director | the quality report |
| `GET /api/v1/research.csv?from=…&to=…[&room=R][&patient=ID][&pseudonymize=1]` | director | one row per reading |
| `GET /api/v1/patients/<patient>/course` | director | every session of a patient (summaries) |
| `GET /api/v1/rems/due` | nurse | forms not yet submitted, overdue first |
| `GET /api/v1/sessions/<id>/rems[?format=pdf]` | nurse | one session's form: fields, sources, completeness |
| `POST /api/v1/sessions/<id>/rems` | nurse | body `{"<field>": "<value>", …}`: staff entries |
| `POST /api/v1/sessions/<id>/rems/submitted` | nurse | body `{"method": "portal"\\|"fax", "reference": "…"}` |

The auth middleware has authenticated the caller (cookie or bearer token); these handlers
check the role. Every report, research export, form save, submission and PDF is audited.
Handlers are plain `def`s: FastAPI runs them in its thread pool, off the push loop.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from dashboard.api import _require
from dashboard.data import Data
from monitor.accounts import audit
from monitor.model import clock
from monitor.model.config import Config
from monitor.sessions import (
    archive,
    quality,
    rems_form,
    rems_pdf,
    rems_store,
    report,
    report_pdf,
    research,
    summaries,
)
from monitor.store.redis_conn import REDIS_DOWN


def form_json(state: rems_form.FormState) -> dict[str, Any]:
    """A FormState as JSON."""
    return {
        "session": state.session, "patient": state.patient, "required": state.required, "status": state.status,
        "status_text": state.status_text, "missing": state.missing, "warnings": state.warnings,
        "due_ms": state.due_ms, "overdue": state.overdue, "submitted": state.submitted,
        "fields": [{"key": fv.field.key, "section": fv.field.section, "label": fv.field.label,
                    "source": fv.field.source, "editable": fv.field.editable, "required": fv.field.required,
                    "value": fv.value, "value_source": fv.source, "missing": fv.missing} for fv in state.fields],
    }


def _summary_json(s: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in s.items() if k not in ("form", "rems")}
    form = s.get("form")
    out["rems_status"] = form.status_text if form is not None else None
    return out


def install_director_routes(server: FastAPI, cfg: Config, data: Data) -> None:
    """Add the report, patient-course, research and REMS routes."""

    def arch() -> archive.Archive:
        return archive.open_archive(cfg.archive.url)

    def record(user: str, action: str, **details: Any) -> None:
        try:
            audit.record(data.client, data.keys, user, action, **details)
        except REDIS_DOWN:
            archive.record_audit_local(arch(), cfg.clinic.id, user, action, **details)

    def now() -> int:
        return clock.now_ms()

    def span(date_from: str, date_to: str) -> tuple[int, int]:
        try:
            return report.day_range(date_from, date_to, cfg.clinic.timezone)
        except report.BadRange as e:
            raise HTTPException(400, str(e)) from None

    def room_ok(room: str | None) -> str | None:
        if room and room not in {r.id for r in cfg.rooms}:
            raise HTTPException(400, f"unknown room {room!r}")
        return room or None

    @server.get("/api/v1/report")
    def get_report(request: Request, room: str | None = None, format: str = "json") -> Response:  # noqa: A002
        user = _require("director")
        q = request.query_params
        if "from" not in q or "to" not in q:
            raise HTTPException(400, "from and to (YYYY-MM-DD) are required")
        if format not in ("json", "csv", "pdf"):
            raise HTTPException(400, "format must be json, csv or pdf")
        since, until = span(q["from"], q["to"])
        try:
            rep = report.build(arch(), cfg, since, until, room_ok(room), now())
        except sa.exc.SQLAlchemyError as e:
            raise HTTPException(503, f"archive unavailable: {e.__class__.__name__}") from None
        record(user.name, "report.generate", format=format, date_from=q["from"], date_to=q["to"], room=room or "",
               sessions=len(rep.rows), via="api")
        if format == "csv":
            return Response(rep.csv(), media_type="text/csv")
        if format == "pdf":
            return Response(report_pdf.pdf_bytes(rep, generated_by=user.name), media_type="application/pdf")
        totals = json.loads(json.dumps(rep.totals, default=list))
        return JSONResponse({"scope": rep.scope_text(), "since_ms": rep.since_ms, "until_ms": rep.until_ms,
                             "room": rep.room, "totals": totals, "sessions": [_summary_json(s) for s in rep.rows]})

    @server.get("/api/v1/research.csv")
    def get_research(request: Request, room: str | None = None, patient: str | None = None,
                     pseudonymize: int = 0) -> Response:
        user = _require("director")
        q = request.query_params
        if "from" not in q or "to" not in q:
            raise HTTPException(400, "from and to (YYYY-MM-DD) are required")
        since, until = span(q["from"], q["to"])
        a = arch()
        selected = research.select_sessions(a, cfg.clinic.id, since, until, room_ok(room), patient or None)
        key = research.load_key(cfg) if pseudonymize else None
        text, n = research.csv_text(a, selected, cfg.clinic.timezone, key)
        record(user.name, "research.export", date_from=q["from"], date_to=q["to"], room=room or "",
               patient=patient or "", pseudonymized=bool(key), sessions=len(selected), readings=n, via="api")
        return Response(text, media_type="text/csv")

    @server.get("/api/v1/patients/{patient}/course")
    def get_course(patient: str) -> dict[str, Any]:
        user = _require("director")
        rows = summaries.for_patient(arch(), cfg.clinic.id, patient)
        if not rows:
            raise HTTPException(404, f"no archived sessions for patient {patient!r}")
        record(user.name, "patient.view", patient=patient, sessions=len(rows), via="api")
        return {"patient": patient, "sessions": [_summary_json(s) for s in quality.course_rows(rows)]}

    @server.get("/api/v1/rems/due")
    def get_due() -> dict[str, Any]:
        _require("nurse")
        states, total = rems_store.forms_due(arch(), cfg, now())
        return {"total": total, "overdue": sum(1 for s in states if s.overdue),
                "forms": [{k: v for k, v in form_json(s).items() if k != "fields"} for s in states]}

    @server.get("/api/v1/sessions/{sid}/rems")
    def get_form(sid: str, format: str = "json") -> Response:  # noqa: A002
        user = _require("nurse")
        try:
            if format == "pdf":
                data_ = rems_pdf.export_rems(archive.load_session(arch(), sid), cfg, user=user.name)
                record(user.name, "session.export", session=sid, format="rems", via="api")
                return Response(data_, media_type="application/pdf")
            state = rems_store.form_state(arch(), cfg, sid, now())
        except archive.NotArchived:
            raise HTTPException(404, f"no archived session {sid!r}") from None
        except rems_pdf.NotRemsExport as e:
            raise HTTPException(409, str(e)) from None
        if not state.required:
            raise HTTPException(409, f"session {sid} is not an esketamine session: no REMS form")
        return JSONResponse(form_json(state))

    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise HTTPException(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "body must be a JSON object")
        return body

    @server.post("/api/v1/sessions/{sid}/rems")
    async def post_form(sid: str, request: Request) -> Response:
        user = _require("nurse")
        body = await _body(request)
        def work() -> dict[str, Any]:
            try:
                stored = rems_store.save_entries(arch(), sid, user.name, body, now())
            except rems_form.InvalidEntry as e:
                raise HTTPException(400, str(e)) from None
            except archive.NotArchived:
                raise HTTPException(404, f"no archived session {sid!r}") from None
            except rems_store.NotRemsSession as e:
                raise HTTPException(409, str(e)) from None
            record(user.name, "rems.update", session=sid, fields=sorted(stored), via="api")
            return form_json(rems_store.form_state(arch(), cfg, sid, now()))

        return JSONResponse(await anyio.to_thread.run_sync(work))

    @server.post("/api/v1/sessions/{sid}/rems/submitted")
    async def post_submitted(sid: str, request: Request) -> Response:
        user = _require("nurse")
        body = await _body(request)
        def work() -> dict[str, Any]:
            try:
                rems_store.mark_submitted(arch(), cfg, sid, user.name, now(), str(body.get("method") or ""),
                                          str(body.get("reference") or ""))
            except rems_form.InvalidEntry as e:
                raise HTTPException(400, str(e)) from None
            except archive.NotArchived:
                raise HTTPException(404, f"no archived session {sid!r}") from None
            except (rems_store.NotRemsSession, rems_store.FormIncomplete) as e:
                raise HTTPException(409, str(e)) from None
            record(user.name, "rems.submitted", session=sid, method=body.get("method"), via="api")
            return form_json(rems_store.form_state(arch(), cfg, sid, now()))

        return JSONResponse(await anyio.to_thread.run_sync(work))
