"""
Kuper's own examples, copied verbatim from its document (Postman's line
numbers and all): our adapter builds each request example byte for byte,
modulo key order, and reads each response example with the meaning the
document gives it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from worker.leads import Delivery
from worker.outcomes import Delivered
from worker.platforms.kuper import KuperAdapter, KuperDestination

ADAPTER = KuperAdapter()
DEST = KuperDestination(
    name="k", platform="kuper", base_url="https://k.example", username="login", password="pw"
)

#: "Переходим во вкладку "Body", заполняем данные и выполняем запрос"
REQUEST_ONE = """\
3 {
4   "phone": "79537225552",
5   "utm": {
6     "utm_source": "test_ushakov"
7   },
8   "vacancy_id": 3,
9   "city_id": 53,
10  "first_name": "Tect",
11  "last_name": "Test"
12}
"""

#: "На выходе получаем ответ по кандидатам."
RESPONSE_ONE = """\
1 {
2   "created_count": 1,
3   "details": [
4     {
5       "deduplication": {
6         "applied": false,
7         "message": "Правило дедубликации не применено, источник не закреплён за вами"
8       },
9       "error": "",
10      "phone": "79537225552",
11      "success": true
12    }
13  ],
14  "skipped_count": 0,
15  "total_rows": 1
16}
"""

#: the request shown beside the answer for two candidates
REQUEST_TWO = """\
4 {
5   "phone": "79537225552",
6   "utm": {
7     "utm_source": "test_ushakov"
8   },
9   "vacancy_id": 3,
10  "city_id": 53,
11  "first_name": "Тест",
12  "last_name": "Тест"
13 }
"""

#: "Пример ответа по двум и более кандидатам: 1. Первый кандидат не прошел
#: дедубликацию 2. Второй кандидат импортирован успешно"
RESPONSE_TWO = """\
1 {
2   "created_count": 2,
3   "details": [
4     {
5       "deduplication": {
6         "applied": false,
7         "message": "Правило дедубликации не применено, источник не закреплён за вами"
8       },
9       "error": "",
10      "phone": "79537225552",
11      "success": true
12    },
13    {
14      "error": "",
15      "phone": "79237225552",
16      "success": true,
17      "uuid": "a5dc71af-4870-41c4-a816-8bc32146d7d6"
18    }
19  ],
20  "skipped_count": 0,
21  "total_rows": 2
22 }
"""

#: the second candidate of the answer for two ("продублируем словарь с данными второго кандидата")
SECOND_PHONE = "79237225552"
SECOND_UUID = "a5dc71af-4870-41c4-a816-8bc32146d7d6"
NOT_APPLIED = "Правило дедубликации не применено, источник не закреплён за вами"


def text(block: str) -> str:
    """A block of the document without Postman's line numbers."""
    return re.sub(r"(?m)^[0-9]+", "", block)


def example(block: str) -> Any:
    return json.loads(text(block))


def canonical(value: Any) -> str:
    """JSON with sorted keys: equal text is equal bytes modulo key order (3 is not 3.0)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def delivery(i: int, lead: Mapping[str, Any], *, in_doubt: bool = False) -> Delivery:
    """A lead as the door stores it (validated and normalised), claimed for sending."""
    return Delivery(
        id=i,
        lead_id=f"l{i}",
        payload=ADAPTER.validate(lead),
        attempt=2 if in_doubt else 1,
        created_at=datetime.now(UTC),
        in_doubt=in_doubt,
    )


def second_candidate() -> dict[str, Any]:
    return {**example(REQUEST_TWO), "phone": SECOND_PHONE}


@pytest.mark.parametrize("block", [REQUEST_ONE, REQUEST_TWO], ids=["Tect", "Тест"])
def test_each_request_example_is_built_byte_for_byte_modulo_key_order(block: str) -> None:
    """The body is a JSON array of the document's lead objects, sent with Basic Auth."""
    lead = example(block)
    request = ADAPTER.build_request([delivery(1, lead)], DEST)
    assert canonical(json.loads(request.content)) == canonical([lead])
    assert request.method == "POST"
    assert str(request.url) == "https://k.example/partner-candidate/v2/leads/import"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"login:pw").decode()


def test_two_candidates_are_two_objects_of_one_array() -> None:
    """ "Если необходимо импортировать несколько лидов, то продублируем словарь"."""
    leads = [example(REQUEST_TWO), second_candidate()]
    request = ADAPTER.build_request([delivery(i, lead) for i, lead in enumerate(leads)], DEST)
    assert canonical(json.loads(request.content)) == canonical(leads)


@pytest.mark.parametrize("deduplicate", [False, True])
@pytest.mark.parametrize("in_doubt", [False, True])
def test_the_answer_for_one_candidate_is_delivered_without_a_uuid(
    deduplicate: bool, in_doubt: bool
) -> None:
    """created_count 1, success true: imported; the rule was not applied and no uuid given."""
    dest = DEST.model_copy(update={"deduplicate": deduplicate})
    batch = [delivery(1, example(REQUEST_ONE), in_doubt=in_doubt)]
    outcomes = ADAPTER.parse_response(httpx.Response(200, text=text(RESPONSE_ONE)), batch, dest)
    assert outcomes == [
        Delivered(
            external_id=None,
            detail=NOT_APPLIED,
            data={"deduplication": {"applied": False, "message": NOT_APPLIED}},
        )
    ]


@pytest.mark.parametrize("deduplicate", [False, True])
@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["as-sent", "reversed"])
def test_the_answer_for_two_candidates_delivers_both_the_second_with_its_uuid(
    deduplicate: bool, order: tuple[int, int]
) -> None:
    """The first was not deduplicated (imported, no uuid); the second created with its uuid."""
    dest = DEST.model_copy(update={"deduplicate": deduplicate})
    leads = [example(REQUEST_TWO), second_candidate()]
    batch = [delivery(i, leads[i]) for i in order]
    outcomes = ADAPTER.parse_response(httpx.Response(200, text=text(RESPONSE_TWO)), batch, dest)
    expected = [
        Delivered(
            external_id=None,
            detail=NOT_APPLIED,
            data={"deduplication": {"applied": False, "message": NOT_APPLIED}},
        ),
        Delivered(external_id=SECOND_UUID, detail="", data={}),
    ]
    assert outcomes == [expected[i] for i in order]
