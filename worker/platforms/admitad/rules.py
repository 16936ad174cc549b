"""
The application's fields as Admitad's table documents them, and each program's
own rules from `GET /broker/campaign_settings/{c_id}/`.

At the door (`validate_fields`) every field is checked against the table: its
type, its maximum length, dates as `%d.%m.%Y` (real dates), decimals of at most
12 digits with 2 after the point, `credit_days` a whole number, `subid`…`subid4`
of 50/50/50/50/120 characters and never containing `%00`. Unknown fields are
refused (Admitad would drop them without a word, and a typo would lose data),
`user_notified` must be 1 (with 0 Admitad creates the application and passes it
to nobody, silently), `test_mode` is 1 or 0.

A program may ask more: required fields and regexps. Those are checked before
sending (`check_program`), against the cached campaign_settings of every program
the application will reach. An empty regexp means the table's rule alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import httpx

from worker.errors import FieldError, LeadInvalid, PlatformContractError
from worker.keys import admitad_settings_key

if TYPE_CHECKING:
    from worker.platforms.admitad.destination import AdmitadDestination

Kind = Literal["string", "date", "decimal", "integer"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One line of the document's table: the type and, for strings, the maximum length."""

    kind: Kind
    max_length: int = 0


def _s(limit: int) -> FieldSpec:
    return FieldSpec("string", limit)


DATE, DECIMAL, INTEGER = FieldSpec("date"), FieldSpec("decimal"), FieldSpec("integer")

#: Admitad's table of application fields, as documented (`guarator` is Admitad's spelling)
FIELDS: dict[str, FieldSpec] = {
    "first_name": _s(100),
    "last_name": _s(100),
    "middle_name": _s(100),
    "birth_date": DATE,
    "birth_place": _s(100),
    "gender": _s(50),
    "mobile_phone": _s(32),
    "phone": _s(32),
    "occupation": _s(100),
    "work_date": DATE,
    "work_salary": DECIMAL,
    "work_organization": _s(100),
    "work_address": _s(100),
    "work_phone": _s(32),
    "work_occupation": _s(100),
    "work_region_name": _s(50),
    "work_city_name": _s(50),
    "work_street": _s(50),
    "work_house": _s(10),
    "email": _s(75),
    "inn": _s(16),
    "passport_cn": _s(16),
    "passport_date": DATE,
    "passport_expiration_date": DATE,
    "passport_title": _s(100),
    "fact_region_name": _s(50),
    "fact_city_name": _s(50),
    "fact_street": _s(50),
    "fact_house": _s(10),
    "fact_housing": _s(10),
    "fact_flat": _s(10),
    "reg_region_name": _s(50),
    "reg_city_name": _s(50),
    "reg_street": _s(50),
    "reg_house": _s(10),
    "reg_housing": _s(10),
    "reg_flat": _s(10),
    "overdue_loans": _s(50),
    "credit_sum": DECIMAL,
    "credit_days": INTEGER,
    "credit_purpose": _s(300),
    "time_for_call": _s(300),
    "guarator": _s(100),
    "guarantor_type": _s(100),
    "guarantor_phone": _s(32),
    "product_type": _s(50),
    "personal_data_agent": _s(300),
    "application_received_date_by_client": DATE,
    "subid": _s(50),
    "subid1": _s(50),
    "subid2": _s(50),
    "subid3": _s(50),
    "subid4": _s(120),
}
SUBIDS = ("subid", "subid1", "subid2", "subid3", "subid4")
#: the most digits, and digits after the point, of a decimal field (Django's max_digits=12)
DIGITS, PLACES = 12, 2
#: what a subid may never contain (the document: shall not be used)
FORBIDDEN_IN_SUBID = "%00"
#: lead keys that are not application fields: how to send it, not what it says
CONTROL_FIELDS = frozenset({"campaigns", "user_notified", "test_mode", "sms_verification"})

_DATE_SHAPE = re.compile(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}")

# ------------------------------------------------------------------ the table


def check_field(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    """One documented field: (the value as it goes on the wire, None) or (None, the broken rule)."""
    spec = FIELDS[name]
    if spec.kind == "string":
        return _string(name, value, spec.max_length)
    if spec.kind == "date":
        return _date(name, value)
    if spec.kind == "decimal":
        return _decimal(name, value)
    return _integer(name, value)


def _string(name: str, value: Any, limit: int) -> tuple[str | None, FieldError | None]:
    if not isinstance(value, str):
        return None, FieldError(name, "a string")
    if len(value) > limit:
        return None, FieldError(name, f"at most {limit} characters")
    if name in SUBIDS and FORBIDDEN_IN_SUBID in value:
        return None, FieldError(name, f'shall not contain "{FORBIDDEN_IN_SUBID}"')
    return value, None


def _date(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    if isinstance(value, str) and _DATE_SHAPE.fullmatch(value):
        try:
            datetime.strptime(value, "%d.%m.%Y")
        except ValueError:
            pass
        else:
            return value, None
    return None, FieldError(name, "a real date as DD.MM.YYYY")


def _decimal(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    rule = FieldError(
        name, f"a non-negative decimal of at most {DIGITS} digits, {PLACES} after the point"
    )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, rule
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None, rule
    if not number.is_finite():
        return None, rule
    sign, digits, exponent = number.as_tuple()
    places = max(0, -int(exponent))
    whole = len(digits) - places if int(exponent) <= 0 else len(digits) + int(exponent)
    if sign or places > PLACES or whole > DIGITS - PLACES:
        return None, rule
    return f"{number:.2f}", None


def _integer(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value), None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return str(int(value)), None
    return None, FieldError(name, "a whole number")


def _flag(name: str, value: Any) -> tuple[int | None, FieldError | None]:
    if value in (0, 1, "0", "1") and not isinstance(value, float):
        return int(value), None
    return None, FieldError(name, "1 or 0")


def _consent(value: Any) -> FieldError | None:
    if value in (1, "1") and not isinstance(value, float):
        return None
    return FieldError(
        "user_notified",
        "must be 1: without the user's consent Admitad drops the application silently "
        "(it passes it to no program)",
    )


def validate_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """
    Every key of a lead except `campaigns`, checked against the table: the
    values as they go on the wire, or LeadInvalid with every broken rule.
    """
    errors: list[FieldError] = []
    out: dict[str, Any] = {"user_notified": 1}
    consent = _consent(raw.get("user_notified"))
    if consent is not None:
        errors.append(consent)
    for key, value in raw.items():
        name = str(key)
        if name in ("campaigns", "user_notified"):
            continue
        clean: Any
        if name == "test_mode":
            clean, error = _flag(name, value)
        elif name == "sms_verification":
            ok = isinstance(value, bool)
            clean, error = (value, None) if ok else (None, FieldError(name, "true or false"))
        elif name in FIELDS:
            clean, error = check_field(name, value)
        else:
            clean, error = None, FieldError(name[:60] or "(empty name)", "not an Admitad field")
        if error is not None:
            errors.append(error)
        else:
            out[name] = clean
    if errors:
        raise LeadInvalid(errors)
    return out


# ------------------------------------------------------------------ a program's own rules


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One line of a program's campaign_settings."""

    field: str
    regexp: str
    required: bool


@dataclass(frozen=True, slots=True)
class ProgramRules:
    """A program's campaign_settings: its required fields and their regexps."""

    fields: tuple[FieldRule, ...] = ()


SETTINGS_PATH = "/broker/campaign_settings/{c_id}/"


def settings_key(dest: AdmitadDestination, c_id: int) -> str:
    """The shared-cache key of one program's campaign_settings, per destination."""
    return admitad_settings_key(dest.name, c_id)


def build_settings_request(c_id: int, dest: AdmitadDestination) -> httpx.Request:
    """`GET {base_url}/broker/campaign_settings/{c_id}/` (scope broker_application)."""
    return httpx.Request("GET", dest.base_url + SETTINGS_PATH.format(c_id=c_id))


def parse_settings(answer: httpx.Response | str) -> ProgramRules:
    """
    A campaign_settings answer (the response, or its body text as the cache
    keeps it) → the program's rules; PlatformContractError for another shape.
    """
    text = answer.text if isinstance(answer, httpx.Response) else answer
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise PlatformContractError("campaign_settings answer is not JSON") from None
    results = body.get("results") if isinstance(body, Mapping) else None
    if not isinstance(results, list):
        raise PlatformContractError("campaign_settings answer without a results list")
    return ProgramRules(
        tuple(
            FieldRule(str(r["field_name"]), str(r.get("regexp") or ""), r.get("required") is True)
            for r in results
            if isinstance(r, Mapping) and r.get("field_name")
        )
    )


def check_program(payload: Mapping[str, Any], c_id: int, rules: ProgramRules) -> list[FieldError]:
    """
    The program's own rules against a normalised lead: each broken one names the
    program, the field and the rule (`campaign 17809: first_name: must match
    ^[a-zA-Z]+$`). An empty regexp means the table's rule; a regexp Python
    cannot compile is left to Admitad, which answers it in `errors[]`.
    """
    errors: list[FieldError] = []
    for rule in rules.fields:
        where = f"campaign {c_id}: {rule.field}"
        value = payload.get(rule.field)
        if value is None or value == "":
            if rule.required:
                errors.append(FieldError(where, "required by the program"))
            continue
        if not rule.regexp:
            if rule.field in FIELDS:
                _, error = check_field(rule.field, value)
                if error is not None:
                    errors.append(FieldError(where, error.rule))
            continue
        try:
            matched = re.search(rule.regexp, str(value)) is not None
        except re.error:
            continue
        if not matched:
            errors.append(FieldError(where, f"must match {rule.regexp}"))
    return errors
