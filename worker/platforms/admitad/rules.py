"""
The application's fields as Admitad's table documents them, and a program's own
rules from `GET /broker/campaign_settings/{c_id}/`.

Every field is checked at the door: type, maximum length, dates as `%d.%m.%Y`
(real dates), decimals with at most 12 digits and 2 places, `credit_days` an
integer, `subid`…`subid4` lengths and never `%00`. A program may ask more
(required fields, regexps): those are checked before sending, against the
cached settings of every program the application will reach; an empty regexp
means the table's rule alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.errors import FieldError

#: field → ("string", max length) | ("date", 0) | ("decimal", 0) | ("integer", 0)
FIELDS: dict[str, tuple[str, int]] = {
    "first_name": ("string", 100),
    "last_name": ("string", 100),
    "middle_name": ("string", 100),
    "birth_date": ("date", 0),
    "birth_place": ("string", 100),
    "gender": ("string", 50),
    "mobile_phone": ("string", 32),
    "phone": ("string", 32),
    "occupation": ("string", 100),
    "work_date": ("date", 0),
    "work_salary": ("decimal", 0),
    "work_organization": ("string", 100),
    "work_address": ("string", 100),
    "work_phone": ("string", 32),
    "work_occupation": ("string", 100),
    "work_region_name": ("string", 50),
    "work_city_name": ("string", 50),
    "work_street": ("string", 50),
    "work_house": ("string", 10),
    "email": ("string", 75),
    "inn": ("string", 16),
    "passport_cn": ("string", 16),
    "passport_date": ("date", 0),
    "passport_expiration_date": ("date", 0),
    "passport_title": ("string", 100),
    "fact_region_name": ("string", 50),
    "fact_city_name": ("string", 50),
    "fact_street": ("string", 50),
    "fact_house": ("string", 10),
    "fact_housing": ("string", 10),
    "fact_flat": ("string", 10),
    "reg_region_name": ("string", 50),
    "reg_city_name": ("string", 50),
    "reg_street": ("string", 50),
    "reg_house": ("string", 10),
    "reg_housing": ("string", 10),
    "reg_flat": ("string", 10),
    "overdue_loans": ("string", 50),
    "credit_sum": ("decimal", 0),
    "credit_days": ("integer", 0),
    "credit_purpose": ("string", 300),
    "time_for_call": ("string", 300),
    "guarator": ("string", 100),
    "guarantor_type": ("string", 100),
    "guarantor_phone": ("string", 32),
    "product_type": ("string", 50),
    "personal_data_agent": ("string", 300),
    "application_received_date_by_client": ("date", 0),
    "subid": ("string", 50),
    "subid1": ("string", 50),
    "subid2": ("string", 50),
    "subid3": ("string", 50),
    "subid4": ("string", 120),
}
SUBIDS = frozenset({"subid", "subid1", "subid2", "subid3", "subid4"})
#: the most digits and decimal places a decimal field takes
DIGITS, PLACES = 12, 2


def check_field(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    """(the value as Admitad takes it, or the broken rule) for one documented field."""
    kind, limit = FIELDS[name]
    if kind == "string":
        return _string(name, value, limit)
    if kind == "date":
        return _date(name, value)
    if kind == "decimal":
        return _decimal(name, value)
    return _integer(name, value)


def _string(name: str, value: Any, limit: int) -> tuple[str | None, FieldError | None]:
    if not isinstance(value, str):
        return None, FieldError(name, "a string")
    if len(value) > limit:
        return None, FieldError(name, f"at most {limit} characters")
    if name in SUBIDS and "%00" in value:
        return None, FieldError(name, 'shall not contain "%00"')
    return value, None


def _date(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    if isinstance(value, str):
        try:
            datetime.strptime(value, "%d.%m.%Y")
        except ValueError:
            pass
        else:
            if re.fullmatch(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}", value):
                return value, None
    return None, FieldError(name, "a date as DD.MM.YYYY")


def _decimal(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    rule = FieldError(name, f"a decimal of at most {DIGITS} digits, {PLACES} after the point")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, rule
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None, rule
    if not number.is_finite():
        return None, rule
    sign, digits, exponent = number.as_tuple()
    places = -int(exponent) if int(exponent) < 0 else 0
    if sign or places > PLACES or len(digits) - places > DIGITS - PLACES:
        return None, rule
    return f"{number:.2f}", None


def _integer(name: str, value: Any) -> tuple[str | None, FieldError | None]:
    if isinstance(value, bool):
        return None, FieldError(name, "an integer")
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value)), None
    return None, FieldError(name, "an integer")


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One line of a program's campaign_settings."""

    field: str
    regexp: str
    required: bool


def parse_settings(text: str) -> list[FieldRule]:
    """A campaign_settings answer (its body text) → the program's rules."""
    body = json.loads(text)
    results = body.get("results") if isinstance(body, Mapping) else None
    if not isinstance(results, list):
        raise ValueError("campaign_settings answer without a results list")
    return [
        FieldRule(str(r.get("field_name")), str(r.get("regexp") or ""), bool(r.get("required")))
        for r in results
        if isinstance(r, Mapping) and r.get("field_name")
    ]


def check_program(
    payload: Mapping[str, Any], campaign: int, rules: list[FieldRule]
) -> list[FieldError]:
    """The program's own rules: required fields and regexps (an empty regexp: the table's rule)."""
    errors = []
    for rule in rules:
        where = f"campaign {campaign}: {rule.field}"
        value = payload.get(rule.field)
        if value in (None, ""):
            if rule.required:
                errors.append(FieldError(where, "required by the program"))
            continue
        if rule.regexp:
            try:
                matched = re.search(rule.regexp, str(value)) is not None
            except re.error:
                continue  # a program's broken regexp is theirs to mend; Admitad decides
            if not matched:
                errors.append(FieldError(where, f"must match {rule.regexp}"))
    return errors
