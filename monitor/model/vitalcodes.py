"""Clinical codes of our metrics: IEEE 11073 MDC and LOINC codes, UCUM/MDC units (pure).

One table serves both directions: the HL7 parser maps an OBX's code and unit to a metric
and a value in our unit (`code_metric`, `to_metric_unit`); the HL7 and FHIR builders take
the code and unit they send from here (`SEND`). MDC codes are the 32-bit "context-free"
codes of IEEE 11073-10101 (partition << 16 | term code): e.g. SCADA partition 2 →
MDC_PULS_OXIM_SAT_O2 = 2·65536 + 19384 = 150456; the dimension partition 4 →
MDC_DIM_PERCENT = 262688. Vendors send the number, the mnemonic or both (`150456^
MDC_PULS_OXIM_SAT_O2^MDC`); either is recognised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Code:
    """An observation code that maps to a metric. Lower `rank` wins when one message
    carries two codes for the same metric (ECG heart rate over pulse-oximeter pulse rate)."""

    metric: str
    system: str  # "MDC" | "LN"
    code: str  # MDC: the decimal number ("" when only the mnemonic is known); LN: the LOINC code
    name: str  # MDC mnemonic or LOINC short name
    rank: int = 0


# Vital-sign codes we accept. MDC numbers per IEEE 11073-10101 (checked against public
# nomenclature tables and vendor messages, see tests/data/hl7/README.md).
CODES: tuple[Code, ...] = (
    Code("hr", "MDC", "147842", "MDC_ECG_HEART_RATE", 0),
    Code("hr", "MDC", "149514", "MDC_PULS_RATE", 1),
    Code("hr", "MDC", "149530", "MDC_PULS_OXIM_PULS_RATE", 2),
    Code("hr", "MDC", "149546", "MDC_PULS_RATE_NON_INV", 3),
    Code("spo2", "MDC", "150456", "MDC_PULS_OXIM_SAT_O2", 0),
    Code("sbp", "MDC", "150021", "MDC_PRESS_BLD_NONINV_SYS", 0),
    Code("dbp", "MDC", "150022", "MDC_PRESS_BLD_NONINV_DIA", 0),
    Code("map", "MDC", "150023", "MDC_PRESS_BLD_NONINV_MEAN", 0),
    # the NIBP cuff terms many monitors (Mindray, Philips via gateways) use for the same values
    Code("sbp", "MDC", "150301", "MDC_PRESS_CUFF_SYS", 1),
    Code("dbp", "MDC", "150302", "MDC_PRESS_CUFF_DIA", 1),
    Code("map", "MDC", "150303", "MDC_PRESS_CUFF_MEAN", 1),
    Code("rr", "MDC", "151562", "MDC_RESP_RATE", 0),
    Code("rr", "MDC", "151578", "MDC_TTHOR_RESP_RATE", 1),
    Code("rr", "MDC", "151570", "MDC_AWAY_RESP_RATE", 2),
    Code("temp", "MDC", "150364", "MDC_TEMP_BODY", 0),
    Code("temp", "MDC", "150344", "MDC_TEMP", 1),
    Code("temp", "MDC", "", "MDC_TEMP_CORE", 2),
    Code("temp", "MDC", "", "MDC_TEMP_ORAL", 2),
    Code("temp", "MDC", "", "MDC_TEMP_TYMP", 2),
    Code("temp", "MDC", "", "MDC_TEMP_RECT", 2),
    Code("temp", "MDC", "", "MDC_TEMP_AXIL", 3),
    Code("pi", "MDC", "150448", "MDC_PULS_OXIM_PERF_REL", 0),
    Code("pi", "MDC", "150488", "MDC_BLD_PERF_INDEX", 1),  # Mindray's term for the same index
    Code("hr", "LN", "8867-4", "Heart rate", 0),
    Code("hr", "LN", "8889-8", "Heart rate by Pulse oximetry", 2),
    Code("spo2", "LN", "59408-5", "SpO2 by Pulse oximetry", 0),
    Code("spo2", "LN", "2708-6", "Oxygen saturation in Arterial blood", 1),
    Code("sbp", "LN", "8480-6", "Systolic blood pressure", 0),
    Code("dbp", "LN", "8462-4", "Diastolic blood pressure", 0),
    Code("map", "LN", "8478-0", "Mean blood pressure", 0),
    Code("rr", "LN", "9279-1", "Respiratory rate", 0),
    Code("temp", "LN", "8310-5", "Body temperature", 0),
    Code("temp", "LN", "8331-1", "Oral temperature", 1),
    Code("pi", "LN", "61006-3", "Perfusion index by Pulse oximetry", 0),
)

_BY_MDC_NUMBER = {c.code: c for c in CODES if c.system == "MDC" and c.code}
_BY_MDC_NAME = {c.name: c for c in CODES if c.system == "MDC"}
_BY_LOINC = {c.code: c for c in CODES if c.system == "LN"}
LOINC_SYSTEMS = frozenset({"LN", "LOINC", "http://loinc.org", "2.16.840.1.113883.6.1"})
MDC_SYSTEMS = frozenset({"MDC", "IEEE11073", "urn:iso:std:iso:11073:10101", "2.16.840.1.113883.6.24"})
_LOINC_U = {s.upper() for s in LOINC_SYSTEMS}
_MDC_U = {s.upper() for s in MDC_SYSTEMS}


def mdil_to_mdc(code: str) -> str | None:
    """Philips MDIL notation `pppp-cccc` (partition and term code in hex, e.g. `0002-4182`)
    → the MDC decimal code (147842), or None if it is not that notation."""
    part, _, term = code.strip().partition("-")
    try:
        return str((int(part, 16) << 16) | int(term, 16)) if part and term else None
    except ValueError:
        return None


def code_metric(identifier: str, text: str, system: str) -> Code | None:
    """The metric code for an OBX-3 (identifier, text, coding system), or None if not ours."""
    sys_u = system.strip().upper()
    if sys_u in _LOINC_U:
        return _BY_LOINC.get(identifier.strip())
    if sys_u == "MDIL":  # Philips: MDC terms written as hex partition-code
        mdc = mdil_to_mdc(identifier)
        return _BY_MDC_NUMBER.get(mdc) if mdc else None
    if sys_u in _MDC_U or (not sys_u and text.startswith("MDC_")):
        hit = _BY_MDC_NUMBER.get(identifier.strip())
        if hit is not None:
            return hit
        # some senders put the mnemonic first, some only in the text component
        return _BY_MDC_NAME.get(identifier.strip()) or _BY_MDC_NAME.get(text.strip())
    return None


# --- units ----------------------------------------------------------------------------------
def _same(v: float) -> float:
    return v


def _kpa_to_mmhg(v: float) -> float:
    return round(v * 7.500617, 1)


def _f_to_c(v: float) -> float:
    return round((v - 32.0) * 5.0 / 9.0, 2)


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit a sender may use for some metrics, and how to convert it to ours."""

    metrics: frozenset[str]
    convert: Callable[[float], float] = _same


_PER_MIN = frozenset({"hr", "rr"})
_PCT = frozenset({"spo2", "pi"})
_BP = frozenset({"sbp", "dbp", "map"})
_TEMP = frozenset({"temp"})

# Keys are matched case-sensitively first (UCUM is case-sensitive: "Cel"), then
# case-insensitively for the free-text spellings monitors use ("BPM", "mmhg").
UNITS: Mapping[str, Unit] = MappingProxyType({
    # UCUM
    "/min": Unit(_PER_MIN), "1/min": Unit(_PER_MIN), "{beats}/min": Unit(frozenset({"hr"})),
    "{beat}/min": Unit(frozenset({"hr"})), "{Beats}/min": Unit(frozenset({"hr"})),
    "{breaths}/min": Unit(frozenset({"rr"})), "{breath}/min": Unit(frozenset({"rr"})),
    "{resp}/min": Unit(frozenset({"rr"})), "%": Unit(_PCT), "mm[Hg]": Unit(_BP),
    "kPa": Unit(_BP, _kpa_to_mmhg), "Cel": Unit(_TEMP), "[degF]": Unit(_TEMP, _f_to_c),
    # MDC dimension codes (partition 4) and their mnemonics
    "264864": Unit(frozenset({"hr"})), "MDC_DIM_BEAT_PER_MIN": Unit(frozenset({"hr"})),
    "264928": Unit(frozenset({"rr"})), "MDC_DIM_RESP_PER_MIN": Unit(frozenset({"rr"})),
    "264896": Unit(_PER_MIN), "MDC_DIM_PER_MIN": Unit(_PER_MIN),
    "262688": Unit(_PCT), "MDC_DIM_PERCENT": Unit(_PCT),
    "266016": Unit(_BP), "MDC_DIM_MMHG": Unit(_BP),
    "265987": Unit(_BP, _kpa_to_mmhg), "MDC_DIM_KILO_PASCAL": Unit(_BP, _kpa_to_mmhg),
    "268192": Unit(_TEMP), "MDC_DIM_DEGC": Unit(_TEMP),
    "266560": Unit(_TEMP, _f_to_c), "MDC_DIM_FAHR": Unit(_TEMP, _f_to_c),
    # free text seen from monitors
    "bpm": Unit(frozenset({"hr"})), "rpm": Unit(frozenset({"rr"})), "brpm": Unit(frozenset({"rr"})),
    "mmHg": Unit(_BP), "mm Hg": Unit(_BP), "°C": Unit(_TEMP), "degC": Unit(_TEMP), "C": Unit(_TEMP),
    "°F": Unit(_TEMP, _f_to_c), "degF": Unit(_TEMP, _f_to_c), "F": Unit(_TEMP, _f_to_c),
})
_UNITS_CI = {k.lower(): v for k, v in UNITS.items()}

# With no unit at all only these metrics are unambiguous (a bare "16" could be kPa or mmHg;
# a bare "98.6" °F or a wrong °C): BP and temperature without a unit are refused.
UNITLESS_OK = frozenset({"hr", "rr", "spo2", "pi"})


class UnitError(ValueError):
    """A unit we cannot convert for this metric (`bad_unit`)."""


def to_metric_unit(metric: str, value: float, unit_codes: tuple[str, ...]) -> float:
    """`value` in the metric's own unit, given the OBX-6 components (identifier, text, …).

    Tries each non-empty component (the code first, then the text); raises UnitError when
    none names a unit this metric can be converted from.
    """
    seen = [u.strip() for u in unit_codes if u and u.strip()]
    if not seen:
        if metric in UNITLESS_OK:
            return value
        raise UnitError(f"{metric}: no unit (OBX-6 empty)")
    for u in seen:
        unit = UNITS.get(u) or _UNITS_CI.get(u.lower())
        if unit is None and "-" in u:  # Philips MDIL unit code, e.g. 0004-0aa0 = bpm
            unit = UNITS.get(mdil_to_mdc(u) or "")
        if unit is not None and metric in unit.metrics:
            return unit.convert(value)
    raise UnitError(f"{metric}: unit {'^'.join(seen)!r} is not one we convert")


# --- what we send ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """The codes and unit we send for a metric (HL7 OBX and FHIR Observation)."""

    mdc: str
    mdc_name: str
    loinc: str
    loinc_display: str
    ucum: str  # UCUM code
    unit_display: str  # human unit text


SEND: Mapping[str, Send] = MappingProxyType({
    "hr": Send("147842", "MDC_ECG_HEART_RATE", "8867-4", "Heart rate", "/min", "beats/minute"),
    "spo2": Send("150456", "MDC_PULS_OXIM_SAT_O2", "59408-5",
                 "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%"),
    "sbp": Send("150021", "MDC_PRESS_BLD_NONINV_SYS", "8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    "dbp": Send("150022", "MDC_PRESS_BLD_NONINV_DIA", "8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg"),
    "map": Send("150023", "MDC_PRESS_BLD_NONINV_MEAN", "8478-0", "Mean blood pressure", "mm[Hg]", "mmHg"),
    "rr": Send("151562", "MDC_RESP_RATE", "9279-1", "Respiratory rate", "/min", "breaths/minute"),
    "temp": Send("150364", "MDC_TEMP_BODY", "8310-5", "Body temperature", "Cel", "C"),
    "pi": Send("150448", "MDC_PULS_OXIM_PERF_REL", "61006-3", "Perfusion index Tissue by Pulse oximetry",
               "%", "%"),
})
