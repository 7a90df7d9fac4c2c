"""Caller authentication: bearer API keys compared in constant time, and Supabase
access tokens verified as Supabase issues them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from shared.db import Caller
from shared.errors import ConfigurationError, UnauthorizedError, UnavailableError

if TYPE_CHECKING:
    from jwt import PyJWKClient
    from werkzeug.wrappers import Request

    from shared.runtime import Services


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def matches_api_key(token: str, keys: Iterable[SecretStr]) -> bool:
    """Whether the token is one of the keys. No keys: nothing matches.

    Every key is compared, whatever the outcome, and digests rather than the keys, so
    timing tells nothing about which key came close, nor the keys' lengths.
    """
    presented = hashlib.sha256(token.encode()).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(
            presented, hashlib.sha256(key.get_secret_value().encode()).digest()
        )
    return bool(token) and matched


def require_api_key(request: Request, keys: tuple[SecretStr, ...], *, setting: str) -> None:
    """Pass if the bearer token is one of the keys; otherwise 401. With no key configured
    (the setting named) the function serves no one: it fails closed, as not configured."""
    if not keys:
        raise ConfigurationError(f"{setting} is not set: this function accepts no caller")
    if not matches_api_key(bearer_token(request) or "", keys):
        raise UnauthorizedError("Send a valid key as 'Authorization: Bearer <key>'.")


# --- Supabase access tokens -----------------------------------------------------------------

ASYMMETRIC = ("ES256", "RS256")


def jwks(services: Services) -> PyJWKClient | None:
    """The project's published keys (the composition root's factory), fetched on first
    use and cached for an hour; None without a JWKS URL."""
    import jwt

    url = services.settings.jwks_url
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=3600) if url else None


def verify_access_token(token: str, services: Services) -> Caller:
    """A logged-in user's Supabase access token, verified: signature, expiry, audience.

    HS256 tokens are checked with the project's JWT secret; ES256/RS256 tokens with the
    project's published keys (JWKS). Anything else, "none" included, is refused. A server
    that can verify no token at all is not configured (500), not a refusal.
    """
    import jwt

    settings = services.settings
    if settings.supabase_jwt_secret is None and settings.jwks_url is None:
        raise ConfigurationError(
            "neither SUPABASE_JWT_SECRET nor SUPABASE_URL (or SUPABASE_JWKS_URL) is set:"
            " metrics can verify no access token"
        )
    refused = UnauthorizedError("The access token is not valid. Sign in again.")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        published = services.get(jwks)
        if algorithm == "HS256" and settings.supabase_jwt_secret is not None:
            key: Any = settings.supabase_jwt_secret.get_secret_value()
        elif algorithm in ASYMMETRIC and published is not None:
            key = published.get_signing_key_from_jwt(token).key
        else:
            raise refused
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.PyJWKClientConnectionError:
        # The project's keys cannot be fetched: our outage, not the user's fault.
        raise UnavailableError("The sign-in keys cannot be fetched right now.") from None
    except jwt.PyJWTError:
        raise refused from None
    caller = Caller(claims=claims, access_token=token)
    if caller.role != "authenticated":  # also refuses a subject that is not a user id
        raise refused
    return caller
