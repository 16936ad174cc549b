"""
`leadrelay demo`: the whole relay in one process, on the embedded default.

A SQLite ledger file, the platforms' sandbox emulators on loopback ports, a
worker thread per destination running the real delivery loop (with the
in-process limiter: nothing to install), a few hundred sample leads, a
progress bar, and a per-destination table at the end. The sandboxes are
told to answer one 429 each, so the cooldown is seen working too.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from producers.client import Producer
from worker import delivery, logs
from worker.context import WorkerContext, build
from worker.intake import Submission
from worker.leads import FINAL_STATES, LeadState
from worker.ledger import migrate, reports
from worker.sandbox import admitad as admitad_sandbox
from worker.sandbox import calltouch as calltouch_sandbox
from worker.sandbox import kuper as kuper_sandbox
from worker.sandbox import salesman as salesman_sandbox
from worker.sandbox import serve
from worker.settings import load, parse_destinations, secret_values


@dataclass(frozen=True)
class DemoPlatform:
    """One platform in the demo: its sandbox, its destination table, its sample leads."""

    name: str
    app: Callable[[], Any]
    table: Callable[[str], dict[str, Any]]
    sample: Callable[[random.Random, int], dict[str, Any]]


def _kuper_lead(rng: random.Random, i: int) -> dict[str, Any]:
    phone = (
        f"+7 (9{rng.randint(10, 99)}) {rng.randint(100, 999)}-{i // 100 % 100:02d}-{i % 100:02d}"
    )
    return {
        "phone": phone,
        "utm": {"utm_source": "demo_partner"},
        "vacancy_id": rng.randint(1, 40),
        "city_id": str(rng.randint(1, 90)),  # a numeric string: coerced at the door
        "first_name": rng.choice(["Анна", "Иван", "Олег", "Мария"]),
    }


def _calltouch_lead(rng: random.Random, i: int) -> dict[str, Any]:
    # every 40th lead names a request Calltouch does not have yet: it waits, then ends unmatched
    request_id = 990_000 + i if i % 40 == 39 else rng.randint(1, 500_000)
    return {
        "matching": [
            {"type": "request", "requestParams": {"requestId": request_id}},
            {"type": "leadContact", "leadContactParams": {"phones": [f"7916{i:07d}"]}},
        ],
        "addCustomFields": {
            "overwrite": False,
            "customFields": [{"field": "deal_stage", "value": rng.choice(["won", "lost"])}],
        },
    }


def _salesman_lead(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "title": rng.choice(["Анна Смирнова", "Иван Петров", "Олег Сидоров"]),
        "phone": f"+7 903 {i // 10000 % 1000:03d}-{i // 100 % 100:02d}-{i % 100:02d}",
        "email": f"client{i}@example.com",
        "company": "ООО Ромашка",
        "description": "заявка с сайта",
        "utm_source": "demo",
    }


def _admitad_lead(rng: random.Random, i: int) -> dict[str, Any]:
    # two stages: two banks first; if either takes it, a third after a 2-minute pause
    return {
        "campaigns": [{"ids": [17809, 16126], "pause": 0}, {"ids": [16633], "pause": 2}],
        "user_notified": 1,
        "first_name": rng.choice(["Anna", "Ivan", "Oleg"]),
        "last_name": "Petrov",
        "mobile_phone": f"7916{i:07d}",
        "credit_sum": "150000.00",
        "credit_days": 30,
        "birth_date": "01.02.1990",
    }


PLATFORMS = [
    DemoPlatform(
        "kuper-demo",
        lambda: kuper_sandbox.create_app(username="demo", password="demo-password"),  # noqa: S106
        lambda url: {
            "platform": "kuper",
            "base_url": url,
            "username": "demo",
            "password": "demo-password",  # the sandbox's own
            "rate": 20,
            "burst": 2,
            "batch_size": 50,
        },
        _kuper_lead,
    ),
    DemoPlatform(
        "calltouch-demo",
        lambda: calltouch_sandbox.create_app(
            site_id="5150",
            access_token="demo-token",  # noqa: S106
            known_request_ids=range(1, 900_000),
            unknown_phones=[f"7916{i:07d}" for i in range(39, 10_000, 40)],
        ),
        lambda url: {
            "platform": "calltouch",
            "base_url": url,
            "site_id": "5150",
            "access_token": "demo-token",
            "rate": 5,
            # the demo's "not in Calltouch yet" leads give up after seconds, not a day
            "unmatched_retry": 0.5,
            "unmatched_horizon": 2,
        },
        _calltouch_lead,
    ),
    DemoPlatform(
        "salesman-demo",
        lambda: salesman_sandbox.create_app(login="demo@example.com", api_key="demo-apikey"),
        lambda url: {
            "platform": "salesman",
            "base_url": url,
            "login": "demo@example.com",
            "api_key": "demo-apikey",
            "rate": 50,  # the emulator sends no e-mail; a real CRM gets the default, 1/s
            "concurrency": 2,
        },
        _salesman_lead,
    ),
    DemoPlatform(
        "admitad-demo",
        lambda: admitad_sandbox.create_app(
            client_id="demo",
            client_secret="demo-secret",  # noqa: S106
            decide_after=0.3,
            outcomes={16126: "declined"},
        ),
        lambda url: {
            "platform": "admitad",
            "base_url": url,
            "website_id": 1,
            "client_id": "demo",
            "client_secret": "demo-secret",
            "rate": 50,
            "poll_interval": 0.2,
            "pause_minute": 0.5,  # the demo's pause minutes last half a second
        },
        _admitad_lead,
    ),
]

#: a few leads that break documented rules, so the demo shows refusals at the door
BAD_LEADS: dict[str, list[dict[str, Any]]] = {
    "admitad-demo": [{"campaigns": [17809], "user_notified": 0, "birth_date": "31.02.1990"}],
    "salesman-demo": [{"title": "Без контактов"}, {"title": "X", "email": "not-an-email"}],
    "calltouch-demo": [
        {"matching": [], "addCustomFields": {"customFields": [{"field": "x", "value": 1}]}},
    ],
    "kuper-demo": [
        {
            "phone": "12345",
            "utm": {"utm_source": "demo_partner"},
            "vacancy_id": 1,
            "city_id": 1,
        },
        {"phone": "+7 915 000-00-01", "utm": {}, "vacancy_id": "three", "city_id": 1},
    ],
}


def run(
    leads: int = 300,
    database: Path = Path("leadrelay-demo.db"),
    console: Console | None = None,
) -> int:
    """Run the demo; returns 0 when every accepted lead reached a final state."""
    console = console or Console()
    rng = random.Random(7)  # noqa: S311 - sample data, not security
    database.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    migrate.upgrade(url)
    with ExitStack() as stack:
        urls = {p.name: stack.enter_context(serve(p.app())) for p in PLATFORMS}
        settings = load(
            database_url=url,
            destinations=parse_destinations({p.name: p.table(urls[p.name]) for p in PLATFORMS}),
            log_level="WARNING",
        )
        logs.configure("ERROR", "text", secret_values(settings))  # the table tells the story
        ctx = build(settings, shared=False)
        stack.callback(ctx.close)
        for base in urls.values():  # one 429 each, to show every worker holding off
            httpx.post(f"{base}/__sandbox__/faults", json={"status": 429, "retry_after": "1"})
        console.print(
            f"[bold]lead relay demo[/]: ledger {database}, sandboxes " + ", ".join(urls.values())
        )
        _submit(ctx, rng, leads, console)
        started = time.monotonic()
        _deliver(ctx, sum(s.total for s in _counts(ctx)), console)
        _summary(ctx, console, time.monotonic() - started)
        return 0 if _all_final(ctx) else 1


def _submit(ctx: WorkerContext, rng: random.Random, leads: int, console: Console) -> int:
    producer = Producer(ctx, waker=None)
    per = max(1, leads // len(PLATFORMS))
    accepted = 0
    for platform in PLATFORMS:
        subs = [Submission(platform.sample(rng, i), f"demo-{i}") for i in range(per)]
        subs += [Submission(bad) for bad in BAD_LEADS.get(platform.name, [])]
        results = producer.submit_many(platform.name, subs, source="demo")
        accepted += sum(1 for r in results if r.ok)
        for result in results:
            for error in result.errors:
                console.print(f"  [yellow]refused[/] {platform.name}: {error}")
    return accepted


def _deliver(ctx: WorkerContext, total: int, console: Console) -> None:
    stop = threading.Event()
    threads = [
        threading.Thread(target=_worker, args=(ctx, name, stop), daemon=True)
        for name in ctx.settings.destinations
    ]
    for thread in threads:
        thread.start()
    columns = (
        TextColumn("delivering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("leads", total=total)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            settled = _settled(ctx)
            progress.update(task, completed=settled)
            if settled >= total:
                break
            time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


def _worker(ctx: WorkerContext, destination: str, stop: threading.Event) -> None:
    """What a Celery worker does with wake-ups, in a loop: drain, wait out deferrals."""
    while not stop.is_set():
        report = delivery.drain(ctx, destination, budget=5)
        delivery.poll(ctx, destination)
        if report.deferred is not None:
            stop.wait(min(report.deferred.total_seconds(), 1.0))
        elif not report.requests:
            stop.wait(0.1)


def _counts(ctx: WorkerContext) -> Iterator[reports.DestinationStats]:
    with ctx.sessions() as session:
        yield from reports.stats(session, ctx.clock()).values()


def _settled(ctx: WorkerContext) -> int:
    return sum(
        n for s in _counts(ctx) for state, n in s.states.items() if LeadState(state) in FINAL_STATES
    )


def _all_final(ctx: WorkerContext) -> bool:
    return all(LeadState(state) in FINAL_STATES for s in _counts(ctx) for state in s.states)


#: how the demo's table groups the states
TAKEN = {LeadState.DELIVERED, LeadState.APPROVED}
REFUSED = {
    LeadState.REJECTED,
    LeadState.DECLINED,
    LeadState.UNMATCHED,
    LeadState.ERROR,
    LeadState.EXPIRED,
}


def _summary(ctx: WorkerContext, console: Console, elapsed: float) -> None:
    table = Table(title=f"deliveries per destination, after {elapsed:.1f} s")
    table.add_column("destination", no_wrap=True)
    for column in ("taken", "refused", "dead", "still open", "requests", "429/503"):
        table.add_column(column, justify="right", no_wrap=True)
    requests = _requests(ctx)
    for s in _counts(ctx):
        taken = sum(n for st, n in s.states.items() if LeadState(st) in TAKEN)
        refused = sum(n for st, n in s.states.items() if LeadState(st) in REFUSED)
        open_ = sum(n for st, n in s.states.items() if LeadState(st) not in FINAL_STATES)
        sent, throttled = requests.get(s.destination, (0, 0))
        table.add_row(
            s.destination,
            str(taken),
            str(refused),
            str(s.count(LeadState.DEAD)),
            str(open_),
            str(sent),
            str(throttled),
        )
    console.print(table)
    console.print(
        "taken: delivered, or approved by the program; refused: the platform said no "
        "(rejected, declined, unmatched); every attempt is in the ledger: "
        "`leadrelay status LEAD`."
    )


def _requests(ctx: WorkerContext) -> dict[str, tuple[int, int]]:
    with ctx.sessions() as session:
        return reports.requests_by_destination(session)
