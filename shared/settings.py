"""Configuration: one Settings object, read from the environment, built once and passed in.

Every variable is documented in README.md ("Configuration"). A missing or malformed
value stops start-up with a ConfigurationError that names the variable.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import ConfigurationError

DatabaseBackend = Literal["postgres", "supabase"]
MIN_KEY_LENGTH = 32
# Comma-separated in the environment; several may be active at once so keys can rotate.
ApiKeys = tuple[SecretStr, ...]
# The ECB's folder of euro foreign exchange reference rates (eurofxref-daily.xml, ...).
ECB_RATES_URL = "https://www.ecb.europa.eu/stats/eurofxref/"
_API_KEY_FIELDS = (
    "ingest_api_keys",
    "metrics_service_keys",
    "retention_api_keys",
    "privacy_api_keys",
)


class Settings(BaseModel):
    """Each setting is the environment variable of its name in capitals. A plain model,
    not pydantic-settings: reading a dozen variables is not worth a fifth of a cold
    start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    database_url: SecretStr | None = None
    """The functions' Postgres connection (postgresql://...): on Supabase, the transaction
    pooler (port 6543). Takes precedence over Supabase's HTTP API."""
    database_session_url: SecretStr | None = None
    """Retention's and erasure's: a session that holds advisory locks for a run, so the
    direct connection or the session pooler (port 5432), never the transaction pooler."""

    supabase_url: HttpUrl | None = None
    supabase_secret_key: SecretStr | None = None
    """A secret key (sb_secret_...) or the legacy service_role JWT."""

    database_pool_size: Annotated[int, Field(ge=1, le=64)] = 4
    database_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    retry_after_seconds: Annotated[int, Field(ge=1, le=3600)] = 5
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    ingest_api_keys: ApiKeys = ()
    """Bearer keys n8n presents to ingest_sms."""
    default_phone_region: str = "FR"
    """Region assumed for phone numbers written without a country code."""

    twilio_account_sid: Annotated[str, Field(pattern=r"^AC[0-9a-f]{32}$")] | None = None
    twilio_auth_token: SecretStr | None = None
    """The main account: signs callbacks without an AccountSid, and reads the API."""
    twilio_previous_auth_token: SecretStr | None = None
    """During a rotation of the main account's token, the one being retired: callbacks
    it signed are still accepted."""
    twilio_subaccounts: dict[str, tuple[SecretStr, ...]] = {}
    """Subaccounts as ACxxx:token pairs, comma-separated; ACxxx:token:previous while a
    subaccount's token rotates."""
    twilio_api_base_url: HttpUrl = HttpUrl("https://api.twilio.com")
    public_base_url: HttpUrl | None = None
    """Where Twilio reaches twilio_status; the signature covers it. Unset: only behind a
    Lambda function URL, whose own host is used; elsewhere every callback is refused."""
    reconcile_after_minutes: Annotated[int, Field(ge=1)] = 60
    reconcile_within_days: Annotated[int, Field(ge=1, le=400)] = 7
    supabase_jwt_secret: SecretStr | None = None
    """The project's legacy JWT secret: verifies HS256 access tokens."""
    supabase_jwks_url: HttpUrl | None = None
    """The project's JWKS (ES256/RS256 access tokens); default SUPABASE_URL's."""
    jwt_audience: str = "authenticated"
    metrics_service_keys: ApiKeys = ()
    """Bearer keys that may read every client's metrics (reports, back office)."""
    cors_allowed_origins: tuple[str, ...] = ()
    """Origins whose pages may call metrics from a browser (shared/cors.py), comma-separated,
    each as browsers write Origin; never '*'. Empty: no cross-origin caller."""
    reconcile_batch_size: Annotated[int, Field(ge=1, le=5000)] = 200
    reconcile_time_budget_seconds: Annotated[int, Field(ge=5, le=900)] = 240
    """A run stops asking Twilio after this long, well before the function's timeout."""

    spillover_queue_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    """The SQS queue where ingest_sms and twilio_status park verified requests while the
    database is unavailable (shared/spillover.py). Unset: they answer 503 instead."""
    sqs_endpoint_url: HttpUrl | None = None
    """Another SQS-compatible endpoint (moto's server locally); unset: AWS."""
    spillover_max_age_days: Annotated[int, Field(ge=1, le=14)] = 7
    """How long a parked request may stay queued, the dead-letter queue included: the
    queues' retention in serverless.yml. An erasure receipt tells it."""

    archive_bucket: str | None = None
    """The S3 bucket that holds archived SMS (versioning on; see serverless.yml)."""
    archive_prefix: str = "agent_sms/"
    s3_endpoint_url: HttpUrl | None = None
    """Another S3-compatible endpoint (moto's server locally); unset: AWS."""
    archive_index_secret: SecretStr | None = None
    """Keys the HMAC that indexes archived phone numbers. Never change it: the index
    would no longer find the objects that hold a number."""
    archive_after_days: Annotated[int, Field(ge=1)] = 365
    archive_expire_after_days: Annotated[int, Field(ge=1)] = 1095
    archive_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    pending_events_max_age_days: Annotated[int, Field(ge=1)] = 30
    """Status reports for an SMS never recorded are dropped after this long."""
    retention_time_budget_seconds: Annotated[int, Field(ge=5, le=900)] = 600
    """A run archives or expires no new object after this long; the next run resumes."""
    retention_api_keys: ApiKeys = ()
    """Bearer keys the scheduler presents to retention."""
    privacy_api_keys: ApiKeys = ()
    """Bearer keys the privacy team presents to erase."""

    ecb_rates_url: HttpUrl = HttpUrl(ECB_RATES_URL)
    """Where the exchange-rate job reads the ECB's reference rates (functions/billing):
    the folder that holds eurofxref-daily.xml and eurofxref-hist-90d.xml. https, or plain
    http to a loopback stand-in (tools/fake_ecb.py)."""
    billing_time_zone: str = "Europe/Paris"
    """The IANA time zone whose calendar months a statement covers. Whether its offsets
    are whole hours is the statement's SQL to check, not this."""

    @field_validator(*_API_KEY_FIELDS, mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _exact_origins(cls, value: object) -> object:
        # Here, not at the top: shared.cors imports the runtime, which imports this module.
        from shared.cors import exact_origin

        if isinstance(value, str):
            value = [origin.strip() for origin in value.split(",") if origin.strip()]
        if isinstance(value, list | tuple):
            return tuple(dict.fromkeys(exact_origin(o) if isinstance(o, str) else o for o in value))
        return value

    @field_validator("twilio_subaccounts", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            sid, *tokens = (part.strip() for part in entry.split(":"))
            valid = re.fullmatch(r"AC[0-9a-f]{32}", sid) and 1 <= len(tokens) <= 2
            if not valid or "" in tokens:
                raise ValueError(
                    "write each subaccount as ACxxxxxxxx...:auth-token (or"
                    " ACxxxxxxxx...:auth-token:previous-token while it rotates), comma-separated"
                )
            pairs[sid] = tuple(tokens)
        return pairs

    @property
    def jwks_url(self) -> str | None:
        if self.supabase_jwks_url is not None:
            return str(self.supabase_jwks_url)
        if self.supabase_url is not None:
            return str(self.supabase_url).rstrip("/") + "/auth/v1/.well-known/jwks.json"
        return None

    def twilio_tokens_for(self, account_sid: str | None) -> tuple[str, ...]:
        """The auth tokens whose signature this account's callbacks may carry, current
        first; none if the account is not configured."""
        if account_sid is None or account_sid == self.twilio_account_sid:
            tokens: tuple[SecretStr | None, ...] = (
                self.twilio_auth_token,
                self.twilio_previous_auth_token,
            )
        else:
            tokens = self.twilio_subaccounts.get(account_sid, ())
        return tuple(token.get_secret_value() for token in tokens if token)

    def twilio_accounts(self) -> list[tuple[str, str]]:
        """(AccountSid, token) of every configured account, main first."""
        accounts = []
        if self.twilio_account_sid and self.twilio_auth_token:
            accounts.append((self.twilio_account_sid, self.twilio_auth_token.get_secret_value()))
        accounts += [
            (sid, tokens[0].get_secret_value()) for sid, tokens in self.twilio_subaccounts.items()
        ]
        return accounts

    @field_validator(*_API_KEY_FIELDS)
    @classmethod
    def _long_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(key.get_secret_value()) < MIN_KEY_LENGTH for key in value):
            raise ValueError(
                f"every key must be at least {MIN_KEY_LENGTH} characters"
                " (generate one with: openssl rand -hex 32)"
            )
        return value

    @field_validator("default_phone_region", mode="before")
    @classmethod
    def _known_region(cls, value: object) -> object:
        import phonenumbers

        region = str(value).upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be an ISO 3166 region code such as FR, BE or CH")
        return region

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url", "database_session_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// connection URL")
        return value

    @field_validator("supabase_url")
    @classmethod
    def _https(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and value.scheme != "https" and value.host not in _LOOPBACK:
            raise ValueError("must use https (the secret key travels with every request)")
        return value

    @field_validator("ecb_rates_url")
    @classmethod
    def _rates_over_https(cls, value: HttpUrl) -> HttpUrl:
        # The rates price every SMS in another currency: nobody on the path may write them.
        if value.scheme != "https" and value.host not in _LOOPBACK:
            raise ValueError("must use https (plain http only for localhost)")
        if value.query or value.fragment:
            raise ValueError("must be the folder of the ECB's files, without ? or #")
        return value

    @field_validator("billing_time_zone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        import zoneinfo

        # An IANA name (Europe/Paris, UTC), never a path or a POSIX TZ string.
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", value) or (
            value in {"localtime", "posixrules", "Factory"}
        ):
            raise ValueError("must be an IANA time zone name such as Europe/Paris")
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                "is not a time zone this machine's time zone database knows"
                " (an IANA name such as Europe/Paris)"
            ) from None
        return value

    @field_validator("supabase_secret_key")
    @classmethod
    def _service_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _is_service_key(value.get_secret_value()):
            raise ValueError(
                "must be a secret key (sb_secret_...) or the legacy service_role JWT,"
                " not a publishable or anon key"
            )
        return value

    @model_validator(mode="after")
    def _one_database(self) -> Settings:
        if self.database_url is None and self.database_session_url is None:
            if self.supabase_url is None:
                raise ValueError(
                    "no database configured: set DATABASE_URL (and DATABASE_SESSION_URL for"
                    " retention), or SUPABASE_URL with SUPABASE_SECRET_KEY"
                )
            if self.supabase_secret_key is None:
                raise ValueError("SUPABASE_SECRET_KEY is required when SUPABASE_URL is set")
        return self

    @field_validator("archive_index_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters (openssl rand -hex 32)")
        return value

    @field_validator("archive_prefix")
    @classmethod
    def _folder(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @model_validator(mode="after")
    def _archive_before_expiry(self) -> Settings:
        if self.archive_expire_after_days <= self.archive_after_days:
            raise ValueError("ARCHIVE_EXPIRE_AFTER_DAYS must be greater than ARCHIVE_AFTER_DAYS")
        return self

    def missing(self, *names: str, purpose: str) -> ConfigurationError:
        """The error to raise when some of these settings are not set: it names them."""
        unset = [name.upper() for name in names if getattr(self, name) in (None, ())]
        return ConfigurationError(f"{purpose} needs {', '.join(unset)} to be set")

    @property
    def database_backend(self) -> DatabaseBackend:
        return "postgres" if self.database_url is not None else "supabase"

    @classmethod
    def load(cls, environment: Mapping[str, str] | None = None) -> Settings:
        """Read the environment, or raise ConfigurationError naming what is wrong."""
        source = os.environ if environment is None else environment
        values = {name: source[name.upper()] for name in cls.model_fields if name.upper() in source}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc)) from None


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _is_service_key(key: str) -> bool:
    """A new secret key, or a legacy JWT whose role claim is service_role."""
    if key.startswith("sb_secret_"):
        return True
    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return False
    return isinstance(claims, dict) and claims.get("role") == "service_role"


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        variable = "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{variable}: {message}" if variable else message)
    return "Invalid configuration: " + "; ".join(problems)
