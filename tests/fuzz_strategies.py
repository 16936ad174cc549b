"""
Malformed leads for fuzzing every way in, per platform (hypothesis strategies).

Each case is a good lead from `tests.factories` with exactly one defect, so the
field the refusal must name is known: wrong types, too long, bad dates and
decimals, `%00`, NUL, unicode edge cases, missing required fields, extra
fields, huge payloads and nested garbage. `Case.field` is the start of the
path some FieldError of the refusal must carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.factories import admitad_lead, calltouch_lead, kuper_lead, salesman_lead

PLATFORMS = ("kuper", "calltouch", "salesman", "admitad")

#: a good lead per platform, different on every call where the platform deduplicates
GOOD: dict[str, Callable[..., dict[str, Any]]] = {
    "kuper": kuper_lead,
    "calltouch": calltouch_lead,
    "salesman": salesman_lead,
    "admitad": admitad_lead,
}

#: the categories the issue lists; every platform covers each one it can
CATEGORIES = (
    "wrong type",
    "too long",
    "bad date",
    "bad decimal",
    "%00",
    "nul",
    "unicode",
    "missing",
    "extra field",
    "huge",
    "nested garbage",
)

#: how big "huge" is: over a megabyte of text in one lead
HUGE = 1_100_000


@dataclass(frozen=True)
class Case:
    """A malformed lead, what is wrong with it, and the field its refusal must name."""

    platform: str
    category: str
    field: str
    lead: Any

    def __repr__(self) -> str:  # hypothesis prints failing cases; a megabyte helps nobody
        text = repr(self.lead)
        short = text if len(text) < 300 else f"{text[:300]}… ({len(text)} chars)"
        return f"Case({self.platform}, {self.category}, {self.field}, {short})"


# --- building blocks ------------------------------------------------------------------

wrong_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
#: text no platform takes where it wants digits (phones, ids)
not_digits = st.sampled_from(
    [
        "%00",
        "abc",
        "٧٩١٥٨٨٨١١٢٢",  # Arabic-Indic digits
        "７９１５８８８１１２２",  # fullwidth digits
        "+7 915 888\u200b11 22",  # zero-width space
        "79158881122\u202e",  # right-to-left override
        "😀😀😀",
        "𝟕𝟗𝟏𝟓𝟖𝟖𝟖𝟏𝟏𝟐𝟐",  # mathematical bold digits
    ]
)
#: text PostgreSQL's jsonb cannot hold, whatever the platform allows
unstorable = st.sampled_from(["a\x00b", "\x00", "x\ud800y", "\udfff"])


def nested_garbage(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = {"k": value, "l": [i, None, "x"]} if i % 2 else [None, value]
    return value


garbage = st.one_of(
    st.integers(5, 300).map(nested_garbage),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=30,
    ).filter(lambda v: isinstance(v, list | dict)),
)
extra_names = st.text(min_size=1, max_size=30).filter(lambda s: s.isprintable() and "\x00" not in s)


def _long(limit: int) -> st.SearchStrategy[str]:
    """Text just over `limit`, or far over it, in several scripts."""
    return st.tuples(st.sampled_from(["x", "я", "😀", "ا"]), st.integers(1, 3)).map(
        lambda t: t[0] * (limit + t[1] ** 4)
    )


def _case(
    platform: str, category: str, field: str, values: st.SearchStrategy[Any], build: Any
) -> tuple[str, st.SearchStrategy[Case]]:
    """Cases whose lead is `build(value)` for each value drawn; the refusal names `field`."""
    return category, values.map(lambda v: Case(platform, category, field, build(v)))


def _set(make: Callable[..., dict[str, Any]], field: str) -> Callable[[Any], dict[str, Any]]:
    return lambda v: make(**{field: v})


def _without(make: Callable[..., dict[str, Any]], field: str) -> Callable[[Any], dict[str, Any]]:
    def build(_: Any) -> dict[str, Any]:
        lead = make()
        lead.pop(field, None)
        return lead

    return build


def _extra(make: Callable[..., dict[str, Any]]) -> Callable[[tuple[str, Any]], dict[str, Any]]:
    return lambda kv: {**make(), f"zz_{kv[0]}": kv[1]}


# --- per platform -----------------------------------------------------------------------


def _kuper() -> list[tuple[str, st.SearchStrategy[Case]]]:
    k, g = "kuper", kuper_lead
    return [
        _case(k, "wrong type", "vacancy_id", wrong_scalars | st.just("три"), _set(g, "vacancy_id")),
        _case(k, "wrong type", "city_id", st.sampled_from([0, -5, 1.5, "1e3"]), _set(g, "city_id")),
        _case(k, "wrong type", "phone", st.integers() | wrong_scalars, _set(g, "phone")),
        _case(k, "wrong type", "utm", st.text(max_size=5) | wrong_scalars, _set(g, "utm")),
        _case(k, "too long", "first_name", _long(255), _set(g, "first_name")),
        _case(k, "too long", "utm.utm_source", _long(255), lambda v: g(utm={"utm_source": v})),
        _case(k, "%00", "phone", st.just("%00"), _set(g, "phone")),
        _case(k, "%00", "phone", st.just("+7 915 888%0011 22"), _set(g, "phone")),
        _case(k, "nul", "first_name", unstorable, _set(g, "first_name")),
        _case(k, "nul", "utm.utm_source", unstorable, lambda v: g(utm={"utm_source": v})),
        _case(k, "unicode", "phone", not_digits, _set(g, "phone")),
        _case(k, "unicode", "vacancy_id", st.sampled_from(["٣", "３", "³"]), _set(g, "vacancy_id")),
        _case(k, "missing", "phone", st.none(), _without(g, "phone")),
        _case(k, "missing", "utm", st.none(), _without(g, "utm")),
        _case(k, "missing", "vacancy_id", st.none(), _without(g, "vacancy_id")),
        _case(k, "missing", "utm.utm_source", st.none(), lambda _: g(utm={})),
        _case(k, "extra field", "zz_", st.tuples(extra_names, st.integers()), _extra(g)),
        _case(k, "huge", "first_name", st.just("я" * HUGE), _set(g, "first_name")),
        _case(k, "huge", "zz_", st.tuples(extra_names, st.just("x" * HUGE)), _extra(g)),
        _case(k, "nested garbage", "utm", garbage, _set(g, "utm")),
        _case(k, "nested garbage", "zz_", st.tuples(extra_names, garbage), _extra(g)),
    ]


def _ct_request(value: Any) -> dict[str, Any]:
    return calltouch_lead(matching=[{"type": "request", "requestParams": {"requestId": value}}])


def _ct_phones(value: Any) -> dict[str, Any]:
    return calltouch_lead(
        matching=[{"type": "leadContact", "leadContactParams": {"phones": [value]}}]
    )


def _ct_field_value(value: Any) -> dict[str, Any]:
    return calltouch_lead(addCustomFields={"customFields": [{"field": "stage", "value": value}]})


def _ct_params(kind: str, **params: Any) -> dict[str, Any]:
    """A lead with one `kind` rule (`requestContact`, …) holding `params`."""
    return calltouch_lead(matching=[{"type": kind, f"{kind}Params": params}])


def _calltouch() -> list[tuple[str, st.SearchStrategy[Case]]]:
    c, g = "calltouch", calltouch_lead
    phone, email = "79157771122", "name@server.com"
    return [
        # keys the doc shows on other params objects only
        _case(
            c,
            "extra field",
            "matching[0].requestContactParams.tags",
            st.lists(st.text(min_size=1, max_size=10), max_size=3) | st.none(),
            lambda v: _ct_params("requestContact", phones=[phone], tags=v),
        ),
        _case(
            c,
            "extra field",
            "matching[0].requestContactParams.tagsLogic",
            st.sampled_from(["and", "or", None]),
            lambda v: _ct_params("requestContact", emails=[email], tagsLogic=v),
        ),
        _case(
            c,
            "extra field",
            "matching[0].callContactParams.emails",
            st.sampled_from([[email], [], None]),
            lambda v: _ct_params("callContact", phones=[phone], emails=v),
        ),
        _case(
            c,
            "extra field",
            "matching[0].callContactParams.emails",
            st.just([email]),
            lambda v: _ct_params("callContact", emails=v),
        ),
        _case(
            c,
            "missing",
            "matching[0].requestParams.tags",
            st.just([]),
            lambda v: g(
                matching=[{"type": "request", "requestParams": {"requestId": 1, "tags": v}}]
            ),
        ),
        _case(
            c,
            "missing",
            "matching[0].leadContactParams.tags",
            st.just([]),
            lambda v: _ct_params("leadContact", phones=[phone], tags=v),
        ),
        _case(
            c, "wrong type", "matching", st.text(max_size=5) | wrong_scalars, _set(g, "matching")
        ),
        _case(
            c,
            "wrong type",
            "matching[0].requestParams.requestId",
            wrong_scalars | st.just("7"),
            _ct_request,
        ),
        _case(
            c,
            "wrong type",
            "addCustomFields",
            st.integers() | st.just([]),
            _set(g, "addCustomFields"),
        ),
        _case(
            c,
            "wrong type",
            "addCustomFields.customFields[0].value",
            st.none() | st.booleans() | st.lists(st.integers(), max_size=2),
            _ct_field_value,
        ),
        _case(
            c,
            "too long",
            "matching",
            st.integers(21, 40),
            lambda n: g(
                matching=[
                    {"type": "request", "requestParams": {"requestId": i + 1}} for i in range(n)
                ]
            ),
        ),
        _case(
            c,
            "too long",
            "addCustomFields.customFields",
            st.integers(21, 40),
            lambda n: g(
                addCustomFields={"customFields": [{"field": f"f{i}", "value": i} for i in range(n)]}
            ),
        ),
        _case(
            c,
            "too long",
            "matching[0].requestParams.tags[0]",
            _long(255),
            lambda v: g(
                matching=[{"type": "request", "requestParams": {"requestId": 1, "tags": [v]}}]
            ),
        ),
        _case(c, "%00", "matching[0].leadContactParams.phones[0]", st.just("%00"), _ct_phones),
        _case(c, "nul", "addCustomFields.customFields[0].value", unstorable, _ct_field_value),
        _case(c, "unicode", "matching[0].leadContactParams.phones[0]", not_digits, _ct_phones),
        _case(c, "missing", "matching", st.none(), _without(g, "matching")),
        _case(c, "missing", "addCustomFields", st.none(), _without(g, "addCustomFields")),
        _case(c, "missing", "matching[0]", st.none(), lambda _: g(matching=[{"type": "request"}])),
        _case(c, "extra field", "zz_", st.tuples(extra_names, st.integers()), _extra(g)),
        _case(
            c,
            "huge",
            "matching",
            st.just(HUGE // 50_000),
            lambda n: g(
                matching=[
                    {"type": "request", "requestParams": {"requestId": 1, "tags": ["t" * 50_000]}}
                ]
                * n
            ),
        ),
        _case(c, "huge", "zz_", st.tuples(extra_names, st.just("x" * HUGE)), _extra(g)),
        _case(c, "nested garbage", "matching", garbage, _set(g, "matching")),
        _case(
            c,
            "nested garbage",
            "matching[0]",
            garbage,
            lambda v: g(matching=[{"type": "request", "requestParams": {"requestId": 1}, "x": v}]),
        ),
    ]


def _salesman() -> list[tuple[str, st.SearchStrategy[Case]]]:
    s, g = "salesman", salesman_lead
    return [
        _case(
            s,
            "wrong type",
            "title",
            st.integers() | wrong_scalars.filter(lambda v: v is not None),
            _set(g, "title"),
        ),
        _case(
            s,
            "wrong type",
            "email",
            st.sampled_from(["no-at-sign", "a@b", "a b@c.d"]) | st.integers(),
            _set(g, "email"),
        ),
        _case(
            s,
            "wrong type",
            "ip",
            st.sampled_from(["999.1.1.1", "localhost", "1.2.3"]),
            _set(g, "ip"),
        ),
        _case(s, "too long", "title", _long(255), _set(g, "title")),
        _case(s, "too long", "description", _long(5000), _set(g, "description")),
        _case(s, "%00", "phone", st.just("%00"), _set(g, "phone")),
        _case(s, "%00", "ip", st.just("127.0.0.1%00"), _set(g, "ip")),
        _case(s, "nul", "company", unstorable, _set(g, "company")),
        _case(s, "unicode", "phone", not_digits, _set(g, "phone")),
        _case(s, "missing", "lead", st.none(), lambda _: g(phone=None, email=None)),
        _case(s, "extra field", "zz_", st.tuples(extra_names, st.integers()), _extra(g)),
        _case(s, "huge", "description", st.just("д" * HUGE), _set(g, "description")),
        _case(s, "nested garbage", "company", garbage, _set(g, "company")),
        _case(s, "nested garbage", "zz_", st.tuples(extra_names, garbage), _extra(g)),
    ]


def _admitad() -> list[tuple[str, st.SearchStrategy[Case]]]:
    a, g = "admitad", admitad_lead
    bad_dates = (
        st.sampled_from(
            ["31.02.1990", "1990-01-01", "1.1.1990", "00.00.0000", "29.02.2023", "٠١.٠١.١٩٩٠", ""]
        )
        | st.integers()
        | st.none()
    )
    bad_decimals = (
        st.sampled_from(["1.234", "-5", "NaN", "Infinity", "1e400", "12345678901.00", "1,5", ""])
        | st.sampled_from([-1, 10**11, 0.001, True, float("nan")])
        | st.lists(st.integers(), max_size=1)
    )
    return [
        _case(a, "wrong type", "first_name", st.integers() | wrong_scalars, _set(g, "first_name")),
        _case(
            a,
            "wrong type",
            "credit_days",
            st.sampled_from([1.5, -1, "3.0", "x", None, "٣"]),
            _set(g, "credit_days"),
        ),
        _case(
            a,
            "wrong type",
            "campaigns",
            st.sampled_from(["x", None, {}, [], [0], [-1], [[]], [{"ids": "x"}]]),
            _set(g, "campaigns"),
        ),
        _case(
            a,
            "wrong type",
            "user_notified",
            st.sampled_from([0, "0", 2, None, 1.0, "yes"]),
            _set(g, "user_notified"),
        ),
        _case(
            a,
            "wrong type",
            "test_mode",
            st.sampled_from([2, "yes", 1.0, None]),
            _set(g, "test_mode"),
        ),
        _case(a, "too long", "first_name", _long(100), _set(g, "first_name")),
        _case(a, "too long", "subid4", _long(120), _set(g, "subid4")),
        _case(a, "too long", "mobile_phone", _long(32), _set(g, "mobile_phone")),
        _case(a, "bad date", "birth_date", bad_dates, _set(g, "birth_date")),
        _case(a, "bad date", "work_date", bad_dates, _set(g, "work_date")),
        _case(a, "bad decimal", "credit_sum", bad_decimals, _set(g, "credit_sum")),
        _case(a, "bad decimal", "work_salary", bad_decimals, _set(g, "work_salary")),
        _case(a, "%00", "subid", st.sampled_from(["%00", "a%00b", "%00" * 10]), _set(g, "subid")),
        _case(a, "%00", "subid3", st.just("x%00"), _set(g, "subid3")),
        _case(a, "nul", "last_name", unstorable, _set(g, "last_name")),
        _case(a, "unicode", "first_name", st.just("😀" * 101), _set(g, "first_name")),
        _case(a, "missing", "campaigns", st.none(), _without(g, "campaigns")),
        _case(a, "missing", "user_notified", st.none(), _without(g, "user_notified")),
        _case(a, "extra field", "zz_", st.tuples(extra_names, st.integers()), _extra(g)),
        _case(a, "huge", "credit_purpose", st.just("я" * HUGE), _set(g, "credit_purpose")),
        _case(a, "huge", "zz_", st.tuples(extra_names, st.just("x" * HUGE)), _extra(g)),
        _case(a, "nested garbage", "first_name", garbage, _set(g, "first_name")),
        _case(
            a,
            "nested garbage",
            "campaigns",
            st.integers(5, 300).map(nested_garbage),
            _set(g, "campaigns"),
        ),
    ]


_BUILDERS = {"kuper": _kuper, "calltouch": _calltouch, "salesman": _salesman, "admitad": _admitad}


def malformed(platform: str, category: str | None = None) -> st.SearchStrategy[Case]:
    """
    One malformed lead of `platform` (of `category` when given): a category
    first, all equally likely, then a case of it.
    """
    by_category: dict[str, list[st.SearchStrategy[Case]]] = {}
    for name, strategy in _BUILDERS[platform]():
        by_category.setdefault(name, []).append(strategy)
    if category is not None:
        return st.one_of(by_category[category])
    return st.sampled_from(sorted(by_category)).flatmap(lambda c: st.one_of(by_category[c]))


def one_of_each(platform: str) -> st.SearchStrategy[list[Case]]:
    """A malformed lead of every category the platform has, plus a few more of any."""
    each = st.tuples(*(malformed(platform, c) for c in PLATFORM_CATEGORIES[platform]))
    more = st.lists(malformed(platform), max_size=3)
    return st.tuples(each, more).map(lambda t: [*t[0], *t[1]])


#: the categories each platform can have (only Admitad has dates and decimals)
PLATFORM_CATEGORIES = {
    p: tuple(c for c in CATEGORIES if p == "admitad" or c not in ("bad date", "bad decimal"))
    for p in PLATFORMS
}


def is_refused_for(case: Case, errors: Any) -> bool:
    """True when some error names the case's field, and every error has a field and a rule."""
    if not errors or not all(e.field and e.rule for e in errors):
        return False
    return any(str(e.field).startswith(case.field) for e in errors)
