"""
Fuzzing every adapter in the registry (hypothesis): bad leads are refused with
field and rule, never a crash; any platform answer maps to outcomes, never an
exception that would kill a task.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import TABLES
from worker.errors import LeadInvalid
from worker.leads import Delivery
from worker.outcomes import Delivered, Failed, Pending, Rejected, Retry, Suspended, Throttled
from worker.platforms import REGISTRY
from worker.platforms.base import Adapter

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
    count = min(count, adapter.max_batch)  # the loop never sends more than an adapter takes
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
        assert isinstance(answer, Throttled | Suspended | Failed)


def _destination(adapter: Adapter[Any]) -> Any:
    table = TABLES[str(adapter.platform)]("http://127.0.0.1:9")
    return adapter.config_model.model_validate({**table, "name": "fuzz"})
