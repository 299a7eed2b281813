"""The clinic quality report as a PDF (fpdf2) with its charts.

The charts are horizontal bar charts drawn with fpdf2's own primitives (no browser needed,
so the report PDF is produced even where Chromium is missing, and quickly): sessions by
route and dose, physiological alarms by priority, time to acknowledge in bands, technical
alarms by device and by cause, adverse observations, BP surges against the label's 8–19 %,
and REMS form completeness. Then one line per session (the CSV has every column).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.sessions.pdf_fonts import pdf_fonts, text_filter
from monitor.sessions.report import Report
from monitor.sessions.review import fmt_duration

PDF_SESSION_ROWS = 400  # the per-session table is cut here; the CSV holds every session
ACK_BANDS = ((15, "≤ 15 s"), (30, "15–30 s"), (60, "30–60 s"), (120, "1–2 min"), (300, "2–5 min"),
             (float("inf"), "> 5 min"))
COLORS = {"high": (211, 47, 47), "medium": (249, 168, 37), "low": (0, 172, 193), "bar": (30, 136, 229),
          "grey": (120, 144, 156), "ok": (67, 160, 71)}


def ack_bands(acks: list[float]) -> list[tuple[str, float]]:
    """How many acknowledgements fall in each time band (for the histogram)."""
    counts = []
    lo = -1.0
    for hi, label in ACK_BANDS:
        counts.append((label, float(sum(1 for a in acks if lo < a <= hi))))
        lo = hi
    return counts


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:g} %"


def pdf_bytes(rep: Report, generated_by: str = "") -> bytes:
    """The report as PDF bytes."""
    from fpdf import FPDF

    tz = ZoneInfo(rep.tz_name)
    t = rep.totals
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    font, unicode_ok = pdf_fonts(pdf)
    txt = text_filter(unicode_ok)

    def heading(text: str, size: float = 11) -> None:
        pdf.set_font(font, "B", size)
        pdf.cell(0, 7, txt(text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(font, "", 8.5)

    def bars(title: str, items: list[tuple[str, float]], fmt: Any = lambda v: f"{v:g}",
             colors: list[tuple[int, int, int]] | None = None) -> None:
        heading(title, 10)
        if not items:
            pdf.cell(0, 5, txt("none"), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
            return
        top = max(v for _, v in items) or 1.0
        label_w, bar_w, h = 55.0, 100.0, 5.0
        for i, (label, v) in enumerate(items):
            if pdf.will_page_break(h):
                pdf.add_page()
            x, y = pdf.l_margin, pdf.get_y()
            pdf.set_xy(x, y)
            pdf.cell(label_w, h, txt(label[:40]))
            c = (colors[i] if colors and i < len(colors) else COLORS["bar"])
            pdf.set_fill_color(*c)
            if v > 0:
                pdf.rect(x + label_w, y + 0.8, max(bar_w * v / top, 0.6), h - 1.6, style="F")
            pdf.set_xy(x + label_w + bar_w + 2, y)
            pdf.cell(20, h, txt(fmt(v)), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)

    pdf.add_page()
    pdf.set_font(font, "B", 15)
    pdf.cell(0, 8, txt(f"VitalWatch clinic quality report — {rep.clinic}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, "", 9)
    pdf.cell(0, 5, txt(f"Sessions started {rep.scope_text()} ({rep.tz_name}). Generated "
                       f"{datetime.fromtimestamp(rep.generated_ms / 1000, tz):%Y-%m-%d %H:%M}"
                       + (f" by {generated_by}" if generated_by else "") + "."), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    a, s, o, r = t["alarms"], t["bp_surge"], t["observations"], t["rems"]
    heading("Key figures")
    key = [
        ["Sessions", str(t["sessions"])],
        ["Physiological alarms (high / medium / low)",
         f"{a['by_priority']['high']} / {a['by_priority']['medium']} / {a['by_priority']['low']} "
         f"(per session {a['per_session']['high']} / {a['per_session']['medium']} / {a['per_session']['low']})"],
        ["Time to acknowledge: median / 90th percentile",
         f"{fmt_duration(a['median_ack_s'])} / {fmt_duration(a['p90_ack_s'])} (n = {a['acknowledged']})"],
        ["Never acknowledged", str(a["never_acknowledged"])],
        ["Nuisance (cleared within their delay)", f"{a['nuisance']} ({_pct(a['nuisance_pct'])} of alarms)"],
        ["Technical alarms", str(t["technical"]["total"])],
        ["BP surge (SBP ≥ +40 or DBP ≥ +25 within 90 min)",
         f"{s['surge']} of {s['sessions_with_bp']} sessions ({_pct(s['surge_pct'])}; label {s['label_pct']} %)"],
        ["Sedation / dissociation / respiratory depression / nausea",
         " / ".join(_pct(o[k]["pct"]) for k in ("sedation", "dissociation", "respiratory_depression", "nausea"))],
        ["REMS forms: complete (ready or submitted) / required",
         f"{r['ready'] + r['submitted']} / {r['required']} ({_pct(r['complete_pct'])}); overdue {r['overdue']}"],
    ]
    with pdf.table(col_widths=(75, 105), first_row_as_headings=False, line_height=4.6, text_align="LEFT") as tb:
        for k, v in key:
            row = tb.row()
            row.cell(txt(k))
            row.cell(txt(v))
    pdf.ln(3)
    bars("Sessions by route and dose", [(f"{route} {dose}", float(n)) for (route, dose), n in t["by_route_dose"]])
    bars("Physiological alarms by priority", [(p, float(a["by_priority"][p])) for p in ("high", "medium", "low")],
         colors=[COLORS["high"], COLORS["medium"], COLORS["low"]])
    bars("Time to acknowledge (physiological alarms)",
         ack_bands([x for row in rep.rows for x in row["ack_s"]]))
    bars("Technical alarms by device (which devices drop out most)",
         [(d, float(n)) for d, n in t["technical"]["by_device"][:12]], colors=[COLORS["grey"]] * 12)
    bars("Technical alarms by cause", [(c, float(n)) for c, n in t["technical"]["by_cause"][:12]],
         colors=[COLORS["grey"]] * 12)
    bars("Adverse observations (% of sessions)",
         [(k.replace("_", " "), float(o[k]["pct"] or 0)) for k in ("sedation", "dissociation",
                                                                    "respiratory_depression", "nausea")],
         fmt=lambda v: f"{v:g} %")
    bars("BP rises within 90 min of dose (sessions)",
         [("SBP ≥ +40", float(s["sbp_40"])), ("DBP ≥ +25", float(s["dbp_25"])), ("either (surge)", float(s["surge"])),
          ("sessions with BP", float(s["sessions_with_bp"]))])
    bars("REMS forms", [("submitted", float(r["submitted"])), ("ready to submit", float(r["ready"])),
                        ("incomplete", float(r["incomplete"])), ("overdue", float(r["overdue"]))],
         colors=[COLORS["ok"], COLORS["bar"], COLORS["medium"], COLORS["high"]])
    if r["missing"]:
        heading("Most often missing on REMS forms", 10)
        pdf.multi_cell(0, 4.4, txt(", ".join(f"{m} ({n})" for m, n in r["missing"][:12])), new_x="LMARGIN",
                       new_y="NEXT", align="L")
        pdf.ln(2)
    heading("Sessions")
    rows = rep.rows[:PDF_SESSION_ROWS]
    with pdf.table(col_widths=(24, 16, 22, 22, 20, 16, 16, 44), first_row_as_headings=True, line_height=4.2,
                   text_align="LEFT") as tb:
        head = tb.row()
        for h in ("Started", "Room", "Patient", "Route / dose", "Peak SBP", "Rise 90", "Alarms", "REMS form"):
            head.cell(txt(h))
        for x in rows:
            form = x.get("form")
            row = tb.row()
            for cell in (
                datetime.fromtimestamp(x["started_ms"] / 1000, tz).strftime("%Y-%m-%d %H:%M"), x["room"] or "",
                x["patient"] or "", f"{x['route'] or ''} {_dose(x)}", _num(x["peak_sbp"]),
                _signed(x["sbp_rise_90"]) + "/" + _signed(x["dbp_rise_90"]),
                f"{x['alarms']['high']}/{x['alarms']['medium']}/{x['alarms']['low']}",
                (form.status_text if form else "n/a")[:60],
            ):
                row.cell(txt(str(cell)))
    if len(rep.rows) > PDF_SESSION_ROWS:
        pdf.cell(0, 5, txt(f"… the first {PDF_SESSION_ROWS} of {len(rep.rows)} sessions; the CSV lists all."),
                 new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _dose(x: dict[str, Any]) -> str:
    d = x.get("dose_mg")
    return "" if d is None else f"{d:g} mg"


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def _signed(v: float | None) -> str:
    return "—" if v is None else f"{v:+.0f}"
