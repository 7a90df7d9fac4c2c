"""Secrets read at run time, from AWS Secrets Manager through the AWS Parameters and
Secrets Lambda Extension: a local HTTP server in the Lambda environment that answers
GetSecretValue from its cache. No boto3 import (about 400 ms of a cold start), and the
deployed template holds only the secrets' names, never a value.

SECRET_IDS names the secrets a function reads, comma-separated; each holds a JSON
object of settings by their environment variable's name ({"DATABASE_URL": "..."}).
Without SECRET_IDS (locally, in tests) the environment is the only source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from shared.errors import ConfigurationError

SECRET_IDS = "SECRET_IDS"  # noqa: S105 (a variable's name)
# The extension's own variable, which also configures it: both sides read the same one.
EXTENSION_PORT = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
DEFAULT_EXTENSION_PORT = 2773
# Lambda's session token: the extension answers only requests that carry it, so that
# nothing else that can reach localhost (a forged redirect, say) reads a secret.
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"  # noqa: S105 (a header's name)
_READ_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class SecretsExtension:
    """The extension's HTTP API, for the secrets this function reads."""

    secret_ids: tuple[str, ...]
    port: int
    token: str

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> SecretsExtension | None:
        """The reader SECRET_IDS asks for; None when the environment holds everything."""
        ids = tuple(i.strip() for i in environment.get(SECRET_IDS, "").split(",") if i.strip())
        if not ids:
            return None
        token = environment.get("AWS_SESSION_TOKEN")
        if not token:
            raise ConfigurationError(
                "SECRET_IDS is set but AWS_SESSION_TOKEN is not: secrets are read through"
                " the Parameters and Secrets extension inside AWS Lambda only"
            )
        port = environment.get(EXTENSION_PORT, str(DEFAULT_EXTENSION_PORT))
        if not port.isdigit():
            raise ConfigurationError(f"{EXTENSION_PORT} must be a port number")
        return cls(ids, int(port), token)

    def read(self, *, fresh: bool = False) -> dict[str, str]:
        """Every setting the secrets hold, later secrets winning. With fresh, past the
        extension's cache: the value Secrets Manager holds now."""
        values: dict[str, str] = {}
        for secret_id in self.secret_ids:
            values |= self._read(secret_id, fresh)
        return values

    def _read(self, secret_id: str, fresh: bool) -> dict[str, str]:
        import http.client

        query = {"secretId": secret_id} | ({"refreshNow": "true"} if fresh else {})
        connection = http.client.HTTPConnection(
            "localhost", self.port, timeout=_READ_TIMEOUT_SECONDS
        )
        try:
            connection.request(
                "GET", f"/secretsmanager/get?{urlencode(query)}", headers={TOKEN_HEADER: self.token}
            )
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ConfigurationError(
                f"secret {secret_id} could not be read: the Parameters and Secrets extension"
                f" did not answer on port {self.port} ({exc.__class__.__name__}); is its layer"
                " attached?"
            ) from None
        finally:
            connection.close()
        if response.status != 200:
            # Its body may name the secret and the reason, never the value.
            raise ConfigurationError(
                f"secret {secret_id} could not be read: the extension answered"
                f" {response.status} (does the function's role may read it?)"
            )
        return settings_in(secret_id, body)


def settings_in(secret_id: str, answer: bytes) -> dict[str, str]:
    """The settings in a GetSecretValue answer, or an error that says what is wrong
    (never quoting the value)."""
    try:
        secret = json.loads(json.loads(answer)["SecretString"])
    except (ValueError, KeyError, TypeError):
        secret = None
    if not isinstance(secret, dict) or not all(
        isinstance(name, str) and name.isupper() and isinstance(value, str)
        for name, value in secret.items()
    ):
        raise ConfigurationError(
            f"secret {secret_id} must hold a JSON object of settings by variable name,"
            ' e.g. {"DATABASE_URL": "postgresql://..."}'
        )
    return secret


def environment_with_secrets(fresh: bool = False) -> dict[str, str]:
    """The process's environment, with the settings its secrets hold on top."""
    environment = dict(os.environ)
    reader = SecretsExtension.from_environment(environment)
    if reader is not None:
        environment |= reader.read(fresh=fresh)
    return environment
