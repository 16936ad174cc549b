"""
Admitad broker applications: create (and sync_create + confirm for banks with SMS
verification), the applications list for lookups and status polling, and each
program's campaign_settings.

Auth is OAuth2 client credentials (`auth.py`), one token per destination shared
through the cache. Error bodies are `{"error", "error_description", "error_code"}`:

=========================  ==========================================
answer                     outcome
=========================  ==========================================
503 with error_code 4      Throttled: Admitad's 600 requests/minute
429; 503 with Retry-After  Throttled
other 5xx                  Failed (retried with backoff)
401/403 (error_code 2)     Suspended: no rights; a configuration error
401 after a renewal        Suspended: the token is still refused
404 on create              Suspended: no such website (`website_id`)
400                        Rejected, in Admitad's words
200 with an id             Pending: programs decide later; polled
200 without an id          Delivered in test mode: nothing was created
every program in errors[]  Rejected with their messages
=========================  ==========================================

Staging runs on our side by default (`staging = "client"`): stage N of the
normalised `campaigns` is its own delivery and its own application, sent when
`worker.platforms.admitad.staging` says the stage before it is decided, as ONE group
(`[[17809, 16126]]`: bare ids, `[17809, 16126]`, would be one stage each).
Stage 1 waits its own pause too. `staging = "server"` hands Admitad the whole
algorithm in one create and follows its `responses`.

Before sending, each program's campaign_settings are checked: a program whose
rule the application breaks, or whose settings cannot be fetched after
`settings_attempts` sends, is dropped from the stage (recorded under
`data["dropped"]` with the reason) and the stage goes to its other programs;
only a stage left with no program is rejected.

Admitad has no idempotency key: a marker goes in `subid_field` (our lead id,
`<lead id>.<stage>` from stage 2 on), a lead may not set that field itself,
and a create whose answer was lost is looked up by the marker alone before it
is sent again (Admitad's `algorithm` leaves errored programs out, so it cannot
be matched against what we sent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx

from worker.errors import FieldError, LeadInvalid, PlatformContractError
from worker.leads import Delivery, LeadState
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    Narrowed,
    NotSeen,
    Pending,
    PollAnswer,
    Rejected,
    Retry,
    Settlement,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms.admitad import campaigns as notation
from worker.platforms.admitad import rules, sms, staging
from worker.platforms.admitad.auth import RENEWABLE, AdmitadAuth, error_code
from worker.platforms.admitad.destination import AdmitadDestination
from worker.platforms.base import (
    Adapter,
    FetchFailure,
    KeyValueCache,
    Prerequisite,
    json_body,
    parse_retry_after,
)

#: a program's statuses after which it says no more
FINAL_STATUSES = frozenset({"approved", "declined", "error"})
#: the answer of a bank that waits for the user's SMS code
WAITING_SMS = "waiting_sms_verification"
#: Admitad's error_code for its rate limit (with HTTP 503)
RATE_LIMITED = 4
#: Admitad's error_code for a token without the scope the call needs
NO_RIGHTS = 2
#: applications asked for in one list request when several are polled together
POLL_PAGE = 500
#: the most list pages one polling pass reads (10,000 applications)
POLL_PAGES = 20
#: states of a stage that settled it without any program accepting
REFUSED_STATES = frozenset(
    {LeadState.REJECTED, LeadState.DEAD, LeadState.EXPIRED, LeadState.ERROR, LeadState.UNMATCHED}
)


class AdmitadAdapter(Adapter[AdmitadDestination]):
    """Pure adapter for Admitad's broker applications."""

    platform = "admitad"
    config_model = AdmitadDestination
    deduplicates = False
    poll_batch = POLL_PAGE * POLL_PAGES

    # ------------------------------------------------------------------ the door

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Table rules, consent and `campaigns` normalised to `[{"ids": [...], "pause": n}]`."""
        if not isinstance(raw, Mapping):
            raise LeadInvalid.one("lead", "must be a JSON object")
        errors: list[FieldError] = []
        stages: list[notation.Stage] = []
        try:
            stages = notation.normalise(raw.get("campaigns"))
        except LeadInvalid as exc:
            errors += exc.errors
        out: dict[str, Any] = {}
        try:
            out = rules.validate_fields(raw)
        except LeadInvalid as exc:
            errors += exc.errors
        if (
            raw.get("sms_verification") is True
            and stages
            and len(notation.program_ids(stages)) != 1
        ):
            errors.append(FieldError("campaigns", "one program for an SMS-verified application"))
        if errors:
            raise LeadInvalid(errors)
        out["campaigns"] = notation.to_algorithm(stages)
        return out

    def validate_for(self, raw: Mapping[str, Any], dest: AdmitadDestination) -> dict[str, Any]:
        """`validate`, and the marker's field (`subid_field`) left to us."""
        errors: list[FieldError] = []
        out: dict[str, Any] = {}
        try:
            out = self.validate(raw)
        except LeadInvalid as exc:
            errors += exc.errors
        if isinstance(raw, Mapping) and raw.get(dest.subid_field) not in (None, ""):
            errors.append(
                FieldError(
                    dest.subid_field,
                    "must be left empty: this destination puts the relay's lookup marker "
                    "there (subid_field); use another subid",
                )
            )
        if errors:
            raise LeadInvalid(errors)
        out.pop(dest.subid_field, None)
        return out

    def stages(self, payload: Mapping[str, Any], dest: AdmitadDestination) -> int:
        if dest.staging == "server" or payload.get("sms_verification"):
            return 1
        return len(payload["campaigns"])

    def first_delay(self, payload: Mapping[str, Any], dest: AdmitadDestination) -> timedelta:
        """Stage 1's own pause; with server staging Admitad waits it itself."""
        if dest.staging == "server" and not payload.get("sms_verification"):
            return timedelta(0)
        stages = notation.from_payload(payload.get("campaigns", []))
        return staging.first_delay(stages, minute=dest.pause_minute)

    # ------------------------------------------------------------------ sending

    def build_request(
        self, deliveries: Sequence[Delivery], dest: AdmitadDestination
    ) -> httpx.Request:
        """A create (or sync_create) of one delivery: the stage's programs, or the algorithm."""
        (delivery,) = deliveries
        ids = _send_ids(delivery, dest)
        if delivery.payload.get("sms_verification"):
            (c_id,) = ids
            return self.build_sync_create(delivery.payload, c_id, dest, lead_id=delivery.lead_id)
        form = _fields(delivery.payload, dest, marker(delivery))
        if dest.staging == "server":
            dropped = _dropped(delivery)
            stages = [
                notation.Stage(tuple(i for i in s.ids if i not in dropped), s.pause)
                for s in notation.from_payload(delivery.payload["campaigns"])
            ]
            form["campaigns"] = json.dumps(notation.compact([s for s in stages if s.ids]))
        else:
            # one group: `[17809, 16126]` would be two stages to Admitad, `[[17809, 16126]]` is one
            form["campaigns"] = json.dumps(notation.compact([notation.Stage(tuple(ids))]))
        return httpx.Request("POST", _url(dest, "create/"), data=form)

    def auth(self, dest: AdmitadDestination, cache: KeyValueCache) -> httpx.Auth:
        return AdmitadAuth(dest, cache)

    def parse_response(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: AdmitadDestination
    ) -> Answer:
        (delivery,) = deliveries
        if delivery.payload.get("sms_verification"):
            synced = self.parse_sync_create(response, dest)
            return synced if isinstance(synced, Throttled | Failed | Suspended) else [synced]
        refusal = _refusal(response)
        if refusal is not None:
            return refusal
        body = _object(response)
        if isinstance(body, Failed):
            return body
        if response.status_code >= 400:
            return [Rejected(f"Admitad refused the application: {_words(body)}")]
        created = _created(body, delivery, dest)
        return created if isinstance(created, Failed) else [created]

    # ------------------------------------------------------------------ staging

    def next_stage_due(
        self,
        delivery: Delivery,
        dest: AdmitadDestination,
        state: LeadState,
        data: Mapping[str, Any],
        now: datetime,
    ) -> datetime | None:
        """`staging.next_stage_due` on the stage this delivery carried; None for server staging."""
        if dest.staging == "server" or delivery.stage <= 0:
            return None
        stages = notation.from_payload(delivery.payload.get("campaigns", []))
        verdict = _verdict(delivery, dest, state, data)
        return staging.next_stage_due(
            stages, delivery.stage, verdict, now, minute=dest.pause_minute
        )

    def next_look(
        self,
        delivery: Delivery,
        dest: AdmitadDestination,
        state: LeadState,
        data: Mapping[str, Any],
    ) -> timedelta:
        """
        Soon while the application's stage is undecided (5 s, then doubling up
        to `poll_interval`), so its verdict and the next stage's pause are seen
        on time; `poll_interval` once it is decided.
        """
        interval = timedelta(seconds=dest.poll_interval)
        if state != LeadState.AWAITING_STATUS:
            return interval
        if dest.staging == "client" and delivery.stage > 0:
            undecided = _verdict(delivery, dest, state, data) == "undecided"
        else:
            statuses = [str(r.get("status")) for r in _listed(data.get("responses"))]
            undecided = not statuses or "processing" in statuses
        if not undecided:
            return interval
        return staging.next_look(int(data.get("looks", 1)), interval, first=dest.first_look)

    # ------------------------------------------------------------------ programs' rules

    def prerequisites(self, delivery: Delivery, dest: AdmitadDestination) -> Sequence[Prerequisite]:
        """The campaign_settings of every program this delivery reaches (cached `settings_ttl`)."""
        return [
            Prerequisite(
                rules.settings_key(dest, c_id),
                rules.build_settings_request(c_id, dest),
                dest.settings_ttl,
            )
            for c_id in _send_ids(delivery, dest)
        ]

    def check(
        self,
        delivery: Delivery,
        dest: AdmitadDestination,
        answers: Mapping[str, str],
        failed: Mapping[str, FetchFailure] | None = None,
    ) -> LeadOutcome | Narrowed | None:
        """
        Each program's own rules against the application. A program whose rule
        is broken, or whose settings keep failing to come (`settings_attempts`
        sends), is dropped from the stage with the reason; the stage goes to the
        rest (Narrowed). Rejected only when no program is left. A settings
        fetch that failed for a passing reason retries the lead first.
        """
        failed = failed or {}
        dropped = _dropped(delivery)
        new: dict[int, str] = {}
        waiting: list[str] = []
        for c_id in _send_ids(delivery, dest):
            key = rules.settings_key(dest, c_id)
            if key in failed and failed[key].passing:
                why = failed[key].reason
                if delivery.attempt < dest.settings_attempts:
                    waiting.append(f"{c_id} ({why})")
                else:
                    new[c_id] = f"campaign_settings could not be fetched: {why}"
                continue
            broken = _broken_rules(delivery.payload, c_id, answers.get(key))
            if broken:
                new[c_id] = broken
        if waiting:
            return Retry("campaign_settings could not be fetched for program " + ", ".join(waiting))
        if not new:
            return None
        dropped.update(new)
        data = {"dropped": [{"campaign_id": c, "message": m} for c, m in dropped.items()]}
        words = "; ".join(f"campaign {c}: {m}" for c, m in new.items())
        if not _send_ids(delivery, dest, dropped):
            return Rejected(f"no program of this stage is left: {words}", data=data)
        return Narrowed(data, f"not sent to: {words}")

    # ------------------------------------------------------------------ lookups

    def build_lookup(
        self, delivery: Delivery, dest: AdmitadDestination, now: datetime, page: int = 0
    ) -> httpx.Request | None:
        """
        The applications carrying this delivery's marker in `subid_field`: the
        filter is exact and the marker unique per lead and stage, so one page says.
        """
        params = {dest.subid_field: marker(delivery), "limit": "100", "offset": "0"}
        return httpx.Request("GET", _url(dest, ""), params=params)

    def parse_lookup(
        self, response: httpx.Response, delivery: Delivery, dest: AdmitadDestination
    ) -> LeadOutcome | None:
        """
        The application this delivery created, matched by the marker alone
        (never by `algorithm`, which leaves errored programs out); None to send again.
        """
        for record in _results(response):
            if str(record.get(dest.subid_field)) != marker(delivery):
                continue
            if delivery.payload.get("sms_verification") and not record.get("responses"):
                return Pending(
                    str(record.get("id")),
                    "found at Admitad after the answer was lost; waiting for the SMS code",
                    state=LeadState.WAITING_CODE,
                    wait=dest.code_ttl,
                )
            found = _created(record, delivery, dest)
            if isinstance(found, Failed):
                return None
            if isinstance(found, Pending):
                return Pending(
                    found.external_id,
                    "found at Admitad after the answer to the create was lost",
                    found.data,
                    wait=found.wait,
                )
            return found
        return None

    # ------------------------------------------------------------------ polling

    def build_poll(
        self,
        deliveries: Sequence[Delivery],
        dest: AdmitadDestination,
        now: datetime,
        page: int = 0,
    ) -> httpx.Request | None:
        """
        One application alone: `?id=` (one request, one record). Several: page
        `page` of the list since the day before the oldest was accepted, newest
        first, `POLL_PAGE` records a page, up to `POLL_PAGES` pages; newest
        first, so applications created meanwhile shift the pages down and none
        is skipped. One request per 500 applications instead of one each.
        """
        polled = [d for d in deliveries if d.external_id]
        if not polled or page >= POLL_PAGES:
            return None
        if len(deliveries) == 1 and page == 0:
            params = {"id": str(polled[0].external_id), "limit": "1", "offset": "0"}
        else:
            oldest = min(d.created_at for d in polled) - timedelta(days=1)
            params = {
                "date_start": oldest.strftime("%d.%m.%Y"),
                "order_by": "-date_created",
                "limit": str(POLL_PAGE),
                "offset": str(page * POLL_PAGE),
            }
        return httpx.Request("GET", _url(dest, ""), params=params)

    def parse_poll(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: AdmitadDestination
    ) -> Sequence[PollAnswer] | Throttled | Failed:
        """
        A StatusUpdate per delivery whose application changed; None where
        nothing did; NotSeen where a page of several did not reach it (`last`
        when the list ends on this page).
        """
        refusal = _refusal(response)
        if isinstance(refusal, Suspended):
            return Failed(refusal.reason)
        if refusal is not None:
            return refusal
        if response.status_code != 200:
            return Failed(f"HTTP {response.status_code} to a status poll")
        body, results = _listing(response)
        last = _last_page(body, len(results))
        by_id = {str(r.get("id")): r for r in results}
        answers: list[PollAnswer] = []
        for d in deliveries:
            record = by_id.get(str(d.external_id))
            if record is None and len(deliveries) > 1:
                answers.append(NotSeen(last=last))
            else:
                answers.append(_status(record, d))
        return answers

    # ------------------------------------------------------------------ SMS verification

    def build_sync_create(
        self,
        payload: Mapping[str, Any],
        campaign_id: int,
        dest: AdmitadDestination,
        *,
        lead_id: str | None = None,
    ) -> httpx.Request:
        """`sync_create/` to one program (a bank that verifies the user by SMS)."""
        form = _fields(payload, dest, lead_id)
        form["campaign_id"] = str(campaign_id)
        return httpx.Request("POST", _url(dest, "sync_create/"), data=form)

    def parse_sync_create(
        self, response: httpx.Response, dest: AdmitadDestination
    ) -> LeadOutcome | Throttled | Failed | Suspended:
        """`waiting_sms_verification` + `application_id` → WAITING_CODE until `code_ttl`."""
        refusal = _refusal(response)
        if refusal is not None:
            return refusal
        body = _object(response)
        if isinstance(body, Failed):
            return body
        if response.status_code >= 400:
            return Rejected(f"Admitad refused the application: {_words(body)}")
        if body.get("status") == WAITING_SMS and body.get("application_id") is not None:
            return Pending(
                str(body["application_id"]),
                "waiting for the user's SMS code",
                {"status": WAITING_SMS},
                state=LeadState.WAITING_CODE,
                wait=dest.code_ttl,
            )
        if body.get("application_id") is not None:
            return Pending(str(body["application_id"]), f"created: {body.get('status')}")
        if dest.test_mode:
            return Delivered(detail="test mode: no application created")
        return Failed("sync_create answered without an application_id", in_doubt=True)

    def code_deadline(self, waiting: Delivery, due_at: datetime | None) -> datetime | None:
        """When the lead's code stops counting (`sms.code_deadline`)."""
        return sms.code_deadline(waiting, due_at)

    def code_refusal(self, waiting: Delivery, deadline: datetime | None, now: datetime) -> str:
        """Why the lead takes no code now (`sms.code_refusal`)."""
        return sms.code_refusal(waiting, deadline, now)

    def after_confirm(
        self, waiting: Delivery, outcome: object, deadline: datetime, now: datetime
    ) -> Settlement:
        """The lead after the bank's answer (`sms.after_confirm`)."""
        return sms.after_confirm(waiting, outcome, deadline, now)

    def build_confirm(
        self, application_id: str, code: str, dest: AdmitadDestination
    ) -> httpx.Request:
        """`sync_create/{a_id}/confirm` with the code the user received."""
        path = f"sync_create/{application_id}/confirm"
        return httpx.Request("POST", _url(dest, path), data={"code": code})

    def parse_confirm(
        self, response: httpx.Response, dest: AdmitadDestination
    ) -> LeadOutcome | Failed | Suspended | Throttled:
        """
        The bank's answer to a code. Admitad's own example answers
        `waiting_sms_verification` to a confirm, so the answer does not say
        whether the code was right: any answer means "look at the application"
        (Pending, polled soon like any other). A 4xx is a refused code (Rejected:
        the lead may take another until the code expires).
        """
        refusal = _refusal(response)
        if refusal is not None:
            return refusal
        body = _object(response)
        if isinstance(body, Failed):
            return body
        if response.status_code >= 400:
            return Rejected(f"Admitad refused the code: {_words(body)}")
        status = str(body.get("status", ""))[:100]
        a_id = str(body.get("application_id") or "") or None
        return Pending(
            a_id,
            f"code passed to the bank; Admitad answered {status or 'without a status'}",
            {"confirm": status},
            wait=_first_look(dest),
        )

    # overrides of the common reading, so the delivery loop's lookups agree with us
    def throttle_or_failure(self, response: httpx.Response) -> Throttled | Failed | None:
        refusal = _refusal(response)
        return refusal if isinstance(refusal, Throttled | Failed) else None


# ---------------------------------------------------------------------- helpers


def _url(dest: AdmitadDestination, tail: str) -> str:
    return f"{dest.base_url}/website/{dest.website_id}/broker/applications/{tail}"


def _stage_ids(delivery: Delivery, dest: AdmitadDestination) -> list[int]:
    """The programs this delivery goes to: its stage's, or all of them (server staging)."""
    stages = notation.from_payload(delivery.payload["campaigns"])
    if dest.staging == "server" or delivery.stage <= 0 or delivery.payload.get("sms_verification"):
        return notation.program_ids(stages)
    return list(stages[delivery.stage - 1].ids)


def marker(delivery: Delivery) -> str:
    """
    What goes in `subid_field` to find this delivery's application again: our
    lead id, and from stage 2 on `<lead id>.<stage>` (each stage is its own
    application, so each needs its own marker). 34 characters at most: every
    subid (50, subid4 120) holds it.
    """
    return delivery.lead_id if delivery.stage <= 1 else f"{delivery.lead_id}.{delivery.stage}"


def _first_look(dest: AdmitadDestination) -> timedelta:
    """The first look at a new application: soon, and never later than poll_interval."""
    return min(dest.first_look, timedelta(seconds=dest.poll_interval))


def _dropped(delivery: Delivery) -> dict[int, str]:
    """Programs left out of this delivery before sending (a broken rule of theirs): id → why."""
    return _dropped_in(delivery.data)


def _dropped_in(data: Mapping[str, Any]) -> dict[int, str]:
    """The programs a delivery's data records as dropped: id → why."""
    return {
        int(d["campaign_id"]): str(d.get("message", ""))
        for d in data.get("dropped") or []
        if isinstance(d, Mapping) and isinstance(d.get("campaign_id"), int)
    }


def _send_ids(
    delivery: Delivery, dest: AdmitadDestination, dropped: Mapping[int, str] | None = None
) -> list[int]:
    """The programs this delivery goes to: its stage's (or all), less the dropped ones."""
    left_out = _dropped(delivery) if dropped is None else dropped
    return [c_id for c_id in _stage_ids(delivery, dest) if c_id not in left_out]


def _broken_rules(payload: Mapping[str, Any], c_id: int, text: str | None) -> str:
    """The program's own rules the application breaks, in words; empty when none (or unknown)."""
    if text is None:
        return ""
    try:
        program = rules.parse_settings(text)
    except PlatformContractError:
        return ""  # unreadable settings: Admitad itself judges the application
    errors = rules.check_program(payload, c_id, program)
    return "; ".join(f"{e.field.removeprefix(f'campaign {c_id}: ')}: {e.rule}" for e in errors)


def _listed(value: Any) -> list[Mapping[str, Any]]:
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def _verdict(
    delivery: Delivery, dest: AdmitadDestination, state: LeadState, data: Mapping[str, Any]
) -> staging.Verdict:
    """
    The verdict on the stage this delivery carried: refused when it settled
    without reaching any program; otherwise from each program's answer
    (`worker.platforms.admitad.staging.decide`): a response, an entry in `errors[]`, or dropped.
    """
    if state in REFUSED_STATES:
        return "refused"
    statuses: dict[int, str] = {}
    for r in _listed(data.get("responses")):
        if isinstance(r.get("campaign_id"), int):
            statuses[int(r["campaign_id"])] = str(r.get("status"))
    answered = _error_ids(data) | set(_dropped_in(data))
    return staging.decide(_stage_ids(delivery, dest), statuses, answered, dest.accepted_statuses)


def _last_page(body: Mapping[str, Any], count: int) -> bool:
    """Whether a list answer is its last page: `_meta` says so, or the page is short."""
    meta = body.get("_meta")
    if isinstance(meta, Mapping):
        total, offset = meta.get("count"), meta.get("offset")
        if isinstance(total, int) and isinstance(offset, int):
            return offset + count >= total
    return count < POLL_PAGE


def _fields(
    payload: Mapping[str, Any], dest: AdmitadDestination, mark: str | None
) -> dict[str, str]:
    """The application's fields as form data, consent given, the marker in `subid_field`."""
    form = {k: str(v) for k, v in payload.items() if k not in rules.CONTROL_FIELDS}
    form["user_notified"] = "1"
    if mark is not None:
        form[dest.subid_field] = mark
    if dest.test_mode or payload.get("test_mode") == 1:
        form["test_mode"] = "1"
    return form


def _refusal(response: httpx.Response) -> Throttled | Failed | Suspended | None:
    """Admitad's answers about the request rather than the application."""
    status, code = response.status_code, error_code(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and (code == RATE_LIMITED or retry_after is not None)):
        return Throttled(retry_after, f"Admitad rate limit (HTTP {status}, error_code {code})")
    if status >= 500:
        return Failed(f"HTTP {status}")
    if status in (401, 403):
        if code == NO_RIGHTS:
            why = "the application has no rights for this call (error_code 2): check its scopes"
        elif code in RENEWABLE:
            why = f"the token is refused even after renewal (error_code {code})"
        else:
            why = f"access refused (HTTP {status}, error_code {code})"
        return Suspended(f"Admitad: {why}")
    if status == 404:
        return Suspended(f"Admitad: HTTP 404: check website_id and base_url (error_code {code})")
    return None


def _object(response: httpx.Response) -> Mapping[str, Any] | Failed:
    try:
        body = json_body(response)
    except PlatformContractError as exc:
        return Failed(str(exc))
    if not isinstance(body, Mapping):
        return Failed(f"HTTP {response.status_code} answer is JSON but not an object")
    return body


def _words(body: Mapping[str, Any]) -> str:
    """Admitad's own words from an error body: its description, or each field's messages."""
    if body.get("error_description") or body.get("error"):
        words = str(body.get("error_description") or body.get("error"))
    else:
        parts = []
        for name, messages in body.items():
            listed = messages if isinstance(messages, list) else [messages]
            parts.append(f"{name}: {' '.join(str(m) for m in listed)}")
        words = "; ".join(parts) or "no reason given"
    return words[:500]


def _programs(record: Mapping[str, Any]) -> set[int]:
    """Every program an application's algorithm names."""
    ids: set[int] = set()
    for stage in record.get("algorithm") or []:
        if isinstance(stage, Mapping):
            ids.update(int(i) for i in stage.get("ids") or [])
    return ids


def _error_ids(record: Mapping[str, Any]) -> set[int]:
    return {
        int(e["campaign_id"])
        for e in record.get("errors") or []
        if isinstance(e, Mapping) and e.get("campaign_id") is not None
    }


def _created(
    body: Mapping[str, Any], delivery: Delivery, dest: AdmitadDestination
) -> LeadOutcome | Failed:
    """A create's answer (or the same application found in the list) as an outcome."""
    responses = list(body.get("responses") or [])
    errors = list(body.get("errors") or [])
    data = {"responses": responses, "errors": errors, "algorithm": body.get("algorithm") or []}
    if body.get("id") is None:
        if dest.test_mode or delivery.payload.get("test_mode") == 1:
            return Delivered(detail="test mode: no application created", data=data)
        # not test mode, yet no id: whether an application exists is unknown; look first
        return Failed("Admitad answered a create without an application id", in_doubt=True)
    if not responses and set(_send_ids(delivery, dest)) <= _error_ids(body):
        words = "; ".join(f"{e.get('campaign_id')}: {e.get('message')}" for e in errors)
        return Rejected(f"no program takes this application: {words}", data=data)
    return Pending(str(body["id"]), _summary(responses), data, wait=_first_look(dest))


def _summary(responses: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{r.get('campaign_id')}: {r.get('status')}" for r in responses)


def _results(response: httpx.Response) -> list[Mapping[str, Any]]:
    return _listing(response)[1]


def _listing(response: httpx.Response) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    """A list answer read once: its body and its records."""
    body = json_body(response)
    results = body.get("results") if isinstance(body, Mapping) else None
    if not isinstance(results, list):
        raise PlatformContractError("applications list without a results list")
    return body, [r for r in results if isinstance(r, Mapping)]


def application_state(record: Mapping[str, Any]) -> LeadState:
    """
    An application's state from its programs' responses: awaiting while any
    program is `processing` or `waiting` (or is still to be sent by the
    algorithm); then approved if any approved, else declined if any declined,
    else error.
    """
    responses = [r for r in record.get("responses") or [] if isinstance(r, Mapping)]
    statuses = {str(r.get("status")) for r in responses}
    responded = {int(r["campaign_id"]) for r in responses if r.get("campaign_id") is not None}
    still_to_send = _programs(record) - _error_ids(record) - responded
    if still_to_send or not statuses <= FINAL_STATUSES:
        return LeadState.AWAITING_STATUS
    if "approved" in statuses:
        return LeadState.APPROVED
    if "declined" in statuses:
        return LeadState.DECLINED
    return LeadState.ERROR


def _status(record: Mapping[str, Any] | None, delivery: Delivery) -> StatusUpdate | None:
    """The application's state and per-program responses; None when nothing changed."""
    if record is None:
        return None
    responses = list(record.get("responses") or [])
    state = application_state(record)
    if state == delivery.state and responses == list(delivery.data.get("responses") or []):
        return None
    data: dict[str, Any] = {"responses": responses}
    if record.get("errors"):
        data["errors"] = list(record["errors"])
    return StatusUpdate(state, _summary(responses), data)
