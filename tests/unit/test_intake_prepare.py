"""
What `intake.prepare` hands the ledger: the payload's JSON text, checked once for
what PostgreSQL's jsonb refuses, and a version 4 UUID for an id (given, or its own).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.factories import kuper_lead, kuper_table
from worker.errors import LeadInvalid
from worker.intake import Submission, new_lead_id, new_lead_ids, prepare
from worker.settings import Settings, load, parse_destinations


@pytest.fixture(scope="module")
def settings() -> Settings:
    tables = {"k": kuper_table("http://127.0.0.1:9")}
    return load(database_url="sqlite://", destinations=parse_destinations(tables))


def test_the_json_text_is_the_payload_as_stored(settings: Settings) -> None:
    lead = prepare(settings, "k", Submission(kuper_lead(first_name="Иван")), "api")
    assert lead.payload_json is not None
    assert json.loads(lead.payload_json) == lead.payload
    assert "Иван" in lead.payload_json  # kept as text, not \\u escapes


def test_a_nul_jsonb_refuses_is_refused_naming_the_field(settings: Settings) -> None:
    with pytest.raises(LeadInvalid) as caught:
        prepare(settings, "k", Submission(kuper_lead(first_name="a\x00b")), "api")
    rule = "must not contain a NUL character (\\u0000)"
    assert [(e.field, e.rule) for e in caught.value.errors] == [("first_name", rule)]


def test_a_lone_surrogate_is_refused_naming_the_field(settings: Settings) -> None:
    with pytest.raises(LeadInvalid) as caught:
        prepare(settings, "k", Submission(kuper_lead(first_name="a\ud800b")), "api")
    assert [e.field for e in caught.value.errors] == ["first_name"]


def test_a_backslash_the_lead_wrote_itself_is_stored(settings: Settings) -> None:
    """`\\u0000` typed as six characters is text jsonb takes: only a real NUL is refused."""
    lead = prepare(settings, "k", Submission(kuper_lead(first_name="a\\u0000b")), "api")
    assert lead.payload["first_name"] == "a\\u0000b"
    assert lead.payload_json is not None
    assert json.loads(lead.payload_json)["first_name"] == "a\\u0000b"


def test_lead_ids_are_random_version_4_uuids() -> None:
    ids = new_lead_ids(2000) + new_lead_ids(1) + [new_lead_id() for _ in range(100)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.hex == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_lead_takes_the_id_it_is_given(settings: Settings) -> None:
    (given,) = new_lead_ids(1)
    assert prepare(settings, "k", Submission(kuper_lead()), "api", given).id == given
    assert len(prepare(settings, "k", Submission(kuper_lead()), "api").id) == 32
