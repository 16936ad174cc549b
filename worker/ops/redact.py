"""
Masks secrets and personal data before anything is logged or recorded.

Three layers, each a safety net for the one before:
1. keys: a JSON object's or form's value under a secret or personal key is masked
   (`password`, `apikey`, `Authorization`, `phone`, `passport_cn`, `inn`, …);
2. shapes: in free text, anything shaped like a phone number, an e-mail or a
   bearer/basic credential is masked;
3. values: every configured secret is replaced wherever it appears, whatever
   the key it hid under.

Ids (ours and the platforms') are kept: they are what ops need to follow a lead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

MASK = "***"

SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "apikey",
        "api_key",
        "access_token",
        "access-token",
        "refresh_token",
        "client_secret",
        "secret",
        "token",
        "authorization",
        "cookie",
        "set-cookie",
        "code",
        "x-api-key",
    }
)
PERSONAL_KEYS = frozenset(
    {
        "phone",
        "phones",
        "md5phones",
        "mobile_phone",
        "work_phone",
        "guarantor_phone",
        "email",
        "emails",
        "first_name",
        "last_name",
        "middle_name",
        "title",
        "person",
        "birth_date",
        "birth_place",
        "inn",
        "passport_cn",
        "passport_date",
        "passport_expiration_date",
        "passport_title",
        "ip",
        "guarator",
        "content",
        "fact_street",
        "fact_house",
        "fact_flat",
        "reg_street",
        "reg_house",
        "reg_flat",
        "fact_housing",
        "reg_housing",
        "work_address",
    }
)
SENSITIVE_KEYS = SECRET_KEYS | PERSONAL_KEYS

_PHONE = re.compile(r"(?<![\w-])\+?\d[\d\s()\-]{8,}\d(?![\w-])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
#: a bytes literal in text (Celery logs an undecodable message's whole body so): its
#: content is unreadable to ops and a phone inside one sits after an escape like `\x12`,
#: where the phone shape cannot see a boundary, so the literal is masked whole
_BYTES_REPR = re.compile(r"""(?<![\w'"])b(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
_UUID_LIKE = re.compile(r"^[0-9a-f-]{32,36}$")
#: longer text is masked whole: the e-mail pattern scans a long run of word
#: characters once per start, so a megabyte-long field would hold a worker for an hour
MAX_SCANNED = 8192


def is_sensitive(key: str) -> bool:
    return key.lower() in SENSITIVE_KEYS


def redact_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Walk JSON-like data, masking values under sensitive keys and sensitive shapes in strings."""
    secrets = tuple(s for s in secrets if s)
    return _walk(value, secrets)


def _walk(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (MASK if isinstance(k, str) and is_sensitive(k) else _walk(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_walk(v, secrets) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask credentials, phones, e-mails and every configured secret in free text."""
    if len(text) > MAX_SCANNED:
        return f"{MASK} ({len(text)} characters, masked whole)"
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    if _UUID_LIKE.match(text):
        return text
    text = _BYTES_REPR.sub(f"b'{MASK}'", text)
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _EMAIL.sub(MASK, text)
    return _PHONE.sub(MASK, text)


def redact_body(content: bytes, content_type: str, secrets: Iterable[str] = ()) -> Any:
    """A request or answer body as recordable data: JSON and forms by key, else as text."""
    secrets = tuple(secrets)
    text = content.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in "[{":
        try:
            return redact_value(json.loads(text), secrets)
        except ValueError:
            pass
    if "x-www-form-urlencoded" in content_type:
        pairs = parse_qsl(text, keep_blank_values=True)
        return {k: (MASK if is_sensitive(k) else redact_text(v, secrets)) for k, v in pairs}
    return redact_text(text, secrets)


def redact_url(url: str | httpx.URL, secrets: Iterable[str] = ()) -> str:
    """The URL with sensitive query parameters masked (SalesMan's `apikey`, `login`)."""
    parts = urlsplit(str(url))
    query = [
        (
            k,
            MASK if is_sensitive(k) or k.lower() == "login" else redact_text(v, secrets),
        )
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return redact_text(urlunsplit(parts._replace(query=urlencode(query, safe=MASK))), secrets)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (MASK if is_sensitive(k) else v) for k, v in headers.items()}


def redact_request(request: httpx.Request, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """What the ledger keeps of a request: method, URL, headers and body, all redacted."""
    secrets = tuple(secrets)
    return {
        "method": request.method,
        "url": redact_url(request.url, secrets),
        "headers": redact_headers(
            {k: v for k, v in request.headers.items() if k.lower() not in _NOISE}
        ),
        "body": redact_body(request.content, request.headers.get("content-type", ""), secrets),
    }


_NOISE = frozenset(
    {"host", "accept", "accept-encoding", "connection", "user-agent", "content-length"}
)


def redact_answer(response: httpx.Response, secrets: Iterable[str] = (), limit: int = 4000) -> str:
    """The platform's answer as recordable text (redacted, at most `limit` characters)."""
    data = redact_body(response.content, response.headers.get("content-type", ""), secrets)
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return text[:limit]
