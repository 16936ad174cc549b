"""Redaction: secrets and personal data never reach a record unmasked; ids survive."""

from __future__ import annotations

import json

import httpx

from worker.ops.redact import MASK, redact_request, redact_text, redact_url, redact_value


def test_keys_mask_secrets_and_personal_data_at_any_depth() -> None:
    data = {
        "phone": "79158881122",
        "utm": {"utm_source": "site"},
        "nested": [{"passport_cn": "4510 123456"}],
        "vacancy_id": 3,
    }
    out = redact_value(data)
    assert out == {
        "phone": MASK,
        "utm": {"utm_source": "site"},
        "nested": [{"passport_cn": MASK}],
        "vacancy_id": 3,
    }


def test_free_text_loses_phones_emails_and_credentials() -> None:
    text = "call +7 (915) 888-11-22 or ivan@example.com; Authorization: Bearer abc.def"
    out = redact_text(text)
    assert "888" not in out and "example.com" not in out and "abc.def" not in out


def test_configured_secrets_are_masked_wherever_they_hide() -> None:
    assert "hunter2secret" not in redact_text("oops hunter2secret leaked", ["hunter2secret"])


def test_uuids_and_ids_are_kept() -> None:
    assert (
        redact_text("a5dc71af-4870-41c4-a816-8bc32146d7d6")
        == "a5dc71af-4870-41c4-a816-8bc32146d7d6"
    )


def test_query_string_apikey_and_login_are_masked() -> None:
    url = redact_url(
        "https://crm.example/developer/v1/leads?login=a%40b.ru&apikey=KEY123&action=add"
    )
    assert "KEY123" not in url and "a%40b.ru" not in url and "action=add" in url


def test_request_record_masks_auth_headers_and_form_fields() -> None:
    request = httpx.Request(
        "POST",
        "https://crm.example/x",
        data={"apikey": "K", "phone": "79990001122", "action": "add"},
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
    )
    record = redact_request(request)
    dumped = json.dumps(record)
    assert "dXNlcjpwYXNz" not in dumped and "79990001122" not in dumped
    assert record["body"]["action"] == "add"
