"""
`LeadStatus` from what the ledger read: the lead's own state from its deliveries',
and every free text redacted and cut short. Pure: no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from producers.lead_status import DETAIL_CHARS, LeadStatus
from worker.leads import LeadState
from worker.ledger.status import AttemptSeen, DeliverySeen, LeadSeen

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def delivery(stage: int, state: str, detail: str = "") -> DeliverySeen:
    return DeliverySeen(
        stage=stage,
        state=state,
        attempts=1,
        in_doubt=False,
        due_at=None,
        settled_at=None,
        external_id=None,
        detail=detail,
    )


def seen(*deliveries: DeliverySeen, attempts: tuple[AttemptSeen, ...] = ()) -> LeadSeen:
    return LeadSeen(
        id="a" * 32,
        destination="admitad",
        idempotency_key=None,
        source="api",
        accepted_at=NOW,
        deliveries=deliveries,
        attempts=attempts,
    )


@pytest.mark.parametrize(
    ("states", "lead", "final"),
    [
        (["queued"], "queued", False),
        (["delivered"], "delivered", True),
        (["awaiting_status", "held"], "awaiting_status", False),
        (["declined", "sending"], "sending", False),
        (["approved", "queued"], "queued", False),  # stage 2 after its pause
        (["declined", "approved", "rejected"], "approved", True),
        (["rejected", "declined"], "declined", True),
        (["dead", "expired"], "expired", True),
    ],
)
def test_the_leads_state_is_the_first_moving_delivery_or_the_best_final_one(
    states: list[str], lead: str, final: bool
) -> None:
    status = LeadStatus.from_seen(seen(*(delivery(i + 1, s) for i, s in enumerate(states))))
    assert (status.state, status.final) == (LeadState(lead), final)


def test_details_are_redacted_and_cut_short() -> None:
    attempt = AttemptSeen(
        stage=0,
        kind="send",
        at=NOW + timedelta(seconds=1),
        status_code=400,
        outcome="rejected",
        detail="phone +7 916 123-45-67 taken by ivan@example.com; key s3cr3t-key",
        elapsed_ms=12,
    )
    status = LeadStatus.from_seen(
        seen(delivery(0, "rejected", "x" * 5000), attempts=(attempt,)), ["s3cr3t-key"]
    )
    detail = status.attempts[0].detail
    assert "916" not in detail and "ivan@" not in detail and "s3cr3t" not in detail
    assert detail.startswith("phone ***")
    assert len(status.deliveries[0].detail) == DETAIL_CHARS
    assert status.deliveries[0].detail.endswith("…")


def test_an_unknown_state_in_the_ledger_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="'teleported' is not a valid LeadState"):
        LeadStatus.from_seen(seen(delivery(0, "teleported")))


def test_the_model_documents_every_field() -> None:
    schema = LeadStatus.model_json_schema()
    models = [("LeadStatus", schema), *schema["$defs"].items()]
    for name, model in [(n, m) for n, m in models if "properties" in m]:  # not the enum
        undocumented = [f for f, spec in model["properties"].items() if not spec.get("description")]
        assert undocumented == [], name
    assert {"AttemptStatus", "DeliveryStatus"} <= set(schema["$defs"])
