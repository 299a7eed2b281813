"""Scenarios: which physiology modifiers and which device faults a simulated session has.

`--scenario` takes comma-separated names (`hypertensive,noisy-line`) or a TOML file that
scripts a whole session timeline (doses, per-room patients, fault windows). Both become one
`Timeline`, a pure description the runners consult: `timeline.faults_at(device, wall_s)`.

Times: physiology events (doses) are in *simulated* minutes since the start; fault windows
are in *wall* seconds since the start by default (a pulled cable must last long enough for
an adapter to notice, whatever `--speed` is), or `at_min` simulated minutes in a TOML file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from devices.simulators.physiology import MODIFIERS, ROUTES

PHYSIOLOGY = ("routine", *MODIFIERS)
FAULTS = ("sensor-off", "unplugged", "noisy-line", "broker-outage", "clock-skew", "ignore-acks")
SCENARIOS = PHYSIOLOGY + FAULTS

# Which transports/protocols a fault applies to.
SENSOR_PROTOCOLS = ("masimo-ascii", "nonin-df7", "ansar-b", "nibp-un300", "json", "senml", "hl7")
SERIAL_PROTOCOLS = ("masimo-ascii", "nonin-df7", "nibp-un300", "ansar-b")
MQTT_PROTOCOLS = ("json", "senml")
_APPLIES = {
    "sensor-off": SENSOR_PROTOCOLS,
    "unplugged": SERIAL_PROTOCOLS + MQTT_PROTOCOLS + ("hl7",),  # hl7: the connection drops
    "noisy-line": SERIAL_PROTOCOLS + MQTT_PROTOCOLS + ("hl7",),
    "broker-outage": MQTT_PROTOCOLS,
    "clock-skew": ("masimo-ascii", *MQTT_PROTOCOLS, "hl7"),  # the only formats that carry device time
    "ignore-acks": ("hl7",),  # a monitor that never reads its socket
}

# Default rotation of routes/doses over rooms when nothing is scripted (room index modulo 4).
DEFAULT_ROUTES: tuple[tuple[str, float | None], ...] = (
    ("iv", None), ("intranasal", 56.0), ("im", None), ("intranasal", 84.0))
DEFAULT_DOSE_AT_MIN = 2.0
CLOCK_SKEW_MS = 10 * 60 * 1000  # ahead by 10 min: beyond the contract's 5-min tolerance


class ScenarioError(ValueError):
    """A bad --scenario value or timeline file (message says where and what)."""


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault episode: kind, start (wall s, or simulated min), length, optional repeat."""

    kind: str
    at_s: float = 0.0
    duration_s: float | None = None  # None: until the end of the run
    every_s: float | None = None  # repeat period (wall s)
    device: str | None = None  # None: every device the fault applies to
    at_min: float | None = None  # simulated minutes instead of at_s (converted at run time)
    rate: float | None = None  # noisy-line only: share of ticks garbled (default 0.10 / 0.06)
    skew_s: float | None = None  # clock-skew only: the device clock's error, signed (default +10 min)

    def start_wall_s(self, speed: float) -> float:
        """Start in wall seconds since the run began."""
        return self.at_min * 60 / speed if self.at_min is not None else self.at_s

    def active(self, wall_s: float, speed: float) -> bool:
        """Is this window on at `wall_s` seconds after the start?"""
        t = wall_s - self.start_wall_s(speed)
        if t < 0:
            return False
        if self.every_s:
            t %= self.every_s
        return self.duration_s is None or t < self.duration_s


# What each fault scenario name schedules by default (wall seconds).
DEFAULT_WINDOWS: dict[str, tuple[FaultWindow, ...]] = {
    "sensor-off": (FaultWindow("sensor-off", at_s=20, duration_s=12, every_s=120),),
    "unplugged": (FaultWindow("unplugged", at_s=30, duration_s=20, every_s=180),),
    "noisy-line": (FaultWindow("noisy-line"),),
    "broker-outage": (FaultWindow("broker-outage", at_s=40, duration_s=15, every_s=180),),
    "clock-skew": (FaultWindow("clock-skew"),),
    "ignore-acks": (FaultWindow("ignore-acks"),),
}


@dataclass(frozen=True, slots=True)
class DosePlan:
    """A scripted dose: route (None: the room's), mg (None: the route's default), when."""

    at_min: float
    route: str | None = None
    dose_mg: float | None = None


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """A room's patient: route, dose, weight, physiology modifiers, extra doses."""

    route: str
    dose_mg: float | None = None
    weight_kg: float | None = None
    modifiers: frozenset[str] = frozenset()
    doses: tuple[DosePlan, ...] = ()


@dataclass(frozen=True)
class Timeline:
    """A whole simulated session: per-room plans, fault windows, the dose time."""

    names: tuple[str, ...] = ("routine",)
    dose_at_min: float = DEFAULT_DOSE_AT_MIN
    route: str | None = None  # None: rotate DEFAULT_ROUTES over rooms
    dose_mg: float | None = None
    weight_kg: float | None = None
    modifiers: frozenset[str] = frozenset()
    faults: tuple[FaultWindow, ...] = ()
    extra_doses: tuple[DosePlan, ...] = ()
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def room_plan(self, room_id: str, room_index: int) -> RoomPlan:
        """The plan of one room: timeline-wide settings, then its [rooms.<id>] overrides."""
        route, dose_mg = (self.route, self.dose_mg) if self.route else DEFAULT_ROUTES[room_index % 4]
        if self.route is None and self.dose_mg is not None:
            dose_mg = self.dose_mg
        over = self.rooms.get(room_id, {})
        mods = set(self.modifiers) | set(over.get("modifiers", ()))
        if "route" in over and over["route"] != route:
            dose_mg = None  # another route: its own default dose unless the room sets one
        return RoomPlan(
            route=over.get("route", route),
            dose_mg=over.get("dose_mg", dose_mg),
            weight_kg=over.get("weight_kg", self.weight_kg),
            modifiers=frozenset(mods),
            doses=self.extra_doses + tuple(over.get("doses", ())),
        )

    def faults_for(self, device_id: str, protocol: str) -> tuple[FaultWindow, ...]:
        """Fault windows that apply to one device."""
        return tuple(
            f for f in self.faults
            if protocol in _APPLIES[f.kind] and (f.device is None or f.device == device_id))


def _split_names(names: Iterable[str], where: str) -> tuple[frozenset[str], tuple[FaultWindow, ...]]:
    mods: set[str] = set()
    faults: list[FaultWindow] = []
    for name in names:
        if name not in SCENARIOS:
            raise ScenarioError(f"{where}: unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}"
                                " or a .toml timeline file")
        if name in MODIFIERS:
            mods.add(name)
        elif name in FAULTS:
            faults.extend(DEFAULT_WINDOWS[name])
    return frozenset(mods), tuple(faults)


def parse_scenario(text: str) -> Timeline:
    """`--scenario`: comma-separated names, or the path of a TOML timeline file."""
    text = (text or "routine").strip()
    if text.endswith(".toml") or Path(text).is_file():
        return load_timeline(Path(text))
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    mods, faults = _split_names(names, "--scenario")
    return Timeline(names=names, modifiers=mods, faults=faults)


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in data:
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ScenarioError(f"{where}.{key}: wrong type {type(value).__name__}")
    return value


def _route(value: str | None, where: str) -> str | None:
    if value is not None and value not in ROUTES:
        raise ScenarioError(f"{where}: unknown route {value!r}; expected one of {', '.join(ROUTES)}")
    return value


def _doses(items: list[Any], where: str) -> tuple[DosePlan, ...]:
    out = []
    for i, d in enumerate(items):
        w = f"{where}[{i}]"
        _known_keys(d, {"at_min", "route", "dose_mg"}, w)
        out.append(DosePlan(float(_get(d, "at_min", (int, float), w, 0)),
                            _route(_get(d, "route", str, w), w + ".route"),
                            _get(d, "dose_mg", (int, float), w)))
    return tuple(out)


def _known_keys(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a table")
    unknown = set(data) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def load_timeline(path: Path) -> Timeline:
    """Read a session-timeline TOML file (format: docs/simulators.md)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    try:
        return _timeline(data)
    except ScenarioError as e:
        # messages carry the key path (".rooms.r1.route: …", ": unknown key(s) …"); say
        # "file: key: what", as config errors do
        msg = str(e).lstrip(".")
        raise ScenarioError(f"{path}{msg}" if msg.startswith(":") else f"{path}: {msg}") from None


def _timeline(data: dict[str, Any]) -> Timeline:
    where = ""
    _known_keys(data, {"scenarios", "dose_at_min", "route", "dose_mg", "weight_kg", "doses", "faults",
                       "rooms"}, where)
    names = tuple(_get(data, "scenarios", list, where, ["routine"]))
    mods, faults = _split_names(names, f"{where}.scenarios")
    windows = list(faults)
    for i, f in enumerate(_get(data, "faults", list, where, [])):
        w = f"{where}.faults[{i}]"
        _known_keys(f, {"kind", "at_s", "at_min", "duration_s", "every_s", "device", "rate", "skew_s"}, w)
        kind = _get(f, "kind", str, w)
        if kind not in FAULTS:
            raise ScenarioError(f"{w}.kind: unknown fault {kind!r}; expected one of {', '.join(FAULTS)}")
        windows.append(FaultWindow(
            kind, at_s=float(_get(f, "at_s", (int, float), w, 0)),
            duration_s=_get(f, "duration_s", (int, float), w), every_s=_get(f, "every_s", (int, float), w),
            device=_get(f, "device", str, w), at_min=_get(f, "at_min", (int, float), w),
            rate=_get(f, "rate", (int, float), w), skew_s=_get(f, "skew_s", (int, float), w)))
        if windows[-1].rate is not None and not 0 <= windows[-1].rate <= 1:
            raise ScenarioError(f"{w}.rate: must be between 0 and 1")
    rooms: dict[str, dict[str, Any]] = {}
    for room_id, r in _get(data, "rooms", dict, where, {}).items():
        w = f"{where}.rooms.{room_id}"
        _known_keys(r, {"route", "dose_mg", "weight_kg", "scenarios", "doses"}, w)
        rmods, rfaults = _split_names(_get(r, "scenarios", list, w, []), w + ".scenarios")
        if rfaults:
            raise ScenarioError(f"{w}.scenarios: fault scenarios belong in [[faults]] with device = …")
        over: dict[str, Any] = {"modifiers": rmods, "doses": _doses(_get(r, "doses", list, w, []), w + ".doses")}
        for key, kind in (("route", str), ("dose_mg", (int, float)), ("weight_kg", (int, float))):
            if key in r:
                over[key] = _get(r, key, kind, w)
        _route(over.get("route"), w + ".route")
        rooms[room_id] = over
    return Timeline(
        names=names, dose_at_min=float(_get(data, "dose_at_min", (int, float), where, DEFAULT_DOSE_AT_MIN)),
        route=_route(_get(data, "route", str, where), where + ".route"),
        dose_mg=_get(data, "dose_mg", (int, float), where), weight_kg=_get(data, "weight_kg", (int, float), where),
        modifiers=mods, faults=tuple(windows), extra_doses=_doses(_get(data, "doses", list, where, []), where + ".doses"),
        rooms=rooms)


def with_faults(timeline: Timeline, *windows: FaultWindow) -> Timeline:
    """The same timeline with extra fault windows (tests and fixtures script faults this way)."""
    return replace(timeline, faults=timeline.faults + tuple(windows))


def room_seed(seed: int, room_id: str) -> int:
    """A room's own seed, derived from the run's seed and the room id (stable across runs)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(f"{seed}:{room_id}".encode(), digest_size=6).digest(), "big")


def build_physiology(seed: int, room_id: str, room_index: int, timeline: Timeline):  # -> Physiology
    """The Physiology of one room's patient under this timeline (pure, deterministic)."""
    from devices.simulators.physiology import Dose, Physiology, default_dose, draw_patient

    plan = timeline.room_plan(room_id, room_index)
    patient = draw_patient(room_seed(seed, room_id))
    if plan.weight_kg:
        patient = replace(patient, weight_kg=float(plan.weight_kg))
    doses: list[Dose] = [default_dose(plan.route, patient.weight_kg, timeline.dose_at_min * 60, plan.dose_mg)]
    for extra in plan.doses:
        route = extra.route or plan.route
        doses.append(default_dose(route, patient.weight_kg, extra.at_min * 60, extra.dose_mg))
    return Physiology(patient, tuple(doses), plan.modifiers)
