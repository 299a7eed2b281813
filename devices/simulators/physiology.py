"""Pure, seeded physiology of one simulated patient during a ketamine/esketamine session.

`Physiology.vitals_at(sim_s)` is a function of (seed, simulated time) only: the same seed
gives the same numbers whatever order or rate they are asked for, so a 75 Hz oximeter, a
1 Hz monitor and a test sampling once a minute all see one patient.

Model (simulated minutes since a dose, `t_min`):
- baseline drawn from an adult population (HR, SBP/DBP, SpO2, RR, temperature, PI);
- slow drift (knots every 20 min) and short-term noise (knots every 15 s), both smooth;
- each dose adds a response `amplitude × shape(t_min)`: a smooth rise from onset to a peak
  at ~30–40 min, a short plateau, then exponential return (τ 30–45 min, so the effect is
  back under 5 % between ~2 and ~3.5 h). Amplitude scales with route and dose (IV 0.5 mg/kg
  over 40 min ≈ +18 mmHg systolic, intranasal esketamine 56 mg ≈ +10, 84 mg ≈ +15) and a
  per-patient sensitivity; DBP rises ~0.6×, HR ~0.45× the systolic rise;
- scenario modifiers (hypertensive surge, bradycardia, desaturation) on top;
- MAP is always derived from the final SBP/DBP: MAP = DBP + (SBP − DBP)/3.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field

ROUTES = ("iv", "im", "intranasal")

# Response shape per route: onset, peak, plateau (min) and return time constant τ (min).
# Sources: PRODUCT.md (BP peak ~30–40 min after dosing; IV 0.5 mg/kg over 40 min; back
# over 1–4 h). IM is absorbed faster, intranasal a little slower.
_SHAPE_MIN = {
    "iv": (2.0, 35.0, 5.0, 35.0),
    "im": (1.0, 30.0, 5.0, 30.0),
    "intranasal": (5.0, 33.0, 5.0, 45.0),
}
# Systolic rise (mmHg) for a reference dose, scaled linearly with dose.
_REF_RISE = {"iv": (0.5, 18.0), "im": (0.5, 16.0), "intranasal": (56.0, 10.0)}  # (ref dose, rise)


def _u01(seed: int, name: str, k: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, name, k)."""
    h = hashlib.blake2b(f"{seed}:{name}:{k}".encode(), digest_size=8).digest()
    return struct.unpack("<Q", h)[0] / 2.0**64


def _gauss(seed: int, name: str, k: int) -> float:
    """Approximately standard-normal, from (seed, name, k) (Irwin–Hall of 4 uniforms)."""
    return (sum(_u01(seed, f"{name}#{i}", k) for i in range(4)) - 2.0) * math.sqrt(3.0)


def smooth_noise(seed: int, name: str, t_s: float, knot_s: float) -> float:
    """Smooth noise (≈ standard normal) at time t_s: cosine-interpolated random knots."""
    k = math.floor(t_s / knot_s)
    frac = t_s / knot_s - k
    a, b = _gauss(seed, name, k), _gauss(seed, name, k + 1)
    w = (1 - math.cos(math.pi * frac)) / 2
    return a * (1 - w) + b * w


def smoothstep(u: float) -> float:
    """0 below 0, 1 above 1, a smooth S in between."""
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


def _inverse_smoothstep(y: float) -> float:
    """u in [0, 1] with smoothstep(u) = y (bisection; smoothstep is monotonic there)."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if smoothstep(mid) < y else (lo, mid)
    return (lo + hi) / 2


def response_shape(t_min: float, onset: float, peak: float, plateau: float, tau: float) -> float:
    """Fraction (0–1) of a dose's full effect t_min simulated minutes after it started."""
    if t_min <= onset:
        return 0.0
    if t_min < peak:
        return smoothstep((t_min - onset) / (peak - onset))
    if t_min < peak + plateau:
        return 1.0
    return math.exp(-(t_min - peak - plateau) / tau)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


@dataclass(frozen=True, slots=True)
class Patient:
    """One simulated adult's baseline vitals and drug sensitivity."""

    seed: int
    hr: float
    sbp: float
    dbp: float
    spo2: float
    rr: float
    temp_c: float
    pi: float
    weight_kg: float
    sensitivity: float


def draw_patient(seed: int) -> Patient:
    """A plausible adult drawn from the population (deterministic for `seed`)."""
    g = lambda name: _gauss(seed, "patient:" + name, 0)  # noqa: E731
    sbp = _clamp(124 + 12 * g("sbp"), 102, 150)
    dbp = _clamp(77 + 7 * g("dbp"), 60, 92)
    dbp = min(dbp, sbp - 32)  # a plausible pulse pressure
    return Patient(
        seed=seed,
        hr=_clamp(74 + 9 * g("hr"), 56, 98),
        sbp=sbp,
        dbp=dbp,
        spo2=_clamp(97.6 + 0.9 * g("spo2"), 95, 99.4),
        rr=_clamp(15 + 2 * g("rr"), 11, 20),
        temp_c=_clamp(36.8 + 0.2 * g("temp"), 36.3, 37.3),
        pi=_clamp(3.0 * math.exp(0.4 * g("pi")), 0.8, 9.0),
        weight_kg=_clamp(78 + 14 * g("weight"), 50, 130),
        sensitivity=_clamp(math.exp(0.3 * g("sens")), 0.5, 2.0),
    )


@dataclass(frozen=True, slots=True)
class Dose:
    """A dose event: route, amount, when (simulated s) and infusion length (IV)."""

    route: str
    dose_mg: float
    at_s: float
    infusion_s: float = 0.0

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; expected one of {', '.join(ROUTES)}")
        if self.dose_mg <= 0:
            raise ValueError("dose_mg must be positive")


def default_dose(route: str, weight_kg: float, at_s: float, dose_mg: float | None = None) -> Dose:
    """The usual dose for a route: IV 0.5 mg/kg over 40 min, IM 0.5 mg/kg, intranasal 56 mg."""
    if route == "intranasal":
        return Dose(route, dose_mg or 56.0, at_s)
    mg = dose_mg or round(0.5 * weight_kg, 1)
    return Dose(route, mg, at_s, infusion_s=40 * 60.0 if route == "iv" else 0.0)


def systolic_rise(dose: Dose, weight_kg: float, sensitivity: float) -> float:
    """Expected peak systolic rise (mmHg) of one dose for this patient."""
    ref_dose, ref_rise = _REF_RISE[dose.route]
    amount = dose.dose_mg if dose.route == "intranasal" else dose.dose_mg / weight_kg
    return ref_rise * (amount / ref_dose) * sensitivity


@dataclass(frozen=True, slots=True)
class Vitals:
    """Vital signs at one instant (floats; MAP derived from SBP/DBP)."""

    hr: float
    sbp: float
    dbp: float
    spo2: float
    rr: float
    temp: float
    pi: float

    @property
    def map(self) -> float:
        """Mean arterial pressure, DBP + (SBP − DBP)/3."""
        return self.dbp + (self.sbp - self.dbp) / 3

    def rounded(self) -> dict[str, float]:
        """Values as a device shows them: integers (temp 0.1, pi 0.01); MAP from rounded BP."""
        sbp, dbp = round(self.sbp), round(self.dbp)
        return {
            "hr": round(self.hr), "sbp": sbp, "dbp": dbp, "map": round(dbp + (sbp - dbp) / 3),
            "spo2": min(100, round(self.spo2)), "rr": round(self.rr),
            "temp": round(self.temp, 1), "pi": round(self.pi, 2),
        }


# Scenario modifiers, minutes after the first dose. Kept here so that the physiology stays
# one pure function; scenarios.py only chooses which are on.
MODIFIERS = ("hypertensive", "bradycardia", "desaturation")
_SBP_DRIFT = 3.0  # mmHg scale of the slow systolic drift


def _window(t_min: float, start: float, ramp_in: float, hold: float, ramp_out: float) -> float:
    """Trapezoid 0→1→0 weight: ramps in from `start`, holds, ramps out (minutes)."""
    if t_min <= start:
        return 0.0
    t = t_min - start
    if t < ramp_in:
        return smoothstep(t / ramp_in)
    t -= ramp_in
    if t < hold:
        return 1.0
    t -= hold
    return 1.0 - smoothstep(t / ramp_out) if t < ramp_out else 0.0


@dataclass(frozen=True)
class Physiology:
    """A patient's vitals over simulated time, with doses and scenario modifiers."""

    patient: Patient
    doses: tuple[Dose, ...] = ()
    modifiers: frozenset[str] = frozenset()
    _hyper: tuple[float, float, float] = field(init=False, repr=False, default=(0.0, 0.0, 0.0))

    def __post_init__(self) -> None:
        unknown = set(self.modifiers) - set(MODIFIERS)
        if unknown:
            raise ValueError(f"unknown physiology modifier(s): {', '.join(sorted(unknown))}")
        # Hypertensive surge: a ≥45 mmHg systolic rise whose S-curve (onset → 45 min after
        # the dose) crosses 180 at a seeded 35–39 min, inside the documented 30–45 window.
        p = self.patient
        target_min = 35 + 4 * _u01(p.seed, "hyper:cross", 0)
        frac = smoothstep((target_min - 10) / 35)
        first = min((d.at_s for d in self.doses), default=0.0)
        cross_s = first + target_min * 60
        # aim at the patient's own drifting baseline at that minute, so drift cannot move it
        base = p.sbp + _SBP_DRIFT * smooth_noise(p.seed, "drift:sbp", cross_s, 1200.0)
        amp = (180 - base) / frac
        onset = 10.0
        if amp < 45.0:  # a high baseline: keep the ≥45 mmHg rise, start it later instead
            amp = 45.0
            u = _inverse_smoothstep((180 - base) / amp)
            onset = (target_min - 45.0 * u) / (1 - u)
        object.__setattr__(self, "_hyper", (amp, target_min, onset))

    @property
    def first_dose_s(self) -> float | None:
        """Simulated time of the first dose, or None before any."""
        return min((d.at_s for d in self.doses), default=None)

    def vitals_at(self, sim_s: float) -> Vitals:
        """Vital signs at simulated second `sim_s` (pure: same seed and time, same result)."""
        p, seed = self.patient, self.patient.seed
        rise = 0.0
        for d in self.doses:
            onset, peak, plateau, tau = _SHAPE_MIN[d.route]
            rise += systolic_rise(d, p.weight_kg, p.sensitivity) * response_shape(
                (sim_s - d.at_s) / 60, onset, peak, plateau, tau)
        first = self.first_dose_s
        t_min = (sim_s - first) / 60 if first is not None else -1e9
        if "hypertensive" in self.modifiers and first is not None:
            amp, _, onset = self._hyper
            surge = amp * response_shape(t_min, onset, 45.0, 10.0, 40.0)
            rise = surge  # the surge is this patient's (exaggerated) drug response
            # DBP follows at 0.6× (≥27 mmHg for a ≥45 mmHg surge); HR's drug term is capped
        drift = lambda name, scale: scale * smooth_noise(seed, "drift:" + name, sim_s, 1200.0)  # noqa: E731
        noise = lambda name, scale: scale * smooth_noise(seed, "noise:" + name, sim_s, 15.0)  # noqa: E731
        sbp = p.sbp + rise + drift("sbp", _SBP_DRIFT) + noise("sbp", 1.5)
        dbp = p.dbp + 0.6 * rise + drift("dbp", 2.0) + noise("dbp", 1.2)
        hr = p.hr + 0.45 * min(rise, 30.0) + drift("hr", 3.0) + noise("hr", 1.5)
        spo2 = p.spo2 - 0.03 * rise + drift("spo2", 0.4) + noise("spo2", 0.4)
        rr = p.rr + 0.05 * rise + drift("rr", 1.0) + noise("rr", 0.6)
        temp = p.temp_c + drift("temp", 0.1)
        pi = p.pi * (1 - 0.01 * rise) * math.exp(0.1 * noise("pi", 1.0))
        if "bradycardia" in self.modifiers and first is not None:
            w = _window(t_min, 15.0, 3.0, 8.0, 4.0)  # 15–30 min after the dose
            hr = hr * (1 - w) + (41 + noise("brady", 1.0)) * w
        if "desaturation" in self.modifiers and first is not None:
            w = _window(t_min, 12.0, 4.0, 5.0, 6.0)  # below 88 ~15–21 min, back by ~27 min
            spo2 = spo2 * (1 - w) + (83.5 + noise("desat", 0.8)) * w
            rr = rr * (1 - w) + 7.0 * w  # respiratory depression drives it
            hr = hr + 8 * w
        sbp = _clamp(sbp, 60, 260)
        dbp = _clamp(dbp, 30, min(180, sbp - 20))
        return Vitals(
            hr=_clamp(hr, 30, 220), sbp=sbp, dbp=dbp, spo2=_clamp(spo2, 60, 100),
            rr=_clamp(rr, 4, 40), temp=_clamp(temp, 35, 40), pi=_clamp(pi, 0.2, 19.9),
        )
