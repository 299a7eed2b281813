"""The REMS Patient Monitoring Form as a PDF (fpdf2): `vitalwatch export --format rems` and the
REMS page's download button.

Field by field in the form's order (monitor/sessions/rems_form.py): every value VitalWatch or
staff provided, with where it came from; every field still open as a blank line
(`BLANK`) for the clinic to fill. The page says plainly that this is VitalWatch's
transcription of the form, to be submitted through the program's portal or fax form — the
program's own form is the one that counts, and VitalWatch submits nothing itself.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from monitor.model import clock
from monitor.model.config import Config
from monitor.sessions import quality, rems_form
from monitor.sessions.pdf_fonts import pdf_fonts, text_filter
from monitor.sessions.review import SessionRecord

BLANK = "_______________________"
PROGRAM = "www.SPRAVATOrems.com"


class NotRemsExport(ValueError):
    """The session is not an esketamine session: there is no REMS form to export."""


def form_for_record(rec: SessionRecord, cfg: Config, now_ms: int) -> rems_form.FormState:
    """The form of an archived session from its full record (prefill + staff entries in its events)."""
    if not rems_form.is_rems_session(rec.header):
        raise NotRemsExport(f"session {rec.header.get('id')} is not an esketamine session (protocol "
                            f"{rec.header.get('protocol')!r}); the REMS form applies to SPRAVATO sessions only")
    p = rems_form.prefill(rec, quality.bp_response(rec))
    staff, submitted = rems_form.fold([e for e in rec.events if "rems" in e or "rems_submitted" in e])
    setting = rems_form.setting_defaults(cfg.rems.setting, cfg.clinic.name)
    return rems_form.build(p, staff, submitted, setting, cfg.clinic.timezone, now_ms, cfg.rems.due_days)


def pdf_bytes(form: rems_form.FormState, tz_name: str, generated_by: str = "", now_ms: int | None = None) -> bytes:
    """The filled form as PDF bytes."""
    from fpdf import FPDF

    tz = ZoneInfo(tz_name)
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    font, unicode_ok = pdf_fonts(pdf)
    txt = text_filter(unicode_ok)

    pdf.add_page()
    pdf.set_font(font, "B", 14)
    pdf.cell(0, 8, txt("SPRAVATO® REMS Patient Monitoring Form (outpatient)"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, "", 8.5)
    now = datetime.fromtimestamp(now_ms / 1000, tz) if now_ms is not None else datetime.now(tz)
    intro = (f"Prepared by VitalWatch for patient id {form.patient}, session {form.session}, on "
             f"{now:%Y-%m-%d %H:%M} {tz_name}{' by ' + generated_by if generated_by else ''}. This is "
             "VitalWatch's transcription of the program's form: complete the blank lines, then submit "
             f"within 7 days online at {PROGRAM} or on the program's fax form. VitalWatch does not submit it.")
    pdf.multi_cell(0, 4.2, txt(intro), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(1)
    pdf.set_font(font, "B", 10)
    due = datetime.fromtimestamp(form.due_ms / 1000, tz)
    status = form.status_text + ("  —  OVERDUE" if form.overdue else "")
    pdf.multi_cell(0, 5, txt(f"Form status: {status}"), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.set_font(font, "", 9)
    pdf.cell(0, 5, txt(f"Due {due:%m/%d/%Y} (treatment date + {form.due_days} days)"),
             new_x="LMARGIN", new_y="NEXT")
    for w in form.warnings:
        pdf.cell(0, 5, txt(f"Note: {w}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    section = None
    rows: list[list[str]] = []

    def flush() -> None:
        if section is None:
            return
        pdf.set_font(font, "B", 10.5)
        pdf.cell(0, 6.5, txt(section), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(font, "", 8.5)
        with pdf.table(col_widths=(62, 58, 60), first_row_as_headings=False, line_height=4.4,
                       text_align="LEFT") as t:
            for r in rows:
                row = t.row()
                for cell in r:
                    row.cell(txt(cell))
        pdf.ln(1)

    for fv in form.fields:
        if fv.field.section != section:
            flush()
            section, rows = fv.field.section, []
            if section == rems_form.SECTIONS[0]:
                rows.append(["Patient id (VitalWatch)", form.patient, "match it to the patient's label"])
        label = fv.field.label + ("" if fv.field.required else " (optional)")
        rows.append([label, fv.value if fv.value else BLANK, fv.source])
    flush()
    if form.submitted:
        s = form.submitted
        pdf.set_font(font, "", 9)
        pdf.cell(0, 5, txt(f"Submitted via {s.get('method')} by {s.get('by')} on "
                           f"{datetime.fromtimestamp(s['ts'] / 1000, tz):%m/%d/%Y %H:%M}"
                           + (f", reference {s['reference']}" if s.get("reference") else "")),
                 new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def export_rems(rec: SessionRecord, cfg: Config, user: str = "", now_ms: int | None = None) -> bytes:
    """`export --format rems`: the form of one archived session as PDF bytes."""
    now = now_ms if now_ms is not None else clock.now_ms()
    return pdf_bytes(form_for_record(rec, cfg, now), cfg.clinic.timezone, generated_by=user, now_ms=now)


def form_summary_line(form: rems_form.FormState, tz_name: str) -> str:
    """One line for lists: "ready to submit, due 12/06/2026" / "missing: …, OVERDUE since …"."""
    tz = ZoneInfo(tz_name)
    due = datetime.fromtimestamp(form.due_ms / 1000, tz).strftime("%m/%d/%Y")
    if form.submitted:
        return form.status_text
    return f"{form.status_text}; {'OVERDUE since' if form.overdue else 'due'} {due}"

