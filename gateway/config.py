"""Typed configuration: one YAML file decoded into msgspec Structs, loaded once.

Unknown keys are rejected with the offending path. String values may reference
environment variables as ``${NAME}`` or ``${NAME:-default}``; substitution happens on
parsed scalars (never on raw YAML text), so a secret containing ``:`` or ``#`` cannot
change the document's structure.

Every problem is reported as ``<path>: <message>`` (``providers[0].base_url: expected a
URL``). :func:`load_config` raises :class:`ConfigError` holding all of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from exporter.config import ExporterConfig
from exporter.store.config import StoreConfig, UiConfig
from gateway.access.config import AccessRule, AuthConfig, RateLimitRule
from gateway.mcp.config import AccessMcpRule, McpServerConfig
from gateway.responses.config import ResponsesConfig
from gateway.routing.config import VirtualModelConfig
from gateway.telemetry.wire import TracingConfig, substitute_env
from gateway.upstream.tls import ca_file_problem

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "MetricsConfig",
    "ProviderConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
]

MIB = 1024 * 1024


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` lists ``path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One upstream provider; its models are exposed as ``<name>/<model>``."""

    name: str
    base_url: str
    models: list[str]
    type: Literal["openai", "anthropic"] = "openai"
    api_key: str | None = None
    timeout_s: float = 60.0  # read timeout: the longest silence tolerated between bytes
    connect_timeout_s: float = 5.0
    max_connections: int = 1024  # cap on in-flight requests to this provider
    headers: dict[str, str] = {}
    ca_file: str | None = None  # PEM CA certificate(s) trusted besides the system's (gateway/upstream/tls.py)
    # The provider is skipped unless this environment variable is set and non-empty, so one
    # example file can offer a real provider only to users who have its key.
    enabled_if_env: str | None = None
    # /v1/responses: passed through ("native") or translated through chat completions;
    # unset: native for api.openai.com, translated otherwise. Only for type openai.
    responses: Literal["native", "translated"] | None = None


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Process-level knobs of the HTTP server."""

    max_body_bytes: int = 32 * MIB
    drain_timeout_s: float = 30.0  # in-flight requests get this long after SIGTERM
    shutdown_delay_s: float = 0.0  # /readyz answers 503 this long before the listener closes
    upstream_client: Literal["pyreqwest", "aiohttp"] = "pyreqwest"
    body_timeout_s: float = 30.0  # the whole request body must arrive within this (else 408)
    # granian (hyper) closes a connection whose request head takes longer; on a keep-alive
    # connection it also bounds the idle time between requests: keep it above the idle timeout
    # of the load balancer in front, or that balancer sees connections reset under it.
    header_timeout_s: float = 30.0


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """NATS shared by the fleet: rate-limit counter sync and the config KV bucket.

    Absent: rate limits are per process and config comes from the file only."""

    nats_url: str
    subject_prefix: str = "gateway"  # rate-limit deltas travel on <prefix>.ratelimit
    config_bucket: str | None = "gateway-config"  # NATS KV bucket every gateway watches; null: off
    config_key: str = "gateway.yaml"


class ReloadConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Live reload of the config file (SIGHUP always reloads it)."""

    watch_file: bool = True
    poll_interval_s: float = 2.0


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Prometheus ``/metrics`` options."""

    enabled: bool = True
    metadata_label_keys: list[str] = []  # x-tfy-metadata keys that become labels (bounded)
    prices_file: str | None = None  # USD per million tokens; default table ships with the gateway
    prices: dict[str, dict[str, float]] = {}
    max_series: int = 500  # label sets per metric and worker; later ones count under __other__
    require_auth: bool = False  # GET /metrics needs an API key or JWT, like the API


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The whole file. Sections other issues add hang off this root."""

    providers: list[ProviderConfig] = []
    server: ServerConfig = ServerConfig()
    auth: AuthConfig | None = None
    access: list[AccessRule] | None = None
    rate_limiting: list[RateLimitRule] = []
    virtual_models: list[VirtualModelConfig] = []
    tracing: TracingConfig = TracingConfig()
    exporter: ExporterConfig = ExporterConfig()
    metrics: MetricsConfig = MetricsConfig()
    cluster: ClusterConfig | None = None
    reload: ReloadConfig = ReloadConfig()
    mcp_servers: list[McpServerConfig] = []
    access_mcp: list[AccessMcpRule] | None = None
    responses: ResponsesConfig = ResponsesConfig()
    store: StoreConfig = StoreConfig()
    ui: UiConfig = UiConfig()

    def provider_names(self) -> set[str]:
        return {p.name for p in self.providers}

    def model_ids(self) -> list[str]:
        """Every concrete model id, ``<provider>/<model>``, in config order."""
        return [f"{p.name}/{m}" for p in self.providers for m in p.models]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- decoding with paths ----------------------------------------------------------------------

_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def _convert_error(err: msgspec.ValidationError, base: str) -> str:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` into ``a[0].b: expected int, got str``."""
    m = _AT.match(str(err))
    assert m is not None
    message, sub = m.group(1), m.group(2) or ""
    path = (base + sub).lstrip(".") or "<root>"
    message = message.replace("`", "")
    if message.startswith("Object contains unknown field"):
        field = message.split(" ")[-1]
        return f"{_join(path if path != '<root>' else '', field)}: unknown key"
    if message.startswith("Object missing required field"):
        field = message.split(" ")[-1]
        return f"{_join(path if path != '<root>' else '', field)}: required key is missing"
    return f"{path}: {message[0].lower()}{message[1:]}"


def _convert_sections(raw: dict[str, Any], problems: list[str]) -> GatewayConfig | None:
    """Decode section by section (and list items one by one) so that one bad value does not
    hide the others: msgspec stops at the first error of a single ``convert`` call."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(GatewayConfig)}
    for key in raw:
        if key not in fields:
            problems.append(f"{key}: unknown key")
    before = len(problems)
    for key in fields:
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, list):
            for i, item in enumerate(value):
                _try_convert({key: [item]}, GatewayConfig, f"{key}[{i}]", problems, strip=f".{key}[0]")
        else:
            _try_convert({key: value}, GatewayConfig, "", problems)
    if len(problems) > before or problems:
        return None
    try:
        return msgspec.convert(raw, GatewayConfig, strict=False)
    except msgspec.ValidationError as exc:  # pragma: no cover - the per-section pass found it
        problems.append(_convert_error(exc, ""))
        return None


def _try_convert(value: Any, typ: type, base: str, problems: list[str], strip: str = "") -> None:
    try:
        msgspec.convert(value, typ, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if strip:
            text = text.replace(f"`${strip}", "`$")
        problems.append(_convert_error(msgspec.ValidationError(text), base))


# --- semantic checks ---------------------------------------------------------------------------


def _is_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


SemanticCheck = Callable[[GatewayConfig], Iterator[str]]


def _check_core(cfg: GatewayConfig) -> Iterator[str]:
    seen: set[str] = set()
    for i, p in enumerate(cfg.providers):
        at = f"providers[{i}]"
        if not p.name or "/" in p.name:
            yield f"{at}.name: must be non-empty and contain no '/'"
        if p.name in seen:
            yield f"{at}.name: duplicate provider name {p.name!r}"
        seen.add(p.name)
        if not _is_url(p.base_url):
            yield f"{at}.base_url: expected a URL"
        if not p.models:
            yield f"{at}.models: list at least one model"
        for j, m in enumerate(p.models):
            if not m:
                yield f"{at}.models[{j}]: must be non-empty"
        if p.timeout_s <= 0:
            yield f"{at}.timeout_s: must be > 0"
        if p.connect_timeout_s <= 0:
            yield f"{at}.connect_timeout_s: must be > 0"
        if p.max_connections < 1:
            yield f"{at}.max_connections: must be >= 1"
        if p.ca_file is not None and (problem := ca_file_problem(p.ca_file)):
            yield f"{at}.ca_file: {problem}"
    s = cfg.server
    if s.max_body_bytes < 1024:
        yield "server.max_body_bytes: must be >= 1024"
    if s.drain_timeout_s < 0:
        yield "server.drain_timeout_s: must be >= 0"
    if s.shutdown_delay_s < 0:
        yield "server.shutdown_delay_s: must be >= 0"
    if s.body_timeout_s <= 0:
        yield "server.body_timeout_s: must be > 0"
    if s.header_timeout_s <= 0:
        yield "server.header_timeout_s: must be > 0"
    if cfg.cluster is not None and not _is_url(cfg.cluster.nats_url, ("nats", "tls")):
        yield "cluster.nats_url: expected a nats:// or tls:// URL"


def _check_metrics(cfg: GatewayConfig) -> Iterator[str]:
    from gateway.metrics import PriceError, PriceTable

    try:
        PriceTable.from_config(cfg.metrics.prices_file, cfg.metrics.prices)
    except PriceError as exc:
        yield f"metrics.prices: {exc}"
    if cfg.metrics.max_series < 1:
        yield "metrics.max_series: must be >= 1"
    if cfg.metrics.require_auth and cfg.auth is None:
        yield "metrics.require_auth: needs an 'auth' section (API keys or JWT issuers)"


def _semantic_checks() -> list[SemanticCheck]:
    # Imported here: each capability owns the checks of its own section.
    from exporter.config import check_exporter
    from exporter.store.config import check_store
    from gateway.access.config import check_access
    from gateway.mcp.config import check_mcp
    from gateway.responses.config import check_responses
    from gateway.routing.config import check_routing

    return [
        _check_core,
        check_access,
        check_routing,
        check_exporter,
        _check_metrics,
        check_mcp,
        check_responses,
        check_store,
    ]


# --- entry points --------------------------------------------------------------------------------


def parse_config(text: str, env: dict[str, str] | None = None, source: str = "<config>") -> GatewayConfig:
    """Parse YAML text into a validated :class:`GatewayConfig`.

    Raises:
        ConfigError: with every problem found, each prefixed by its path.
    """
    env = dict(os.environ) if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["<root>: expected a mapping of sections"])
    problems: list[str] = []
    raw = _drop_disabled_providers(raw, env)
    raw = substitute_env(raw, "", env, problems)
    if problems:
        raise ConfigError(problems)
    cfg = _convert_sections(raw, problems)
    if cfg is None:
        raise ConfigError(problems)
    for check in _semantic_checks():
        problems.extend(check(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def _drop_disabled_providers(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    providers = raw.get("providers")
    if not isinstance(providers, list):
        return raw
    kept = [
        p
        for p in providers
        if not (
            isinstance(p, dict)
            and isinstance(p.get("enabled_if_env"), str)
            and not env.get(p["enabled_if_env"])
        )
    ]
    return {**raw, "providers": kept}


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> GatewayConfig:
    """Read and validate a config file; raises :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, env, source=str(p))
