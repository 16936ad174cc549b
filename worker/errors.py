"""
Our exceptions. A platform's answer is never an exception: adapters turn it
into outcome values (`worker.outcomes`). Exceptions are for what we refuse.

* LeadRelayError
  + ConfigError            settings or a destination are unusable; raised at start-up,
                           the message names the key
  + LeadInvalid            a lead broke documented rules; carries every FieldError;
                           it is never enqueued
  + PlatformContractError  an answer we cannot map (broken JSON, unknown shape); the
                           delivery loop records it as a transient failure
  + UnknownDestination     a destination name that is not configured
  + AuthRefused            a platform's token endpoint refused our credentials; the
                           destination pauses (never a retry that burns attempts)
  + TokenUnavailable       a platform's token endpoint failed for a passing reason
                           (5xx, 429, a cut connection): the request was not sent and
                           is retried like any transient failure
  + LedgerUnavailable      the ledger could not be reached (after in-process retries)

Messages name the field and the rule, never the value: a value may be a
person's phone or a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class LeadRelayError(Exception):
    """Base of every exception this project raises on purpose."""


class ConfigError(LeadRelayError):
    """A setting or destination is missing or wrong; `key` is where it lives."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: the field's path (`utm.utm_source`, `leads[0].matching`) and the rule."""

    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


class LeadInvalid(LeadRelayError):
    """A lead broke one or more of its platform's documented rules."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid lead")

    @classmethod
    def one(cls, field: str, rule: str) -> LeadInvalid:
        return cls([FieldError(field, rule)])


class PlatformContractError(LeadRelayError):
    """A platform answered in a shape we cannot map; the answer is recorded, not trusted."""


class UnknownDestination(LeadRelayError):
    """A destination name that the configuration does not define."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        listed = ", ".join(sorted(known)) or "none configured"
        super().__init__(f"destination {name!r} is not configured (known: {listed})")
        self.name = name


class AuthRefused(LeadRelayError):
    """A platform refused to issue a token (wrong client secret, too many tokens, no rights)."""


class TokenUnavailable(LeadRelayError):
    """A token endpoint failed for a reason that passes (5xx, 429): nothing was sent."""


class LedgerUnavailable(LeadRelayError):
    """The ledger database did not answer, even after retrying."""


def first_line(exc: BaseException) -> str:
    """
    An error's class and the first line of its text (a driver's own error where
    SQLAlchemy wraps one): enough to act on. Our engines cut a server's error to
    its primary message, so no line of it quotes a value.
    """
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
