"""Settings from the environment (prefix `UWF_`), with the embedded default for everything."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from uwf.connectors import NetworkPolicy

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Process settings. Every field can be set as `UWF_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="UWF_", extra="ignore")

    home: Path = Field(default=Path(".uwf"), description="Where the embedded default keeps state")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite at $UWF_HOME/uwf.db"
    )
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(
        default=None, description="How UWF is reached from outside; default http://host:port"
    )
    admin_key: SecretStr | None = None
    secret_key: SecretStr | None = Field(
        default=None,
        description="32-byte URL-safe base64 key encrypting secrets at rest; "
        "default: generated on first start in $UWF_HOME/secret.key",
    )
    metadata_dir: Path | None = Field(
        default=None, description="Metadata applied on first start; default examples/metadata"
    )
    worker_concurrency: int = Field(default=16, ge=1, le=1024)
    lease_seconds: float = Field(default=30.0, gt=1)
    poll_interval: float = Field(default=0.5, gt=0)
    drain_seconds: float = Field(
        default=10.0, ge=0, description="On shutdown, how long running executions may finish"
    )
    governor_url: str | None = Field(
        default=None,
        description="Where the governor keeps budgets shared by all workers: a redis:// URL; "
        "default: the Pipe DB when it is PostgreSQL, else memory (one process)",
        pattern=r"^rediss?://",
    )
    governor_lease_seconds: float = Field(
        default=30.0,
        gt=1,
        description="How long a dead worker's concurrency slot stays taken before it frees",
    )
    log_level: str = "info"
    # Callers of the API (docs/security.md).
    api_rate_limit: float = Field(
        default=50.0, gt=0, description="Requests a second each caller may make, per process"
    )
    api_rate_burst: int = Field(default=100, ge=1, description="Requests a caller may burst")
    api_max_body_bytes: int = Field(default=1_048_576, ge=1, description="Largest request body")
    api_max_json_depth: int = Field(default=32, ge=1, description="Deepest JSON nesting accepted")
    oidc_issuer: str | None = Field(
        default=None, description="Accept JWT bearer tokens of this OIDC issuer (`iss`)"
    )
    oidc_audience: str | None = Field(
        default=None, description="The `aud` those tokens must carry; required with the issuer"
    )
    oidc_jwks_url: str | None = Field(
        default=None, description="The issuer's JWKS; default: from its openid-configuration"
    )
    oidc_tenants_claim: str = "uwf_tenants"
    oidc_scope_claim: str = "scope"

    @model_validator(mode="after")
    def _oidc_needs_audience(self) -> Settings:
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("UWF_OIDC_ISSUER needs UWF_OIDC_AUDIENCE (the `aud` tokens carry)")
        return self

    allowed_hosts: str = Field(
        default="",
        description="Comma list of internal hosts outbound calls may reach: `host`, "
        "`host:port`, IP addresses, CIDR networks (everything else must be public https)",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let connections reach private and loopback addresses (on-premises CRMs)",
    )
    secret_keys_old: SecretStr | None = Field(
        default=None,
        description="Comma list of retired keys that still decrypt until `uwf secrets rotate`",
    )
    vault_addr: str | None = Field(default=None, description="HashiCorp Vault address")
    vault_token: SecretStr | None = Field(default=None, description="HashiCorp Vault token")

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.home / 'uwf.db').resolve()}"

    def network_policy(self) -> NetworkPolicy:
        """Where outbound calls may go (see `uwf.connectors.NetworkPolicy`)."""
        return NetworkPolicy.parse(self.allowed_hosts, allow_private=self.allow_private_networks)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def ensure_admin_key(self) -> tuple[str, bool]:
        """Return the admin key and whether it was generated just now.

        An unset `UWF_ADMIN_KEY` means: generate one on first start, keep it under `UWF_HOME`
        (readable by the owner only) and show it once.
        """
        if self.admin_key is not None:
            return self.admin_key.get_secret_value(), False
        path = self.home / "admin.key"
        if path.exists():
            return path.read_text().strip(), False
        self.home.mkdir(parents=True, exist_ok=True)
        key = "uwf_admin_" + secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        return key, True


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (`postgresql://…`) and pick the async driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def get_settings() -> Settings:
    return Settings()
