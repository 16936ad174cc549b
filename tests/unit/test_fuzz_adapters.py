"""
Fuzzing every adapter in the registry (hypothesis): bad leads are refused with
field and rule, never a crash; any platform answer maps to outcomes, never an
exception that would kill a task.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import TABLES
from tests.fuzz_strategies import GOOD
from worker.delivery.exchange import Exchange
from worker.delivery.loop import read_answer
from worker.errors import LeadInvalid, PlatformContractError
from worker.leads import Delivery
from worker.outcomes import (
    Delivered,
    Failed,
    NotSeen,
    Pending,
    Rejected,
    Retry,
    Split,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms import REGISTRY
from worker.platforms.base import Adapter
from worker.platforms.kuper import KuperAdapter

ADAPTERS = sorted(REGISTRY.items())

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=400)
    | st.sampled_from(["", "%00", "79158881122", "+7 (915) 888-11-22", "31.12.1990", "12.345", "٣"])
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=20), c, max_size=5),
    max_leaves=25,
)
FIELD_NAMES = [
    "phone",
    "utm",
    "vacancy_id",
    "city_id",
    "first_name",
    "last_name",
    "email",
    "title",
    "matching",
    "addCustomFields",
    "campaigns",
    "user_notified",
    "birth_date",
    "subid",
    "credit_sum",
    "credit_days",
    "passport_cn",
    "inn",
    "description",
    "ip",
    "x",
]
leads = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=10), json_values, max_size=12
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("platform", "adapter"), ADAPTERS, ids=[str(p) for p, _ in ADAPTERS])
@FUZZ
@given(raw=leads | json_values)
def test_any_lead_is_either_normalised_or_refused_by_field_and_rule(
    platform: object, adapter: Adapter[Any], raw: Any
) -> None:
    try:
        payload = adapter.validate(raw)
    except LeadInvalid as exc:
        refusal = exc
    else:
        assert isinstance(payload, dict)
        json.dumps(payload)  # what the ledger stores must be JSON
        assert adapter.validate(payload) == payload  # normalising is idempotent
        return
    assert refusal.errors
    assert all(e.field and e.rule for e in refusal.errors)


answers = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda details: json.dumps({"details": details, "data": {"leads": details}}).encode(),
        st.lists(
            st.dictionaries(
                st.sampled_from(
                    ["phone", "success", "error", "uuid", "isCustomFieldsAdded", "deduplication"]
                ),
                json_values,
            ),
            max_size=4,
        ),
    ),
)


@pytest.mark.parametrize(("platform", "adapter"), ADAPTERS, ids=[str(p) for p, _ in ADAPTERS])
@FUZZ
@given(
    status=st.sampled_from([200, 201, 400, 401, 403, 404, 422, 429, 500, 502, 503]),
    body=answers,
    count=st.integers(1, 3),
    content_type=st.sampled_from(["application/json", "text/html"]),
)
def test_any_answer_maps_to_outcomes_and_never_raises(
    platform: object, adapter: Adapter[Any], status: int, body: bytes, count: int, content_type: str
) -> None:
    dest = _destination(adapter)
    count = min(count, dest.batch_size)  # the loop never sends more than the table allows
    batch = [
        Delivery(
            id=i,
            lead_id=f"l{i}",
            payload={"phone": "79158881122"},
            attempt=1,
            created_at=datetime.now(UTC),
            stage=1,
        )
        for i in range(count)
    ]
    response = httpx.Response(status, content=body, headers={"Content-Type": content_type})
    answer = adapter.parse_response(response, batch, dest)
    if isinstance(answer, list):
        assert len(answer) == count
        assert all(isinstance(o, Delivered | Pending | Rejected | Retry) for o in answer)
    else:
        assert isinstance(answer, Throttled | Suspended | Failed | Split)


def _destination(adapter: Adapter[Any]) -> Any:
    table = TABLES[str(adapter.platform)]("http://127.0.0.1:9")
    return adapter.config_model.model_validate({**table, "name": "fuzz"})


# --- every parser, answers shaped like each platform's with anything in them -------------

#: the keys the adapters read, so fuzzed answers reach past the first shape check
KNOWN_KEYS = [
    "Error",
    "algorithm",
    "apiErrorData",
    "application_id",
    "applied",
    "campaign_id",
    "campaigns",
    "code",
    "crm",
    "data",
    "datum",
    "datum_do",
    "deduplication",
    "details",
    "error",
    "errorCode",
    "errorMessage",
    "error_code",
    "error_description",
    "errors",
    "expires_in",
    "fieldPath",
    "field_name",
    "id",
    "ids",
    "isCustomFieldsAdded",
    "matchedType",
    "message",
    "open",
    "pause",
    "phone",
    "processed",
    "result",
    "results",
    "rezult",
    "rezultName",
    "status",
    "statusName",
    "success",
    "text",
    "title",
    "type",
    "userName",
    "uuid",
    "validationErrorData",
    "violations",
    "leads",
    "0",
    "1",
]
shaped = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KNOWN_KEYS), c, max_size=6),
    max_leaves=40,
)
#: huge answers, drawn by name so a failing example prints a name, not megabytes
HUGE_BODIES = {
    "3 MB of text": b"x" * 3_000_000,
    "50k details": json.dumps(
        {"details": [{"phone": "79158881122", "success": True}] * 50_000}
    ).encode(),
    "5k-digit id": json.dumps({"result": {"text": "Success", "id": "9" * 5000}}).encode(),
    "50k-deep list": b"[" * 50_000 + b"]" * 50_000,
    "100k-digit number": b'{"data": ' + b"1" * 100_000 + b"}",
}
any_answers = st.one_of(
    answers,
    shaped.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: b"<b>Notice</b>: PHP junk " + json.dumps(v).encode()),
    st.sampled_from(sorted(HUGE_BODIES)),
)
headers = st.fixed_dictionaries(
    {"Content-Type": st.sampled_from(["application/json", "text/html", "", "x/y; charset=koi8"])},
    optional={"Retry-After": st.sampled_from(["", "-1", "9" * 40, "Wed, 21 Oct 2015", "1.5"])},
)
LOOKUP = Delivered | Pending | Rejected | Retry | NotSeen | type(None)
POLL = StatusUpdate | NotSeen | type(None)


@pytest.mark.parametrize(("platform", "adapter"), ADAPTERS, ids=[str(p) for p, _ in ADAPTERS])
def test_every_parser_maps_any_answer_to_a_value_and_never_raises(
    platform: object, adapter: Adapter[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Arbitrary status, headers and body to every parse hook: a value back, never an exception."""
    dest = _destination(adapter)
    counts: Counter[str] = Counter()

    @settings(
        max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(
        status=st.integers(100, 599) | st.sampled_from([200, 400, 401, 403, 429, 500, 503]),
        body=any_answers,
        head=headers,
        count=st.integers(1, 3),
        external=st.none() | st.sampled_from(["1", "17", "abc", ""]),
    )
    def run(
        status: int, body: bytes | str, head: dict[str, str], count: int, external: str | None
    ) -> None:
        batch = [
            Delivery(
                id=i,
                lead_id=f"l{i}",
                payload=_good_payload(adapter),
                attempt=2,
                created_at=datetime.now(UTC),
                stage=1,
                external_id=external,
                in_doubt=i % 2 == 1,
            )
            for i in range(min(count, dest.batch_size))
        ]
        content = HUGE_BODIES[body] if isinstance(body, str) else body
        response = httpx.Response(status, content=content, headers=head)
        answer = adapter.parse_response(response, batch, dest)
        if isinstance(answer, list):
            assert len(answer) == len(batch)
            assert all(isinstance(o, Delivered | Pending | Rejected | Retry) for o in answer)
            counts["lead outcomes"] += 1
        else:
            assert isinstance(answer, Throttled | Suspended | Failed | Split)
            counts[type(answer).__name__] += 1
        # Lookups and polls may refuse an answer with PlatformContractError, as
        # documented: the lookups (worker.delivery.checks) and polling catch it: not a crash.
        try:
            assert isinstance(adapter.parse_lookup(response, batch[0], dest), LOOKUP)
        except PlatformContractError:
            counts["lookup contract error"] += 1
        try:
            polled = adapter.parse_poll(response, batch, dest)
        except PlatformContractError:
            polled = Failed("contract")
        if isinstance(polled, Throttled | Failed):
            counts["poll " + type(polled).__name__] += 1
        else:
            assert len(polled) == len(batch) and all(isinstance(p, POLL) for p in polled)
        assert isinstance(adapter.parse_info(response), Mapping)
        for hook in ("parse_sync_create", "parse_confirm"):  # Admitad's bank flow
            parse = getattr(adapter, hook, None)
            if parse is not None:
                outcome = parse(response, dest)
                assert isinstance(
                    outcome, Delivered | Pending | Rejected | Retry | Throttled | Suspended | Failed
                )
        counts["tried"] += 1

    run()
    with capsys.disabled():
        unmapped = sum(v for k, v in counts.items() if "Failed" in k)
        print(
            f"\nfuzz: {platform} parsers tried={counts['tried']} failed_recorded={unmapped} "
            f"crashed=0 {dict(sorted(counts.items()))}"
        )


def _good_payload(adapter: Adapter[Any]) -> dict[str, Any]:
    return adapter.validate(GOOD[str(adapter.platform)]())


class _Exploding(KuperAdapter):
    def parse_response(self, response: httpx.Response, deliveries: Any, dest: Any) -> Any:
        raise KeyError("an answer no adapter expected")


def test_a_parser_that_raises_becomes_a_recorded_failure_not_a_dead_task() -> None:
    """`delivery.read_answer` is the net under every adapter: an exception is a Failed."""
    adapter = _Exploding()
    dest = _destination(adapter)
    exchange = Exchange(
        request=httpx.Request("POST", "http://127.0.0.1:9"),
        kind="send",
        destination=dest.name,
        at=datetime.now(UTC),
        response=httpx.Response(200, content=b"{}"),
    )
    batch = [Delivery(1, "l1", {"phone": "79158881122"}, 1, datetime.now(UTC))]
    answer = read_answer(adapter, dest, exchange, batch)
    assert isinstance(answer, Failed) and "KeyError" in answer.reason
