"""
The public Python API of lead relay, for upstream code.

    from producers import submit, submit_many, Submission

    lead_id = submit("kuper-main", {"phone": "+7 915 888-11-22", "utm": {"utm_source": "site"},
                                    "vacancy_id": 3, "city_id": 53},
                     idempotency_key="order-1781")

A lead is validated against its platform's documented rules at once: a bad
one raises `LeadInvalid` with every field and rule it broke and is never
stored. The same idempotency key for the same destination gives the same lead
id and never a second delivery.
"""

from producers.client import Producer, confirm_sms, submit, submit_many
from worker.errors import FieldError, LeadInvalid
from worker.intake import Accepted, Submission

__all__ = [
    "Accepted",
    "FieldError",
    "LeadInvalid",
    "Producer",
    "Submission",
    "confirm_sms",
    "submit",
    "submit_many",
]
