"""
OAuth2 client credentials for Admitad, as an `httpx.Auth` flow.

The flow does no I/O of its own: it yields the token request and the caller's
client sends it, as httpx's own DigestAuth does. The token lives in the shared
cache (Redis in production) under one key per destination, so every worker uses
the same one: Admitad caps how many live tokens an application may hold
(`error_code` 6), so a token is never minted per task.

* No token cached (or its cache entry has run out, a day before Admitad's
  `expires_in` of 7 days): renew with the refresh grant when a refresh token is
  cached, with client credentials when there is none or it is refused.
* A request answered 401 with `error_code` 0 (expired) or 1 (invalid): renew,
  unless another worker already put a different token in the cache, and send
  the request once more. A second refusal is the caller's answer to map.
* The token endpoint refusing client credentials raises AuthRefused with the
  status and `error_code` only: never the secret, never the body. Only a 4xx
  is a refusal. A 5xx, a 429, or a 200 whose body holds no token is
  TokenUnavailable, retried like any passing failure (a refusal would pause
  the destination for `auth_pause`).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx

from worker.errors import AuthRefused, TokenUnavailable
from worker.keys import admitad_refresh_key as refresh_key
from worker.keys import admitad_token_key as token_key
from worker.platforms.base import KeyValueCache, basic_auth

if TYPE_CHECKING:
    from worker.platforms.admitad.destination import AdmitadDestination

TOKEN_PATH = "/token/"  # noqa: S105 - a URL path, not a password
#: `manage_broker_application` to create and confirm; `broker_application` to list and
#: to read campaign_settings
SCOPES = "manage_broker_application broker_application"
#: Admitad's token lifetime when an answer omits `expires_in` (7 days)
DEFAULT_LIFETIME = timedelta(days=7)
#: a cached token runs out this long before Admitad says it expires
EARLY = timedelta(days=1)
#: `error_code`s of a 401 that a fresh token mends: 0 expired, 1 invalid
RENEWABLE = frozenset({0, 1})


def error_code(response: httpx.Response) -> int | None:
    """Admitad's `error_code` from an error body `{"error", "error_description", "error_code"}`."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return None
    code = body.get("error_code") if isinstance(body, dict) else None
    if isinstance(code, bool):
        return None
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def cache_ttl(lifetime: timedelta) -> timedelta:
    """How long a token stays cached: a day under its lifetime, or half of a short one."""
    return max(lifetime - EARLY, lifetime / 2)


class AdmitadAuth(httpx.Auth):
    """Bearer token from the shared cache; renewed inside the flow when absent or refused."""

    requires_response_body = True

    def __init__(self, dest: AdmitadDestination, cache: KeyValueCache) -> None:
        self.dest = dest
        self.cache = cache

    def __repr__(self) -> str:
        return f"AdmitadAuth(destination={self.dest.name!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        used = self.cache.get(token_key(self.dest.name))
        if used is None:
            used = yield from self._renew()
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code != 401 or error_code(response) not in RENEWABLE:
            return
        current = self.cache.get(token_key(self.dest.name))
        token = current if current not in (None, used) else (yield from self._renew())
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _renew(self) -> Generator[httpx.Request, httpx.Response, str]:
        refresh = self.cache.get(refresh_key(self.dest.name))
        if refresh is not None:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": self.dest.client_id,
            }
            response = yield self._token_request(form)
            token = self._keep(response)
            if token is not None:
                return token
        form = {
            "grant_type": "client_credentials",
            "client_id": self.dest.client_id,
            "scope": SCOPES,
        }
        response = yield self._token_request(form)
        token = self._keep(response)
        refused = 400 <= response.status_code < 500 and response.status_code != 429
        if token is None and not refused:
            raise TokenUnavailable(
                f"Admitad's token endpoint failed for destination {self.dest.name!r} "
                f"(HTTP {response.status_code}, error_code {error_code(response)})"
            )
        if token is None:
            raise AuthRefused(
                f"Admitad refused a token to destination {self.dest.name!r} "
                f"(HTTP {response.status_code}, error_code {error_code(response)})"
            )
        return token

    def _token_request(self, form: dict[str, str]) -> httpx.Request:
        secret = self.dest.client_secret.get_secret_value()
        return httpx.Request(
            "POST",
            self.dest.base_url + TOKEN_PATH,
            data=form,
            headers={"Authorization": basic_auth(self.dest.client_id, secret)},
        )

    def _keep(self, response: httpx.Response) -> str | None:
        """Cache the token (and its refresh token) from a 200; None for any other answer."""
        if response.status_code != 200:
            return None
        try:
            body: Any = json.loads(response.content)
            token = str(body["access_token"])
            seconds = body.get("expires_in")
            lifetime = timedelta(seconds=int(seconds)) if seconds else DEFAULT_LIFETIME
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
            return None
        self.cache.set(token_key(self.dest.name), token, cache_ttl(lifetime))
        if body.get("refresh_token"):
            self.cache.set(refresh_key(self.dest.name), str(body["refresh_token"]), lifetime)
        return token
