"""Simulator physiology and scenarios: pure, seeded, shaped like a ketamine session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devices.simulators.physiology import (
    ROUTES,
    Dose,
    Physiology,
    default_dose,
    draw_patient,
)
from devices.simulators.scenarios import (
    FaultWindow,
    ScenarioError,
    build_physiology,
    parse_scenario,
)

DOSE_AT_S = 120.0


def session(seed: int, route: str = "iv", mods: frozenset[str] = frozenset()) -> Physiology:
    p = draw_patient(seed)
    return Physiology(p, (default_dose(route, p.weight_kg, DOSE_AT_S),), mods)


def first_minute_at_or_above(ph: Physiology, limit: float, step_s: int = 10) -> float | None:
    for t in range(0, 70 * 60, step_s):
        if ph.vitals_at(t).sbp >= limit:
            return (t - DOSE_AT_S) / 60
    return None


def test_same_seed_same_numbers_in_any_order():
    a, b = session(7), session(7)
    times = [0.0, 3599.5, 12.25, 7200.0, 60.0]
    assert [a.vitals_at(t) for t in times] == [b.vitals_at(t) for t in reversed(times)][::-1]
    assert session(8).vitals_at(60.0) != a.vitals_at(60.0)


@pytest.mark.parametrize("seed", range(40))
def test_population_baseline_is_plausible_adult(seed):
    p = draw_patient(seed)
    assert 55 <= p.hr <= 100 and 100 <= p.sbp <= 150 and 60 <= p.dbp <= 95
    assert p.sbp - p.dbp >= 30 and 95 <= p.spo2 <= 100 and 10 <= p.rr <= 20
    assert 36.0 <= p.temp_c <= 37.5 and 45 <= p.weight_kg <= 130


@pytest.mark.parametrize("route", ROUTES)
def test_dose_response_peaks_30_to_45_min_and_returns_within_4_h(route):
    peaks, rises = [], []
    for seed in range(6):
        ph = session(seed, route)
        p = ph.patient
        samples = [(ph.vitals_at(t).sbp - p.sbp, t) for t in range(int(DOSE_AT_S), int(DOSE_AT_S) + 4 * 3600, 120)]
        # the drug component alone, free of noise: compare with the same patient undosed
        undosed = Physiology(p)
        effect = [(ph.vitals_at(t).sbp - undosed.vitals_at(t).sbp, t) for _, t in samples]
        rise, t_peak = max(effect)
        peaks.append((t_peak - DOSE_AT_S) / 60)
        rises.append(rise)
        assert effect[-1][0] < 0.1 * rise  # back to baseline (within 10 %) by 4 h
        assert abs(ph.vitals_at(DOSE_AT_S + 4 * 3600).sbp - p.sbp) < 12  # only drift and noise left
    assert all(30 <= m <= 45 for m in peaks), peaks
    assert 5 <= min(rises) and max(rises) < 45  # a routine response, not a crisis


def test_dose_size_scales_the_response():
    p = draw_patient(3)
    small = Physiology(p, (Dose("intranasal", 56, 0),))
    big = Physiology(p, (Dose("intranasal", 84, 0),))
    base = Physiology(p)
    t = 35 * 60
    assert big.vitals_at(t).sbp - base.vitals_at(t).sbp > small.vitals_at(t).sbp - base.vitals_at(t).sbp > 0


def test_iv_default_is_half_mg_per_kg_over_40_min():
    d = default_dose("iv", 80, 0)
    assert d.dose_mg == 40 and d.infusion_s == 40 * 60
    assert default_dose("intranasal", 80, 0).dose_mg == 56


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("seed", range(0, 60, 6))
def test_hypertensive_crosses_180_at_30_to_45_min_with_a_40_mmhg_rise(seed, route):
    ph = session(seed, route, frozenset({"hypertensive"}))
    crossed = first_minute_at_or_above(ph, 180)
    assert crossed is not None and 30 <= crossed <= 45, crossed
    peak = max(ph.vitals_at(t).sbp for t in range(30 * 60, 90 * 60, 60))
    assert peak - ph.patient.sbp >= 40


@pytest.mark.parametrize("mods", [frozenset(), frozenset({"hypertensive", "desaturation", "bradycardia"})])
def test_map_is_consistent_with_sbp_dbp_throughout(mods):
    ph = session(5, "iv", mods)
    for t in range(0, 4 * 3600, 37):
        v = ph.vitals_at(t)
        assert v.map == pytest.approx(v.dbp + (v.sbp - v.dbp) / 3)
        r = v.rounded()
        assert abs(r["map"] - (r["dbp"] + (r["sbp"] - r["dbp"]) / 3)) <= 0.5
        assert r["sbp"] > r["map"] > r["dbp"]


def test_desaturation_slides_below_88_then_recovers():
    ph = session(11, "intranasal", frozenset({"desaturation"}))
    spo2 = [(t, ph.vitals_at(DOSE_AT_S + t).spo2) for t in range(0, 60 * 60, 30)]
    low = [t for t, s in spo2 if s < 88]
    assert low, "never below 88"
    assert all(s >= 93 for t, s in spo2 if t < 10 * 60)  # normal before
    assert all(s >= 93 for t, s in spo2 if t > 35 * 60)  # recovered after
    assert max(low) - min(low) >= 3 * 60  # an episode, not a blip


def test_bradycardia_dips_below_50_then_recovers():
    ph = session(2, "im", frozenset({"bradycardia"}))
    hr = [(t, ph.vitals_at(DOSE_AT_S + t).hr) for t in range(0, 60 * 60, 30)]
    assert any(h < 50 for _, h in hr)
    assert all(h > 50 for t, h in hr if t > 40 * 60)


def test_scenarios_compose_and_parse():
    tl = parse_scenario("hypertensive,noisy-line,sensor-off")
    assert tl.modifiers == {"hypertensive"}
    assert {f.kind for f in tl.faults} == {"noisy-line", "sensor-off"}
    assert tl.faults_for("oxi-1", "masimo-ascii") and not tl.faults_for("n", "json")[0:0]
    assert [f.kind for f in tl.faults_for("x", "json")] == ["noisy-line", "sensor-off"]
    assert parse_scenario("broker-outage").faults_for("oxi-1", "masimo-ascii") == ()
    with pytest.raises(ScenarioError, match="unknown scenario 'hypertension'"):
        parse_scenario("hypertension")


def test_fault_windows_repeat_and_convert_simulated_minutes():
    w = FaultWindow("unplugged", at_s=30, duration_s=20, every_s=180)
    assert [w.active(t, 1) for t in (29, 30, 49.9, 50, 210, 231)] == [False, True, True, False, True, False]
    m = FaultWindow("sensor-off", at_min=10, duration_s=5)
    assert m.active(10 + 1, speed=60) and not m.active(16, speed=60)


def test_timeline_toml(tmp_path: Path):
    f = tmp_path / "session.toml"
    f.write_text('''
scenarios = ["hypertensive"]
dose_at_min = 5
route = "intranasal"
dose_mg = 84
[[doses]]
at_min = 45
dose_mg = 28
[[faults]]
kind = "sensor-off"
at_s = 12
duration_s = 8
device = "oxi-1"
[rooms.room-2]
route = "iv"
weight_kg = 90
scenarios = ["desaturation"]
''')
    tl = parse_scenario(str(f))
    ph1 = build_physiology(1, "room-1", 0, tl)
    ph2 = build_physiology(1, "room-2", 1, tl)
    assert [(d.route, d.dose_mg, d.at_s) for d in ph1.doses] == [("intranasal", 84, 300), ("intranasal", 28, 2700)]
    assert ph2.doses[0].route == "iv" and ph2.doses[0].dose_mg == 45 and ph2.modifiers == {"hypertensive", "desaturation"}
    assert tl.faults_for("oxi-1", "masimo-ascii")[0].at_s == 12
    assert tl.faults_for("oxi-2", "masimo-ascii") == ()
    f.write_text('[[faults]]\nkind = "clock-skew"\ndevice = "mon-1"\nat_s = 3\nduration_s = 5\nskew_s = -120\n')
    assert parse_scenario(str(f)).faults_for("mon-1", "json")[0].skew_s == -120
    f.write_text('[[faults]]\nkind = "lightning"\n')
    with pytest.raises(ScenarioError, match=re.escape(f"{f}: faults[0].kind: unknown fault")):
        parse_scenario(str(f))
    f.write_text('route = "oral"\n')
    with pytest.raises(ScenarioError, match=re.escape(f"{f}: route: unknown route")):
        parse_scenario(str(f))
    f.write_text('bogus = 1\n')
    with pytest.raises(ScenarioError, match=re.escape(f"{f}: unknown key(s) bogus")):
        parse_scenario(str(f))


def test_default_rooms_rotate_routes_and_dose_at_two_minutes():
    tl = parse_scenario("routine")
    routes = [build_physiology(1, f"room-{i}", i, tl).doses[0] for i in range(4)]
    assert [d.route for d in routes] == ["iv", "intranasal", "im", "intranasal"]
    assert [d.dose_mg for d in routes][1::2] == [56, 84]
    assert all(d.at_s == 120 for d in routes)
