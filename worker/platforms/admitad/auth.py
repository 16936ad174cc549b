"""
OAuth2 client credentials for Admitad, as an `httpx.Auth` flow.

The flow does no I/O of its own: it yields the token request and the loop's
client sends it, like httpx's own DigestAuth. The token is kept in the shared
cache (Redis in production) under one key per destination, so every worker
uses the same one: Admitad caps how many tokens an application may hold
(`error_code` 6), so a token is never minted per task. It is renewed a day
before it expires (tokens live 7 days): with the refresh grant when a refresh
token is cached, with client credentials otherwise; a request refused with
`error_code` 0 (expired) or 1 (invalid) renews it and is sent once more.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx

from worker.errors import AuthRefused
from worker.platforms.base import KeyValueCache, basic_auth

if TYPE_CHECKING:
    from worker.platforms.admitad.adapter import AdmitadDestination

SCOPES = "manage_broker_application broker_application"
#: renew this long before Admitad says the token expires
EARLY = timedelta(days=1)


def token_key(destination: str) -> str:
    return f"leadrelay:admitad:token:{destination}"


def refresh_key(destination: str) -> str:
    return f"leadrelay:admitad:refresh:{destination}"


def error_code(response: httpx.Response) -> int | None:
    """Admitad's `error_code` from an error body, when there is one."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    code = body.get("error_code") if isinstance(body, dict) else None
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


class AdmitadAuth(httpx.Auth):
    """Bearer token from the shared cache; renewed through the flow when absent or refused."""

    requires_response_body = True

    def __init__(self, dest: AdmitadDestination, cache: KeyValueCache) -> None:
        self.dest = dest
        self.cache = cache

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.cache.get(token_key(self.dest.name))
        if token is None:
            token = yield from self._renew()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and error_code(response) in (0, 1):
            token = yield from self._renew()
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _renew(self) -> Generator[httpx.Request, httpx.Response, str]:
        refresh = self.cache.get(refresh_key(self.dest.name))
        if refresh is not None:
            response = yield self._token_request(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                    "client_id": self.dest.client_id,
                }
            )
            if response.status_code == 200:
                return self._keep(response)
        response = yield self._token_request(
            {"grant_type": "client_credentials", "client_id": self.dest.client_id, "scope": SCOPES}
        )
        if response.status_code != 200:
            code = error_code(response)
            raise AuthRefused(
                f"Admitad refused a token (HTTP {response.status_code}, error_code {code})"
            )
        return self._keep(response)

    def _token_request(self, form: dict[str, str]) -> httpx.Request:
        secret = self.dest.client_secret.get_secret_value()
        return httpx.Request(
            "POST",
            self.dest.base_url + "/token/",
            data=form,
            headers={"Authorization": basic_auth(self.dest.client_id, secret)},
        )

    def _keep(self, response: httpx.Response) -> str:
        body: Any = json.loads(response.content)
        token = str(body["access_token"])
        lifetime = timedelta(seconds=int(body.get("expires_in", 604800)))
        self.cache.set(token_key(self.dest.name), token, max(lifetime - EARLY, lifetime / 2))
        if body.get("refresh_token"):
            self.cache.set(refresh_key(self.dest.name), str(body["refresh_token"]), lifetime)
        return token
