"""Load and validate the one TOML configuration file, once, at the edge.

`load_config(path)` returns a frozen `Config` or raises `ConfigError` naming the file, the
field path (e.g. `rooms[0].devices[1].port`) and what is wrong. Nothing else in VitalWatch
reads the environment: `apply_env()` folds the contract's overrides in here.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.model.readings import METRICS
from monitor.model.redis_url import RedisUrlError
from monitor.model.redis_url import parse as parse_redis_url

DEFAULT_PATH = "config/vitalwatch.toml"
PROTOCOLS_SERIAL = ("masimo-ascii", "nonin-df7", "nibp-un300", "ansar-b")
PROTOCOLS_MQTT = ("json", "senml")
PROTOCOLS_MLLP = ("hl7",)
PRIORITIES = ("high", "medium", "low")
ID_RE = r"^[a-z0-9][a-z0-9-]*$"


class ConfigError(Exception):
    """Bad configuration: which file, which field, what is wrong."""

    def __init__(self, file: str, path: str, problem: str) -> None:
        self.file, self.path, self.problem = file, path, problem
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {problem}")


class _Model(BaseModel):
    # strict: "9600" is not a baud rate; forbid: a typo'd key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Id = Annotated[str, Field(pattern=ID_RE, max_length=64)]


class ClinicConfig(_Model):
    """[clinic]"""

    id: Id
    name: str = ""
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v


def _known_priority(v: str) -> str:
    if v not in PRIORITIES:
        raise ValueError(f"unknown priority {v!r}; expected high, medium or low")
    return v


Priority = Annotated[str, AfterValidator(_known_priority)]


def _embedded_or_url(pattern: str, what: str) -> AfterValidator:
    """A validator: the value is "embedded" or matches `pattern` (else the error names `what`)."""
    def check(v: str) -> str:
        if v != "embedded" and not re.match(pattern, v):
            raise ValueError(f"must be 'embedded' or {what}")
        return v
    return AfterValidator(check)


def _redis_url(v: str) -> str:
    """"embedded" or a URL redis_url.parse accepts; its error says what is wrong."""
    if v != "embedded":
        try:
            parse_redis_url(v)
        except RedisUrlError as e:
            # the scheme error already lists the forms; the others say what is wrong with it
            raise ValueError(str(e) if str(e).startswith("unsupported") else
                             f"{e} (use 'embedded' or a redis://, rediss://, unix://, "
                             "redis+sentinel:// or redis+cluster:// URL)") from None
    return v


RedisUrl = Annotated[str, AfterValidator(_redis_url)]


def _mqtt_port(v: str) -> str:
    """The port of an mqtt:// URL, when given, is a number 1–65535 (else every role using the
    broker dies at start with a traceback instead of check-config naming the key)."""
    if v == "embedded" or "://" not in v:
        return v
    hostport = v.split("://", 1)[1].partition("/")[0].partition("?")[0].rpartition("@")[2]
    port = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
    if ":" in port:
        p = port.rpartition(":")[2]
        if not (p.isdigit() and 0 < int(p) < 65536):
            raise ValueError(f"bad port {p!r}: a number 1–65535")
    return v


MqttUrl = Annotated[str, _embedded_or_url(r"^(mqtt|mqtts|tcp|ssl)://[^/]+", "an mqtt:// or mqtts:// URL"),
                    AfterValidator(_mqtt_port)]


class RedisConfig(_Model):
    """[redis] — `url = "embedded"` starts a local server owned by the app."""

    url: RedisUrl = "embedded"
    retention_hours: float = Field(default=168, gt=0)
    # Writer tuning: how many accepted readings to hold in memory while Redis is away,
    # before spilling to the on-disk spool.
    buffer_max: int = Field(default=100_000, gt=0)
    # A reading counts as stored (MQTT/HL7 acknowledged, device "stored") only once WAIT
    # confirms this many replicas hold it (docs/deployment.md, "Redis Sentinel").
    min_replicas: int = Field(default=0, ge=0, le=16)

    @model_validator(mode="after")
    def _wait_needs_one_master(self) -> RedisConfig:
        if self.min_replicas and self.url.split("://", 1)[0].endswith("+cluster"):
            raise ValueError("min_replicas needs one master to WAIT on: use it with a single "
                             "server or redis+sentinel://, not redis+cluster://")
        if self.min_replicas and self.url == "embedded":
            raise ValueError("min_replicas needs replicas: the embedded server has none, so no "
                             "reading would ever count as stored")
        return self
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


class MqttConfig(_Model):
    """[mqtt] — broker URL, client identity and protocol version."""

    url: MqttUrl = "embedded"
    client_id: str = ""  # default: vitalwatch-<role>-<host>-<pid-stable suffix>
    version: Literal["5", "3.1.1"] = "5"
    shared_group: str = ""  # non-empty: subscribe via $share/<group>/<topic> (MQTT v5)
    session_expiry_s: int = Field(default=3600, ge=0)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    alerts_topic: str = "vitalwatch/alerts"  # outbound alert events for pagers
    silence_s: float = Field(default=10, gt=0)  # an MQTT device silent this long is offline
    # Filters watched for topics no device owns (→ rejects `unknown_topic`); None = the first
    # level of each device topic + "/#" when one process runs all MQTT devices; [] = off.
    watch_topics: list[Annotated[str, Field(min_length=1)]] | None = None
    # unacknowledged deliveries in flight (MQTT 5 Receive Maximum, ≤ 65535): also how many
    # messages ingest holds in memory while Redis refuses writes (flow control); redeliveries
    # are recognised whatever their number (the writer checks them against the streams)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)


class ArchiveConfig(_Model):
    """[archive] — durable store of finished sessions and the audit log."""

    url: str = "sqlite:///data/archive.db"
    retention_days: int = Field(default=3650, gt=0)
    # readings/alerts of a session that reach Redis after it was archived (ingest batching,
    # held MQTT messages after an outage) are copied in for this long after archiving
    late_window_min: float = Field(default=30, ge=0)


class RemsSettingConfig(_Model):
    """[rems.setting] — the healthcare setting printed on every REMS Patient Monitoring Form."""

    name: str = ""  # default: clinic.name
    address1: str = ""
    address2: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""


class RemsConfig(_Model):
    """[rems] — the esketamine (Spravato) REMS Patient Monitoring Form (docs/rems.md)."""

    # the program asks for the form within 7 days of the treatment session
    due_days: int = Field(default=7, ge=1, le=60)
    setting: RemsSettingConfig = RemsSettingConfig()


class ResearchConfig(_Model):
    """[research] — multi-session research CSV exports (docs/reports.md)."""

    pseudonym_key_file: str = ""  # default: <data.dir>/pseudonym-key (32 random bytes, created once)


class DataConfig(_Model):
    """[data] — where embedded servers, spools and logs keep their files."""

    dir: str = "data"


class LoggingConfig(_Model):
    """[logging]"""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class MetricsConfig(_Model):
    """[metrics] — Prometheus `/metrics` of `ingest` and `alerts` (the dashboard serves it on
    its own port). Port 0: no listener (`--metrics-port` overrides). docs/operations.md."""

    host: str = "127.0.0.1"  # "0.0.0.0" to be scraped from another host (then a token is needed)
    ingest_port: int = Field(default=0, ge=0, le=65535)
    alerts_port: int = Field(default=0, ge=0, le=65535)


class DashboardConfig(_Model):
    """[dashboard]"""

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=0, le=65535)
    idle_logoff_min: float = Field(default=15, gt=0)
    secure_cookies: bool = False  # set true behind the TLS proxy
    secret_file: str = ""  # default: <data.dir>/dashboard-secret
    # Sign-in limits (monitor/accounts/throttle.py): free failures per (name, source), then
    # backoff from login_backoff_s doubling up to lockout_min; per name over unknown sources;
    # per source over all names.
    lockout_failures: int = Field(default=5, gt=0)
    lockout_min: float = Field(default=15, gt=0)
    login_backoff_s: float = Field(default=30, gt=0)
    login_account_failures: int = Field(default=20, gt=0)
    login_account_backoff_max_s: float = Field(default=60, gt=0)
    login_source_failures: int = Field(default=30, gt=0)
    login_check_workers: int = Field(default=1, ge=1, le=8)  # threads hashing passwords
    login_check_queue: int = Field(default=16, ge=0, le=1000)  # checks waiting; beyond: "busy"
    max_body_kb: int = Field(default=1024, gt=0)  # any request body (sign-in form: 16 KiB)
    ws_messages_per_s: float = Field(default=5, gt=0)  # from one tab (burst 4× that); beyond: closed
    ws_per_session: int = Field(default=12, gt=0)  # open live sockets (tabs) per sign-in or token
    # Origins allowed to open /ws/live besides the dashboard's own (scheme://host[:port]).
    allowed_origins: list[str] = Field(default_factory=list)
    # Proxies whose X-Forwarded-For / -Proto is believed (uvicorn forwarded_allow_ips): the
    # client address is what sign-in limits count by. "*" only when nothing but the proxy
    # can reach the dashboard (docker compose).
    forwarded_allow_ips: str = "127.0.0.1"
    stale_s: float = Field(default=5, gt=0)  # a non-BP value older than this looks stale on screen


class DeviceConfig(_Model):
    """[[rooms.devices]]"""

    id: Id
    protocol: str
    transport: Literal["serial", "mqtt", "mllp"]
    port: str | None = None
    baudrate: int | None = Field(default=None, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1  # type: ignore[valid-type]  # PEP 586 has no float literals; pydantic checks it
    cycle_s: float | None = Field(default=None, gt=0)
    # Optional cycle per session phase for nibp-un300, e.g. {dosing = 300, observation = 900}.
    cycle_by_phase_s: dict[str, Annotated[float, Field(gt=0)]] | None = None
    topic: str | None = None
    status_topic: str | None = None  # device-provided online/offline (last will) topic
    silence_s: float | None = Field(default=None, gt=0)
    # HL7 devices: matched to OBX-18, else MSH-3, else PV1-3 of the messages ([hl7] listen)
    source: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _transport_fields(self) -> DeviceConfig:
        if self.transport != "mllp" and self.source is not None:
            raise _field_error("source", "only an HL7 device (transport = \"mllp\") has a source")
        if self.transport == "mllp":
            if self.protocol not in PROTOCOLS_MLLP:
                raise _field_error("protocol", f"unknown MLLP protocol {self.protocol!r}; expected hl7")
            if not self.source or not self.source.strip():
                raise _field_error("source", "an HL7 device needs a source (its OBX-18, MSH-3 or PV1-3 value)")
            if self.port is not None or self.topic is not None:
                raise _field_error("port" if self.port is not None else "topic",
                                   "an HL7 device has neither port nor topic: it sends to [hl7] listen")
            if self.cycle_s or self.cycle_by_phase_s:
                raise _field_error("cycle_s", "only a nibp-un300 device has a measurement cycle")
            return self
        serial = self.transport == "serial"
        known = PROTOCOLS_SERIAL if serial else PROTOCOLS_MQTT
        if self.protocol not in known:
            raise _field_error("protocol", f"unknown {'serial' if serial else 'MQTT'} protocol {self.protocol!r}; "
                                           f"expected one of {', '.join(known)}")
        if serial:
            if not self.port:
                raise _field_error("port", "a serial device needs a port")
            if self.topic is not None:
                raise _field_error("topic", "a serial device has no topic")
        else:
            if not self.topic:
                raise _field_error("topic", "an MQTT device needs a topic")
            if any(c in self.topic for c in "+#"):
                raise _field_error("topic", "a device topic may not contain wildcards")
            if self.port is not None:
                raise _field_error("port", "an MQTT device has no serial port")
        if self.protocol != "nibp-un300" and (self.cycle_s or self.cycle_by_phase_s):
            raise _field_error("cycle_s", "only a nibp-un300 device has a measurement cycle")
        return self

    @property
    def default_baudrate(self) -> int:
        """The configured baud rate, or the protocol's documented one."""
        return self.baudrate or (4800 if self.protocol == "nibp-un300" else 9600)

    @property
    def nibp_cycle_s(self) -> float:
        """NIBP measurement cycle (protocol default 300 s)."""
        return self.cycle_s or 300.0


class Hl7OutboundConfig(_Model):
    """[hl7.outbound] — ORU^R01 to an EHR or interface engine, from the durable outbox."""

    url: str  # mllp://host:port
    on: Literal["session_end", "live"] = "session_end"
    sending_application: str = "VITALWATCH"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    timeout_s: float = Field(default=10, gt=0)  # wait this long for the receiver's ACK
    max_obx: int = Field(default=2000, ge=10, le=100_000)  # a longer session is split into several messages
    # Sessions archived within this window are sent when outbound is first switched on (or
    # a sender was down): older ones are left alone.
    backfill_h: float = Field(default=24, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^mllp://[^/:]+:\d+/?$", v):
            raise ValueError("must be mllp://host:port")
        return v


class Hl7Config(_Model):
    """[hl7] — the inbound MLLP listener for every HL7 device, and outbound ORU^R01."""

    listen: str | None = None  # "host:port"; no listener without it
    silence_s: float = Field(default=30, gt=0)  # an HL7 device with no valid reading this long is silent
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_connections: int = Field(default=500, ge=1)
    idle_timeout_s: float = Field(default=600, gt=0)  # close a connection that sends nothing this long
    outbound: Hl7OutboundConfig | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            host, _, port = v.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("must be host:port, e.g. 0.0.0.0:2575")
        return v


class FhirConfig(_Model):
    """[fhir] — optional: POST each ended session as a transaction Bundle to a FHIR server."""

    url: str | None = None  # the server's base URL (https://…/fhir); nothing is sent without it
    timeout_s: float = Field(default=15, gt=0)
    # identifier system of the patient ids (your MRN system URI); default urn:vitalwatch:<clinic>:patient
    patient_system: str = ""
    backfill_h: float = Field(default=24, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class RoomConfig(_Model):
    """[[rooms]]"""

    id: Id
    name: str = ""
    devices: list[DeviceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_devices(self) -> RoomConfig:
        _no_duplicates([d.id for d in self.devices], "devices")
        return self


class AlarmSpec(_Model):
    """Limits for one metric: low/high, priority, condition delay, clear hysteresis."""

    low: float | None = None
    high: float | None = None
    priority: Priority | None = None
    delay_s: float | None = Field(default=None, ge=0, le=300)
    hysteresis: float | None = Field(default=None, ge=0)
    latching: bool | None = None

    @model_validator(mode="after")
    def _order(self) -> AlarmSpec:
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise _field_error("low", f"low ({self.low:g}) must be below high ({self.high:g})")
        return self

    def merged(self, over: AlarmSpec | None) -> AlarmSpec:
        """This spec with `over`'s set fields laid on top, field by field."""
        if over is None:
            return self
        data = self.model_dump()
        data.update({k: v for k, v in over.model_dump().items() if v is not None})
        # construct, not validate: the caller checks low < high and names the right path
        return AlarmSpec.model_construct(**data)


MetricAlarms = dict[str, AlarmSpec]


class ReminderProtocol(_Model):
    """A dosing protocol's reminder timeline, minutes from the first dose event."""

    bp_checks_min: list[float] = Field(default_factory=lambda: [40.0])
    observe_min: float = Field(default=120, gt=0)
    bp_tolerance_min: float = Field(default=5, ge=0)


TECHNICAL_CONDITIONS = (
    "sensor_off", "no_sensor", "poor_signal", "measurement_failed", "device_alarm",
    "low_battery", "silent", "offline", "degraded", "engine", "not_stored",
    "broker",
)


class TechnicalSpec(_Model):
    """A technical alarm condition's priority and condition delay."""

    priority: Priority | None = None
    delay_s: float | None = Field(default=None, ge=0, le=300)


TECHNICAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "sensor_off": {"priority": "medium", "delay_s": 5},
    "no_sensor": {"priority": "medium", "delay_s": 5},
    "poor_signal": {"priority": "low", "delay_s": 10},
    "measurement_failed": {"priority": "low", "delay_s": 0},
    "device_alarm": {"priority": "low", "delay_s": 0},
    "low_battery": {"priority": "low", "delay_s": 0},
    "silent": {"priority": "medium", "delay_s": 0},
    "offline": {"priority": "medium", "delay_s": 0},
    "degraded": {"priority": "high", "delay_s": 0},  # clinic-wide: ingest not running (monitor/alarms/clinic.py)
    "engine": {"priority": "high", "delay_s": 0},  # clinic-wide: rooms no alert worker evaluates
    # clinic-wide: readings accepted, not stored (alarms/clinic.py, outage.py). The writers
    # already wait 3 s before they call it stalled; 2 s more keeps the first storage record
    # after an outage (its backlog flushing) from raising it again.
    "not_stored": {"priority": "high", "delay_s": 2},
    # clinic-wide: the MQTT broker unreachable (alarms/clinic.py `broker_down`): the adapters'
    # links have been down 2 s already; 1 s more lets a broker that restarts at once go unseen
    "broker": {"priority": "high", "delay_s": 1},
}


class AlertsConfig(_Model):
    """[alerts] — engine behaviour beyond the limits themselves."""

    latching: dict[str, bool] = Field(
        default_factory=lambda: {"high": True, "medium": False, "low": False}
    )
    escalate_after_s: float = Field(default=120, gt=0)
    pause_max_s: float = Field(default=120, gt=0, le=120)
    owner_ttl_s: float = Field(default=5, gt=0)
    heartbeat_stale_s: float = Field(default=10, gt=0)
    webhook_url: str = ""
    webhook_timeout_s: float = Field(default=3, gt=0)
    # A continuous device (oximeter, multi-parameter monitor) with no reading this long is
    # silent; an NIBP device gets its longest cycle plus nibp_grace_s; DeviceConfig.silence_s wins.
    quiet_s: float = Field(default=10, gt=0)
    nibp_grace_s: float = Field(default=60, ge=0)
    # A station screen whose last report is older than this is not connected.
    screen_stale_s: float = Field(default=10, gt=0)
    # A stale heartbeat older than this is forgotten (its process is not coming back).
    heartbeat_forget_s: float = Field(default=600, gt=0)
    # Per technical condition: priority and condition delay; merged over TECHNICAL_DEFAULTS.
    technical: dict[str, TechnicalSpec] = Field(default_factory=dict)
    reminder_priority: Priority = "low"
    protocols: dict[str, ReminderProtocol] = Field(
        default_factory=lambda: {
            "esketamine": ReminderProtocol(bp_checks_min=[40.0], observe_min=120),
            "iv-ketamine": ReminderProtocol(bp_checks_min=[10, 20, 30, 40, 55, 70], observe_min=120),
        }
    )

    @field_validator("technical")
    @classmethod
    def _known_technical(cls, v: dict[str, TechnicalSpec]) -> dict[str, TechnicalSpec]:
        for name in v:
            if name not in TECHNICAL_CONDITIONS:
                raise _FieldError(name, f"unknown technical condition {name!r}; expected one of "
                                        f"{', '.join(TECHNICAL_CONDITIONS)}")
        return v

    @field_validator("latching")
    @classmethod
    def _latching_priorities(cls, v: dict[str, bool]) -> dict[str, bool]:
        for name in v:
            if name not in PRIORITIES:
                raise _FieldError(name, f"unknown priority {name!r}; expected high, medium or low")
        return v

    def technical_spec(self, condition: str) -> tuple[str, float]:
        """(priority, delay_s) of a technical condition: TECHNICAL_DEFAULTS ← [alerts.technical]."""
        base = TECHNICAL_DEFAULTS[condition]
        over = self.technical.get(condition)
        priority = (over.priority if over and over.priority else None) or base["priority"]
        delay_s = over.delay_s if over and over.delay_s is not None else base["delay_s"]
        return priority, float(delay_s)


DEFAULT_ALARMS: dict[str, dict[str, Any]] = {
    "hr": {"low": 50, "high": 120, "priority": "medium", "delay_s": 6, "hysteresis": 3},
    "spo2": {"low": 90, "priority": "high", "delay_s": 15, "hysteresis": 1},
    "sbp": {"low": 90, "high": 180, "priority": "high", "delay_s": 0, "hysteresis": 5},
    "dbp": {"low": 50, "high": 110, "priority": "medium", "delay_s": 0, "hysteresis": 3},
    "map": {"low": 60, "high": 130, "priority": "medium", "delay_s": 0, "hysteresis": 3},
    "rr": {"low": 8, "high": 30, "priority": "medium", "delay_s": 15, "hysteresis": 1},
}


class AlarmsConfig(_Model):
    """[alarms] — clinic defaults and per-room overrides, per metric."""

    defaults: MetricAlarms = Field(default_factory=dict)
    rooms: dict[str, MetricAlarms] = Field(default_factory=dict)

    @field_validator("defaults")
    @classmethod
    def _known_metrics(cls, v: MetricAlarms) -> MetricAlarms:
        _known(v)
        return v

    @field_validator("rooms")
    @classmethod
    def _known_room_metrics(cls, v: dict[str, MetricAlarms]) -> dict[str, MetricAlarms]:
        for room, specs in v.items():
            _known(specs, prefix=f"{room}.")
        return v


class Config(_Model):
    """The whole validated configuration."""

    clinic: ClinicConfig
    redis: RedisConfig = RedisConfig()
    mqtt: MqttConfig = MqttConfig()
    archive: ArchiveConfig = ArchiveConfig()
    data: DataConfig = DataConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    alerts: AlertsConfig = AlertsConfig()
    rooms: list[RoomConfig] = Field(default_factory=list)
    alarms: AlarmsConfig = AlarmsConfig()
    hl7: Hl7Config = Hl7Config()
    fhir: FhirConfig = FhirConfig()
    rems: RemsConfig = RemsConfig()
    research: ResearchConfig = ResearchConfig()
    source: str = Field(default="", exclude=True)  # the file it came from

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _no_duplicates([r.id for r in self.rooms], "rooms")
        seen_devices: set[str] = set()
        for ri, r in enumerate(self.rooms):
            for di, d in enumerate(r.devices):
                if d.id in seen_devices:  # name the second occurrence: that is the mistake
                    raise _path_error(
                        f"rooms[{ri}].devices[{di}].id",
                        f"duplicate device id {d.id!r} (device ids are clinic-wide)",
                    )
                seen_devices.add(d.id)
        topics = [d.topic for r in self.rooms for d in r.devices if d.topic]
        if len(set(topics)) != len(topics):
            dup = next(t for t in topics if topics.count(t) > 1)
            raise _path_error("rooms", f"two devices share the MQTT topic {dup!r}")
        _check_hl7(self)
        room_ids = {r.id for r in self.rooms}
        for room in self.alarms.rooms:
            if room not in room_ids:
                raise _path_error(f"alarms.rooms.{room}", f"no room with id {room!r}")
        for room in room_ids:  # a room override must still give low < high after merging
            for metric in METRICS:
                spec = self.alarm_spec(room, metric)
                if spec and spec.low is not None and spec.high is not None and spec.low >= spec.high:
                    raise _path_error(
                        f"alarms.rooms.{room}.{metric}",
                        f"low ({spec.low:g}) must be below high ({spec.high:g}) after merging",
                    )
        return self

    # --- convenience -------------------------------------------------------------------
    def room(self, room_id: str) -> RoomConfig:
        """The room with this id (KeyError if none)."""
        for r in self.rooms:
            if r.id == room_id:
                return r
        raise KeyError(room_id)

    def devices(self) -> list[tuple[RoomConfig, DeviceConfig]]:
        """Every (room, device) pair in config order."""
        return [(r, d) for r in self.rooms for d in r.devices]

    def alarm_spec(self, room: str, metric: str) -> AlarmSpec | None:
        """Built-in default ← [alarms.defaults] ← [alarms.rooms.<room>], field by field."""
        base = DEFAULT_ALARMS.get(metric)
        spec = AlarmSpec.model_validate(base) if base else None
        for layer in (self.alarms.defaults.get(metric), self.alarms.rooms.get(room, {}).get(metric)):
            if layer is not None:
                spec = layer if spec is None else spec.merged(layer)
        return spec

    @property
    def data_dir(self) -> Path:
        """The data directory, relative paths resolved against the working directory."""
        return Path(self.data.dir)


class _FieldError(ValueError):
    """A validation error located at a sub-field of the model being validated."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(msg)
        self.path = path


def _field_error(field_name: str, msg: str) -> _FieldError:
    return _FieldError(field_name, msg)


def _path_error(path: str, msg: str) -> _FieldError:
    return _FieldError("@" + path, msg)  # "@" = absolute path from the root


def _check_hl7(cfg: Config) -> None:
    """HL7 devices need the listener, and each source names one device."""
    seen: dict[str, str] = {}
    for ri, r in enumerate(cfg.rooms):
        for di, d in enumerate(r.devices):
            if d.transport != "mllp":
                continue
            if cfg.hl7.listen is None:
                raise _path_error("hl7.listen", f"device {d.id!r} sends HL7 but [hl7] listen is not set")
            assert d.source is not None
            if d.source in seen:
                raise _path_error(f"rooms[{ri}].devices[{di}].source",
                                  f"source {d.source!r} is already device {seen[d.source]!r}'s")
            seen[d.source] = d.id


def _no_duplicates(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise _FieldError(f"{what}[{i}].id", f"duplicate id {x!r}")
        seen.add(x)


def _known(specs: Mapping[str, Any], prefix: str = "") -> None:
    for metric in specs:
        if metric not in METRICS:
            raise _FieldError(
                f"{prefix}{metric}", f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}"
            )


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    """(field path, problem) for one pydantic error, our located errors included."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic puts union/literal branch names into loc; keep only real field names
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool", "none"))))
    path = _format_loc(loc)
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _FieldError):
        if inner.path.startswith("@"):
            return inner.path[1:], str(inner)
        return (f"{path}.{inner.path}" if path else inner.path), str(inner)
    kind = err["type"]
    if kind == "extra_forbidden":
        return path, "unknown key"
    if kind == "missing":
        return path, "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "input" in err and kind.endswith("_type"):
        got = type(err["input"]).__name__
        return path, f"wrong type: {msg.lower()} (got {got} {err['input']!r})"
    return path, msg


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML mapping; raise ConfigError on the first problem."""
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as e:
        errs = e.errors()
        path, problem = _describe(errs[0])
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        raise ConfigError(source, path, problem + more) from None


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """CONTRACT.md's environment overrides, applied to the raw mapping before validation."""
    out = dict(data)
    for var, section in (
        ("VITALWATCH_REDIS_URL", "redis"),
        ("VITALWATCH_MQTT_URL", "mqtt"),
        ("VITALWATCH_ARCHIVE_URL", "archive"),
    ):
        if env.get(var):
            sect = dict(out.get(section) or {})
            sect["url"] = env[var]
            out[section] = sect
    if env.get("VITALWATCH_REDIS_MIN_REPLICAS"):  # docker-compose ha profile (deploy/compose-ha.yml)
        v = env["VITALWATCH_REDIS_MIN_REPLICAS"].strip()
        out["redis"] = {**(out.get("redis") or {}), "min_replicas": int(v) if v.isdigit() else v}
    return out


def config_path(explicit: str | None, env: Mapping[str, str]) -> str:
    """-c/--config, else $VITALWATCH_CONFIG, else config/vitalwatch.toml."""
    return explicit or env.get("VITALWATCH_CONFIG") or DEFAULT_PATH


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from `env` and validate one config file (the CLI passes its environment;
    without `env` the process environment is used)."""
    env = os.environ if env is None else env
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    return parse_config(apply_env(data, env), source=path)
