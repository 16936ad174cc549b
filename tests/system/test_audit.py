"""
The personal-data and secrets audit: the full workload on real processes
(worker with task events, beat, Flower) against all four emulators, then every
log line, every ledger cell, every Redis key and Flower's task API searched
for each configured secret and each submitted person's data, raw and in its
common normalised forms. 0 hits, outside `leads.payload` (the lead's own data,
which the ledger keeps until `leadrelay purge`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import String, cast, select

from producers.client import Producer
from sandbox import admitad, calltouch, free_port, kuper, salesman, serve
from tests.factories import admitad_table, calltouch_table, kuper_table, salesman_table
from tests.system.conftest import Relay
from worker import ledger
from worker.delivery.context import WorkerContext, build
from worker.errors import LeadRelayError
from worker.leads import FINAL_STATES
from worker.ledger.tables import Base, DeliveryRow, LeadRow
from worker.settings import load, parse_destinations

pytestmark = pytest.mark.timeout(180)

KUPER_PASSWORD = "kuperPW-zq81x"
CALLTOUCH_TOKEN = "ctTOKEN-vb72k"
CALLTOUCH_SITE = "904417"
ADMITAD_SECRET = "admSECRET-pw39m"
ADMITAD_CLIENT = "admCLIENT-h5r2"
SALESMAN_KEY = "smKEY-ty64n"
SALESMAN_LOGIN = "auditor.sm@corp-example.org"
FLOWER_AUTH = ("ops", "flowerPW-mm27q")
SECRETS = (
    KUPER_PASSWORD,
    CALLTOUCH_TOKEN,
    ADMITAD_SECRET,
    SALESMAN_KEY,
    SALESMAN_LOGIN,
    FLOWER_AUTH[1],
)
CELERY = [sys.executable, "-m", "celery", "-A", "worker"]
#: the one place the ledger must keep a lead's own data
KEEPS_PERSONAL_DATA = {("leads", "payload")}


def phone(n: int) -> str:
    return f"+7 (917) 31{n // 100 % 10}-{n % 100:02d}-{(n * 7) % 100:02d}"


PHONES: list[str] = []
EMAILS: list[str] = []
DOCUMENTS: list[str] = []  # passport numbers and INN


def person(n: int) -> tuple[str, str]:
    p, e = phone(n), f"audit.person{n}@mail-example.net"
    PHONES.append(p)
    EMAILS.append(e)
    return p, e


def kuper_leads(base: int, count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(base, base + count):
        p, _ = person(n)
        out.append({"phone": p, "utm": {"utm_source": "audit"}, "vacancy_id": 3, "city_id": 53})
    return out


def calltouch_leads(base: int, count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(base, base + count):
        p, e = person(n)
        out.append(
            {
                "matching": [
                    {"type": "leadContact", "leadContactParams": {"phones": [p], "emails": [e]}}
                ],
                "addCustomFields": {"customFields": [{"field": "stage", "value": "won"}]},
            }
        )
    return out


def salesman_leads(base: int, count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(base, base + count):
        p, e = person(n)
        out.append({"title": "Аудит Лидов", "phone": p, "email": e, "utm_source": "site"})
    return out


def admitad_leads(base: int, count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(base, base + count):
        p, e = person(n)
        passport, inn = f"45{n % 100:02d} 8{n:05d}", f"77{n:010d}"
        DOCUMENTS.extend([passport, inn])
        out.append(
            {
                "campaigns": [17809],
                "user_notified": 1,
                "first_name": "Ivan",
                "last_name": "Ivanov",
                "mobile_phone": re.sub(r"\D", "", p),
                "email": e,
                "passport_cn": passport,
                "inn": inn,
                "credit_sum": "150000.00",
                "credit_days": 30,
            }
        )
    return out


def forms(value: str) -> set[str]:
    """A value as it may show up: raw, JSON- and URL-encoded, and a phone's digit forms."""
    out = {value, quote(value), quote_plus(value), json.dumps(value)[1:-1]}
    digits = re.sub(r"\D", "", value)
    if "@" not in value and len(digits) >= 10:
        out |= {digits, digits[-10:], "7" + digits[-10:], "8" + digits[-10:]}
    if " " in value:
        out.add(value.replace(" ", ""))
    return {f for f in out if len(f) >= 6}


def mask(value: str) -> str:
    return value[:2] + "…" + value[-2:] if len(value) > 5 else "…"


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[dict[str, str]]:
    with (
        serve(kuper.create_app(username="partner", password=KUPER_PASSWORD)) as k,
        serve(calltouch.create_app(site_id=CALLTOUCH_SITE, access_token=CALLTOUCH_TOKEN)) as c,
        serve(admitad.create_app(client_id=ADMITAD_CLIENT, client_secret=ADMITAD_SECRET)) as a,
        serve(salesman.create_app(login=SALESMAN_LOGIN, api_key=SALESMAN_KEY)) as s,
    ):
        yield {"kuper": k, "calltouch": c, "admitad": a, "salesman": s}


def tables(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        "kuper-audit": kuper_table(urls["kuper"], password=KUPER_PASSWORD),
        "calltouch-audit": calltouch_table(
            urls["calltouch"], access_token=CALLTOUCH_TOKEN, site_id=CALLTOUCH_SITE
        ),
        "admitad-audit": admitad_table(
            urls["admitad"], client_id=ADMITAD_CLIENT, client_secret=ADMITAD_SECRET
        ),
        "salesman-audit": salesman_table(
            urls["salesman"], login=SALESMAN_LOGIN, api_key=SALESMAN_KEY
        ),
    }


def start_flower(relay: Relay) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (relay.workdir / "flower.log").open("ab")
    proc = subprocess.Popen(
        [*CELERY, "flower", f"--port={port}", "--address=127.0.0.1", "--read_only=true"],
        env={**relay.env, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=relay.workdir,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 45
    while True:
        assert proc.poll() is None, relay.log("flower")
        try:
            if httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "flower did not start"
        time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


FINAL = {str(s) for s in FINAL_STATES}


def states(ctx: WorkerContext) -> list[str]:
    with ctx.sessions() as s:
        return [str(st) for st in s.scalars(select(DeliveryRow.state)).all()]


def ledger_cells(ctx: WorkerContext) -> Iterator[tuple[str, str]]:
    """Every cell of every ledger table as text, but the one column that keeps the lead."""
    with ctx.sessions() as s:
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if (table.name, c.name) not in KEEPS_PERSONAL_DATA]
            for row in s.execute(select(*[cast(c, String) for c in cols])):
                for col, value in zip(cols, row, strict=True):
                    if value is not None:
                        yield f"{table.name}.{col.name}", str(value)


def redis_values(url: str) -> Iterator[tuple[str, str]]:
    """Every key of the test's Redis database, whatever its type, as text."""
    r = redis.Redis.from_url(url)
    for raw in r.scan_iter(count=500):
        key = raw.decode(errors="replace")
        kind = r.type(raw).decode()
        values: list[bytes] = [raw]
        if kind == "string":
            values.append(r.get(raw) or b"")
        elif kind == "list":
            values += r.lrange(raw, 0, -1)
        elif kind == "hash":
            values += [b for kv in r.hgetall(raw).items() for b in kv]
        elif kind == "set":
            values += list(r.smembers(raw))
        elif kind == "zset":
            values += [m for m, _ in r.zrange(raw, 0, -1, withscores=True)]
        for v in values:
            yield f"redis {kind} {key}", v.decode("utf-8", errors="replace")
    r.close()


def test_no_secret_or_personal_data_outside_the_lead_s_own_payload(
    relay_factory: Callable[..., Relay],
    sandboxes: dict[str, str],
    ledger_url: str,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for url in sandboxes.values():
        httpx.post(f"{url}/__sandbox__/reset")
    dests = tables(sandboxes)
    relay = relay_factory(dests)
    relay.start_worker(events=True)
    relay.start_beat()
    flower, flower_url = start_flower(relay)
    ctx = build(
        load(database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(dests))
    )
    try:
        faults = [
            ("kuper", {"status": 500}),
            ("kuper", {"status": 429, "retry_after": "1"}),
            (
                "calltouch",
                {"status": 200, "body": "<html>not json</html>", "content_type": "text/html"},
            ),
            ("salesman", {"status": 500, "cut": True}),
            ("admitad", {"status": 502, "body": "oops"}),
        ]
        for platform, fault in faults:
            httpx.post(f"{sandboxes[platform]}/__sandbox__/faults", json=fault)

        producer = Producer(ctx)
        producer.submit_many("kuper-audit", kuper_leads(100, 8))
        producer.submit_many("calltouch-audit", calltouch_leads(200, 4))
        producer.submit_many("salesman-audit", salesman_leads(300, 3))
        for n, lead in enumerate(admitad_leads(400, 2)):
            producer.submit("admitad-audit", lead, idempotency_key=f"adm-{n}")
        bad_phone, bad_email = person(900)
        with pytest.raises(LeadRelayError):
            producer.submit("salesman-audit", {"title": "x", "phone": bad_phone, "email": "no@"})

        client = Celery(broker=redis_url)
        raw = [
            ("kuper-audit", kuper_leads(500, 2)[0]),
            ("salesman-audit", salesman_leads(600, 1)[0]),
            ("admitad-audit", admitad_leads(700, 1)[0]),
            ("kuper-audit", {**kuper_leads(800, 1)[0], "vacancy_id": "x"}),  # refused
            ("admitad-audit", {**admitad_leads(810, 1)[0], "user_notified": 0}),  # refused
            ("nowhere", {"phone": bad_phone, "email": bad_email}),  # refused
        ]
        sent = [
            client.send_task(
                "leadrelay.submit",
                queue="leadrelay.intake",
                kwargs={"destination": d, "lead": lead, "idempotency_key": f"raw-{i}"},
            ).id
            for i, (d, lead) in enumerate(raw)
        ]
        pickled = client.send_task(
            "leadrelay.submit",
            queue="leadrelay.intake",
            kwargs={"destination": "kuper-audit", "lead": kuper_leads(950, 1)[0]},
            serializer="pickle",
        ).id
        client.close()

        deadline = time.monotonic() + 60
        while not (set(states(ctx)) <= FINAL and len(refusals(ctx)) >= 3):
            assert time.monotonic() < deadline, (Counter(states(ctx)), refusals(ctx))
            time.sleep(0.3)

        relay.wait_for_log("w1", "untrusted content of type pickle", 20)  # JSON only

        auth = httpx.BasicAuth(*FLOWER_AUTH)
        tasks: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while not set(sent) <= set(tasks):
            tasks = httpx.get(f"{flower_url}/api/tasks", auth=auth, timeout=15).json()
            assert time.monotonic() < deadline, "flower does not show the submit tasks"
            time.sleep(0.5)
        flower_texts = [("flower /api/tasks", json.dumps(tasks, ensure_ascii=False))]
        for task_id in tasks:
            info = httpx.get(f"{flower_url}/api/task/info/{task_id}", auth=auth, timeout=15)
            assert info.status_code == 200
            flower_texts.append((f"flower task {task_id}", info.text))

        stop(flower)
        relay.stop()

        needles = {f: original for original in SECRETS for f in forms(original)} | {
            f: original for original in PHONES + EMAILS + DOCUMENTS for f in forms(original)
        }
        logs = [
            (f"{name}.log:{i}", line)
            for name in ("w1", "beat", "flower")
            for i, line in enumerate(relay.log(name).splitlines(), 1)
        ]
        cells = list(ledger_cells(ctx))
        keys = list(redis_values(redis_url))
        hits = [
            f"{where}: {mask(original)} as {mask(needle)}"
            for where, text in logs + cells + keys + flower_texts
            for needle, original in needles.items()
            if needle in text
        ]
        with capsys.disabled():
            print(
                f"\naudit: searched {len(logs)} log lines, {len(cells)} ledger cells, "
                f"{len({k for k, _ in keys})} redis keys, {len(tasks)} flower tasks; "
                f"needles={len(needles)}; hits={len(hits)}"
            )
        assert hits == [], "\n".join(hits[:50])
        assert pickled not in tasks, "the pickled message was never run"
        kept = [text for where, text in own_payloads(ctx)]
        assert sum(n in text for n in needles for text in kept) >= len(PHONES) - 4, (
            "the search finds what the one excluded column keeps"
        )
        assert len(tasks) >= len(sent)

        with ctx.sessions.begin() as s:
            assert ledger.purge_personal_data(s, before=ctx.clock(), now=ctx.clock()) > 0
        with ctx.sessions() as s:
            payloads = s.scalars(select(LeadRow.payload)).all()
        assert all(p == {} for p in payloads), "purge leaves no lead's own data"
    finally:
        stop(flower)
        ctx.close()


def refusals(ctx: WorkerContext) -> list[Any]:
    """The refusals recorded so far."""
    from worker.ledger.tables import RefusalRow

    with ctx.sessions() as s:
        return list(s.scalars(select(RefusalRow.id)).all())


def own_payloads(ctx: WorkerContext) -> list[tuple[str, str]]:
    """`leads.payload` as text: where the audit's needles must be found."""
    with ctx.sessions() as s:
        return [("leads.payload", str(v)) for v in s.scalars(select(cast(LeadRow.payload, String)))]
