"""The font every VitalWatch PDF uses (fpdf2): DejaVu when installed, so SpO₂, °C, ± and the
REMS form's ® print as such; else Helvetica, with text reduced to Latin-1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def pdf_fonts(pdf: Any) -> tuple[str, bool]:
    """Register DejaVu on `pdf` when installed: (font family, Unicode-capable)."""
    regular, bold = DEJAVU / "DejaVuSans.ttf", DEJAVU / "DejaVuSans-Bold.ttf"
    if regular.exists() and bold.exists():
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
        return "DejaVu", True
    return "Helvetica", False


def text_filter(unicode_ok: bool) -> Callable[[str], str]:
    """What to pass every string through before writing it with that font."""
    if unicode_ok:
        return lambda x: x
    return lambda x: x.encode("latin-1", "replace").decode("latin-1")
