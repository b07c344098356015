"""The node's settings: a TOML file plus environment variables ``DERMNODE_<NAME>``.

Precedence, highest first: keyword arguments, environment variables, the TOML file, defaults.
The TOML file is ``$DERMNODE_CONFIG`` if set, else ``<home>/dermnode.toml`` if it exists; its keys
are the field names below (``ae_title = "DERMNODE"``, ``destinations = ["PACS@10.0.0.5:104"]``).
In the environment, list settings are comma lists (``DERMNODE_DESTINATIONS=PACS@pacs:104,B@b:11112``).

The home (state) folder defaults to ``~/.dermnode``; it holds the spool, the outbox and, unless
``database_url`` says otherwise, the SQLite database ``dermnode.db``.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import TomlConfigSettingsSource

from dermnode.contract import DEFAULT_VETO_THRESHOLD

CONFIG_FILE_NAME = "dermnode.toml"
DEFAULT_HOME = Path("~/.dermnode")
_DESTINATION = re.compile(r"^(?P<ae>[^@\\]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")
_toml_file: ContextVar[Path | None] = ContextVar("dermnode_toml_file", default=None)
#: Settings that are secrets: shown as "(set)" or "(not set)", never their value.
SECRET_SETTINGS = ("audit_hmac_key",)
#: Settings that are URLs: shown with any password masked.
URL_SETTINGS = ("database_url", "broker_url")

CommaList = Annotated[list[str], NoDecode]
#: Roles of web users and API tokens: read-only sees, operator also acts (requeue, retry, cancel).
WEB_ROLES = ("read-only", "operator")


@dataclass(frozen=True)
class Destination:
    """A DICOM peer: AE title, host and port, written ``AE@host:port``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``AE@host:port`` -> Destination; ValueError in words when the text is not of that form."""
    match = _DESTINATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not of the form AE@host:port (AE title of 1 to 16 characters)")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is outside 1..65535")
    return Destination(match["ae"].strip(), match["host"], port)


def check_ae_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise ValueError("an AE title may not be empty")
    if len(title) > 16:
        raise ValueError(f"AE title {title!r} has {len(title)} characters; at most 16 are allowed")
    if "\\" in title or any(ord(c) < 32 or ord(c) > 126 for c in title):
        raise ValueError(f"AE title {title!r} contains a backslash or a non-printable character")
    return title


class Settings(BaseSettings):
    """Everything the node and its workers need to know; see the module docstring for sources."""

    model_config = SettingsConfigDict(env_prefix="DERMNODE_", extra="forbid", validate_default=True)

    home: Path = DEFAULT_HOME
    ae_title: str = "DERMNODE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aes: CommaList = []
    #: SCP connection hygiene (scp_limits.py): seconds a connection may take to associate (ARTIM);
    #: seconds without data mid-PDU or on an idle association before it is closed.
    acse_timeout_seconds: float = 10.0
    network_timeout_seconds: float = 30.0
    #: Longest PDU the node announces and buffers; a longer one is aborted unread.
    max_pdu_bytes: int = 16 * 1024 * 1024
    #: Concurrent connections in all, and from one peer address; beyond them a connection is refused.
    max_associations: int = 50
    max_associations_per_peer: int = 10
    destinations: CommaList = []
    veto_destinations: CommaList = []
    quiet_seconds: float = 10.0
    broker_url: str = ""
    database_url: str = ""
    models_dir: Path | None = None
    veto_threshold: float = DEFAULT_VETO_THRESHOLD
    kos_enabled: bool = True
    for_diagnostic_use: bool = False
    clip_pretrained: str | None = None
    queue: str = "dermnode"
    gpu_queue: str | None = None
    #: DICOM TLS for the SCP: PEM certificate and key (TLS only when set); CA certificates to
    #: require and verify client certificates (see tls.py).
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_ca_certificates: Path | None = None
    #: Export over TLS to every destination: verify them against tls_ca_certificates and present
    #: tls_certificate as the client certificate when it is set.
    tls_destinations: bool = False
    #: Seconds before Redis hands an unacknowledged study (its worker died) to another worker;
    #: None = one hour with an external broker, 120 s with the embedded queue's single worker.
    visibility_timeout: float | None = None
    #: How often a worker looks for such studies to restore, in seconds.
    restore_interval: float = 10.0
    #: Export: first retry after this many seconds, doubling up to retry_max_seconds.
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    #: Give a delivery up (state "failed") after this many attempts; 0 = keep trying for ever.
    max_attempts: int = 0
    #: How often the dispatcher looks for due deliveries.
    dispatch_poll_seconds: float = 1.0
    #: How often serve's reconciler looks for complete, unanalysed studies with no live task
    #: (broker restarted, message lost) and queues them again; at most reconcile_max_requeues
    #: times per study content before it is reported as an error and left alone.
    reconcile_seconds: float = 30.0
    reconcile_max_requeues: int = 5
    log_level: str = "INFO"
    #: The operator surface (web/): HTTP address of the worklist page, REST API, /healthz,
    #: /readyz and /metrics; http_port 0 turns the HTTP server off.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: Who may use the web page and API: ``name:role:hash`` entries, role ``read-only`` or ``operator``
    #: (actions need operator), hash from ``dermnode web hash-password`` (scrypt; no passwords here).
    web_users: CommaList = []
    #: API tokens for scripts: ``name:role:sha256$<hex>`` entries from ``dermnode web make-token``.
    web_tokens: CommaList = []
    #: Hours a web login lasts.
    web_session_hours: float = 12.0
    #: GPU workers (workers/batching.py): run this many studies at once and analyse their images in
    #: shared model batches, waiting at most batch_wait_seconds for a batch to fill; 0 = one study
    #: at a time (the right choice on a CPU).
    batch_images: int = 0
    batch_wait_seconds: float = 0.05
    #: Stateless workers (workers/link.py): the node's HTTP address as workers on other hosts reach
    #: it (``http://node:8080``); empty = work on the node's host with its home and database.
    #: worker_token is the bearer token of serve's worker endpoints (both sides set the same one).
    node_url: str = ""
    worker_token: str | None = None
    #: Free disk of the home folder, in MiB, below which C-STORE answers 0xA700 (out of resources)
    #: with a reason and /readyz fails.
    disk_watermark_mb: int = 1024
    #: Days after which exported spool, outbox and result files are pruned (audited); 0 keeps them.
    retention_days: float = 30.0
    #: Sign the audit log's hash chain with HMAC-SHA256 under this key (optional; see audit_chain.py).
    audit_hmac_key: str | None = None

    @field_validator("allowed_calling_aes", "destinations", "veto_destinations", "web_users", "web_tokens",
                     mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("allowed_calling_aes")
    @classmethod
    def _allowed(cls, value: list[str]) -> list[str]:
        return [check_ae_title(title) for title in value]

    @field_validator("destinations", "veto_destinations")
    @classmethod
    def _destinations(cls, value: list[str]) -> list[str]:
        return [str(parse_destination(item)) for item in value]

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is outside 1..65535")
        return value

    @field_validator("http_port")
    @classmethod
    def _http_port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"port {value} is outside 0..65535 (0 turns the HTTP server off)")
        return value

    @field_validator("disk_watermark_mb", "retention_days", "batch_images", "batch_wait_seconds")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"may not be negative (got {value})")
        return value

    @field_validator("web_users", "web_tokens")
    @classmethod
    def _web_credentials(cls, value: list[str]) -> list[str]:
        for entry in value:
            parts = entry.split(":", 2)
            if len(parts) != 3 or not parts[0] or parts[1] not in WEB_ROLES or not parts[2]:
                raise ValueError(f"{entry.split(':', 1)[0]!r}...: an entry is name:role:hash with role "
                                 f"{' or '.join(WEB_ROLES)} (see dermnode web hash-password / make-token)")
        return value

    @field_validator("veto_threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the veto threshold is a probability, between 0 and 1 (got {value})")
        return value

    @field_validator("quiet_seconds", "retry_base_seconds", "retry_max_seconds", "dispatch_poll_seconds",
                     "visibility_timeout", "restore_interval", "reconcile_seconds", "web_session_hours")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"must be more than 0 seconds (got {value})")
        return value

    @field_validator("acse_timeout_seconds", "network_timeout_seconds")
    @classmethod
    def _scp_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be more than 0 seconds (got {value})")
        return value

    @field_validator("max_pdu_bytes")
    @classmethod
    def _max_pdu(cls, value: int) -> int:
        if not 16384 <= value < 2**32:
            raise ValueError(f"must be at least 16384 bytes and below 4 GiB (got {value})")
        return value

    @field_validator("max_associations", "max_associations_per_peer")
    @classmethod
    def _association_limit(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1 (got {value})")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.home = self.home.expanduser().absolute()
        if self.models_dir is not None:
            self.models_dir = self.models_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'dermnode.db'}"
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("DICOM TLS needs both tls_certificate and tls_private_key (PEM files), or neither")
        if self.tls_destinations and self.tls_ca_certificates is None:
            raise ValueError("tls_destinations needs tls_ca_certificates, to verify the destinations' certificates")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _toml_file.get()
        if toml_file is None:
            return init_settings, env_settings
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)

    # ------------------------------------------------------------------------ derived paths
    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def destination_list(self) -> list[Destination]:
        return [parse_destination(text) for text in self.destinations]

    @property
    def veto_destination_list(self) -> list[Destination]:
        return [parse_destination(text) for text in self.veto_destinations]


def config_path(config_file: Path | str | None = None) -> Path | None:
    """The TOML file to read: the argument, $DERMNODE_CONFIG, or <home>/dermnode.toml if present."""
    if config_file:
        return Path(config_file).expanduser()
    if os.environ.get("DERMNODE_CONFIG"):
        return Path(os.environ["DERMNODE_CONFIG"]).expanduser()
    home = Path(os.environ.get("DERMNODE_HOME") or DEFAULT_HOME).expanduser()
    candidate = home / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def load_settings(config_file: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from keyword overrides, the environment and the TOML file (see config_path).

    Raises FileNotFoundError for a named config file that does not exist and pydantic's
    ValidationError for bad values (``describe_errors`` turns it into sentences).
    """
    path = config_path(config_file)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    token = _toml_file.set(path)
    try:
        return Settings(**overrides)
    finally:
        _toml_file.reset(token)


def mask_url(url: str) -> str:
    """A database or broker URL fit to print or log: any password, and query values named like
    secrets (``sslpassword=``, ``api_token=``), replaced by ``***``.

    The password is what lies between the user's ``:`` and the last ``@``; a malformed URL (``//``
    missing, say) is masked the same way, and when in doubt more is masked rather than less.
    """
    url, question, query = url.partition("?")
    if question:
        params = [(name, "***" if _SECRET_QUERY.search(name) else value)
                  for name, _, value in (item.partition("=") for item in query.split("&"))]
        return _mask_password(url) + "?" + "&".join(f"{name}={value}" for name, value in params)
    return _mask_password(url)


_SECRET_QUERY = re.compile("pass|secret|token|key", re.IGNORECASE)


def _mask_password(url: str) -> str:
    head, at, host = url.rpartition("@")
    scheme_end = head.find("//")
    start = scheme_end + 2 if scheme_end >= 0 else head.find(":") + 1 if head.count(":") > 1 else 0
    user, colon, _ = head[start:].partition(":")
    if not at or not colon:
        return url
    return f"{head[:start]}{user}:***@{host}"


def printable_settings(settings: Settings) -> dict[str, object]:
    """Every setting by name, secrets hidden and URL passwords masked (for `config check`, logs, pages)."""
    values = settings.model_dump()
    for name in SECRET_SETTINGS:
        values[name] = "(set)" if values[name] else "(not set)"
    for name in URL_SETTINGS:
        values[name] = mask_url(values[name])
    return values


def describe_errors(error: Exception) -> list[str]:
    """One sentence per problem in a pydantic ValidationError (or the exception's text)."""
    errors = getattr(error, "errors", None)
    if errors is None:
        return [str(error)]
    lines = []
    for item in errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a dermnode setting (misspelt?)"
        given = item.get("input")
        lines.append(f"{name} (DERMNODE_{name.upper()}): {message}; got "
                     f"{(mask_url(given) if isinstance(given, str) else given)!r}")
    return lines
