"""
Chaos: the real worker and beat processes deliver a mixed workload to all four
emulators while everything around them fails, and every lead is accounted for.

During the run: workers are SIGKILLed mid-request (and restarted), Redis is
wiped once and restarted once, PostgreSQL is restarted once (workers and beat
are not restarted for those: they must recover by themselves), and the
emulators answer 500s, timeouts, 429/503 storms with and without Retry-After,
connections cut after reading the request (before and after the platform did
the work), and bodies that are not JSON. Producers keep submitting through it
all, retrying a failed call with the same idempotency keys, as an app would.
Beat's jobs run on a control worker of their own, as deployed; the worker
that is killed serves every queue.

Every destination tells an upstream app of its settlements, and that app's own
`celery worker` (stock Celery, `tests.system.notify_consumer`) takes the events
from the same Redis, never restarted. It is paused (SIGSTOP) until the Redis
restart, so the events published by then wait in Redis for both wipes to take
them, and it is resumed while Redis is down, to reconnect by itself.

At the end: submitted = delivered + rejected by the platform + refused at the
door + dead (with a reason) + pending; 0 lost (a lead the ledger calls delivered
is at its platform); no lead twice at a platform unless the ledger flagged it
in doubt. Every settlement the ledger wrote an event for, and every lead's
final state, reached the upstream app at least once (the events a wipe took
from Redis were sent again under the broker's new epoch), and no event names a
lead's phone. The tally is printed, the events' with it.

Redis and PostgreSQL here are servers of the test's own (a redis-server and a
PostgreSQL cluster started on free ports), so restarting them touches nothing
else on the machine.

The short form runs in CI. The full form, on demand:

    LEADRELAY_CHAOS_LEADS=10000 LEADRELAY_CHAOS_KILLS=10 \\
        .venv/bin/python -m pytest tests/system/test_chaos.py -s

It runs twice: with the ledger reached directly, and through a PgBouncer of the
test's own in transaction pooling (LEADRELAY_DATABASE_POOLER=transaction), which
must find PostgreSQL again by itself after the restart; migrations still go to
PostgreSQL directly. LEADRELAY_CHAOS_POOLER=direct or =pgbouncer runs one of them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import admitad as admitad_sandbox
from sandbox import calltouch as calltouch_sandbox
from sandbox import free_port, serve
from sandbox import kuper as kuper_sandbox
from sandbox import salesman as salesman_sandbox
from sandbox.common import SandboxState
from tests.factories import (
    admitad_lead,
    admitad_table,
    calltouch_lead,
    calltouch_table,
    kuper_lead,
    kuper_table,
    salesman_lead,
    salesman_table,
)
from tests.pgbouncer import running
from tests.system.conftest import Relay
from tests.system.notify_consumer import EVENTS_QUEUE
from tests.system.test_notify_consumer import (
    EVENT_KEYS,
    NOTIFY,
    Received,
    UpstreamApp,
    names_a_phone,
    phone_digits,
)
from worker.delivery.context import WorkerContext, build
from worker.intake import Submission
from worker.leads import LeadState
from worker.ledger import migrate
from worker.ledger.db import POOLER_VAR, pooler_setting
from worker.ledger.tables import AttemptResultRow, AttemptRow, DeliveryRow, LeadRow, OutboxRow
from worker.settings import load, parse_destinations

LEADS = int(os.environ.get("LEADRELAY_CHAOS_LEADS", "600"))
KILLS = int(os.environ.get("LEADRELAY_CHAOS_KILLS", "3"))
#: how long the relay gets, once the faults stop, to settle every lead
SETTLE = float(os.environ.get("LEADRELAY_CHAOS_SETTLE", str(180 + LEADS * 0.06)))
#: how the relay reaches the ledger: "direct", "pgbouncer" (a transaction pooler); unset: both
POOLERS = (
    [os.environ["LEADRELAY_CHAOS_POOLER"]]
    if os.environ.get("LEADRELAY_CHAOS_POOLER")
    else [
        "direct",
        "pgbouncer",
    ]
)
#: how long the upstream app gets, once every lead settled, to be told the last of them
TOLD = 60 + LEADS * 0.03
#: one lead in this many is malformed, to be refused at the door
BAD_EVERY = 50
PLATFORMS = ("kuper", "calltouch", "salesman", "admitad")
#: states a lead leaves on its own: still pending
MOVING = frozenset(
    {
        LeadState.HELD,
        LeadState.QUEUED,
        LeadState.SENDING,
        LeadState.RETRY_WAIT,
        LeadState.AWAITING_STATUS,
        LeadState.WAITING_CODE,
    }
)
DELIVERED = frozenset({LeadState.DELIVERED, LeadState.APPROVED, LeadState.DECLINED})
#: a platform's own final no (the lead reached it, or it said why not)
PLATFORM_NO = frozenset({LeadState.REJECTED, LeadState.UNMATCHED, LeadState.ERROR})

#: what the emulators answer during the run, in turn (timeout = 2 s in every table)
STORM: list[dict[str, Any]] = [
    {"status": 500, "body": '{"error": "internal"}', "count": 3},
    {"status": 500, "delay": 3.0, "count": 2},  # longer than the timeout
    {"status": 429, "retry_after": "1", "body": "{}", "count": 4},
    {"status": 429, "body": "{}", "count": 3},  # no Retry-After
    {"status": 503, "retry_after": "1", "body": "", "count": 3},
    {"status": 503, "body": "", "count": 3},
    {"cut": True, "count": 2},  # read the request, then drop the connection
    {"cut": True, "handle": True, "count": 2},  # the platform did it; the answer is lost
    {"status": 200, "body": "<html>502 Bad Gateway</html>", "content_type": "text/html"},
    {"status": 200, "body": '{"status": "ok", "data": [tru', "count": 1},
    {"status": 502, "body": "<html>nginx</html>", "content_type": "text/html", "count": 2},
]


# --- servers of the test's own -----------------------------------------------


class RedisServer:
    """A redis-server on a free port; nothing kept on disk, as in production's cache role."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (.ci/run installs it)"
        self.proc = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    assert versions, f"PostgreSQL's {name} is not installed (.ci/run installs it)"
    return str(versions[-1])


class PostgresServer:
    """A PostgreSQL cluster of the test's own, on a free port, that the test may restart."""

    def __init__(self) -> None:
        self.port = free_port()
        # its own directory: pytest's tmp_path is closed to the postgres user
        self.dir = Path(tempfile.mkdtemp(prefix="leadrelay-chaos-pg-"))
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self._run_start()

    def _run_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=200"
        )
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def restart(self, down_for: float) -> None:
        self.stop()
        time.sleep(down_for)
        self._run_start()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, PostgresServer]]:
    red = RedisServer(tmp_path)
    red.start()
    pg = PostgresServer()
    try:
        pg.init()
    except BaseException:
        red.stop()
        raise
    migrate.upgrade(pg.url)
    yield red, pg
    red.stop()
    with contextlib.suppress(subprocess.CalledProcessError):
        pg.stop()
    shutil.rmtree(pg.dir, ignore_errors=True)


@pytest.fixture(params=POOLERS)
def ledger(
    request: pytest.FixtureRequest,
    servers: tuple[RedisServer, PostgresServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The ledger's URL for the relay and the producers: direct, or through PgBouncer."""
    _, pg = servers
    if request.param == "direct":
        yield pg.url
        return
    assert request.param == "pgbouncer", f"LEADRELAY_CHAOS_POOLER={request.param}: unknown"
    monkeypatch.setenv(POOLER_VAR, "transaction")
    with running(server_port=pg.port) as bouncer:
        yield bouncer.url("postgres")


# --- the emulators ------------------------------------------------------------


@dataclass
class Platforms:
    urls: dict[str, str]
    states: dict[str, SandboxState]

    def order(self, faults: list[dict[str, Any]]) -> None:
        for url in self.urls.values():
            httpx.post(f"{url}/__sandbox__/faults", json=faults, timeout=5)

    def calm(self) -> None:
        for url in self.urls.values():
            httpx.delete(f"{url}/__sandbox__/faults", timeout=5)


@pytest.fixture
def platforms() -> Iterator[Platforms]:
    apps = {
        # the source has Kuper's "Дедублицировать всегда" on, and the destination says so
        "kuper": kuper_sandbox.create_app(
            username="partner", password="kuper-secret-pw", deduplicate=True
        ),
        "calltouch": calltouch_sandbox.create_app("1234", "calltouch-secret-token"),
        "salesman": salesman_sandbox.create_app("manager@example.com", "salesman-secret-apikey"),
        "admitad": admitad_sandbox.create_app(
            client_id="client", client_secret="admitad-client-secret", decide_after=0.5
        ),
    }
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve(app)) for name, app in apps.items()}
        yield Platforms(urls, {name: app.state for name, app in apps.items()})  # type: ignore[attr-defined]


def tables(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    common = {"timeout": 2, "max_attempts": 12, "retry_initial": 0.3, "retry_max": 2, **NOTIFY}
    return {
        "kuper": kuper_table(urls["kuper"], deduplicate=True, **common),
        "calltouch": calltouch_table(urls["calltouch"], **common),
        "salesman": salesman_table(urls["salesman"], **common),
        "admitad": admitad_table(urls["admitad"], **common),
    }


# --- the workload -------------------------------------------------------------


def make_lead(platform: str, i: int) -> dict[str, Any]:
    """Lead number `i` for `platform`; every BAD_EVERY-th is malformed in one field."""
    bad = i % BAD_EVERY == BAD_EVERY - 1
    match platform:
        case "kuper":
            return kuper_lead(vacancy_id="three") if bad else kuper_lead()
        case "calltouch":
            return calltouch_lead(matching="request") if bad else calltouch_lead()
        case "salesman":
            lead = salesman_lead(description=f"chaos {i}")
            return {**lead, "email": "not an e-mail"} if bad else lead
        case _:
            return admitad_lead(credit_sum="1,5") if bad else admitad_lead()


@dataclass
class Intake:
    """What the producers handed over and what became of each: lead id or refusal."""

    submitted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    ids: dict[str, str] = field(default_factory=dict)  # lead id -> platform
    retried_calls: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def produce(ctx: WorkerContext, intake: Intake, chunk: int = 100) -> None:
    """Submit LEADS leads in chunks while the chaos goes on; a failed call is retried."""
    producer = Producer(ctx)
    per_platform = LEADS // len(PLATFORMS)
    try:
        for start in range(0, per_platform, chunk):
            for platform in PLATFORMS:
                numbers = range(start, min(start + chunk, per_platform))
                batch = [(f"chaos-{platform}-{i}", make_lead(platform, i)) for i in numbers]
                subs = [Submission(lead, key) for key, lead in batch]
                deadline = time.monotonic() + 120
                while True:
                    try:
                        results = producer.submit_many(platform, subs)
                        break
                    except Exception:  # the ledger or the broker is down: the app retries
                        assert time.monotonic() < deadline, "intake did not come back"
                        intake.retried_calls += 1
                        time.sleep(0.5)
                intake.submitted[platform] += len(subs)
                for r in results:
                    if r.lead_id is None:
                        intake.refused[platform] += 1
                    else:
                        intake.ids[r.lead_id] = platform
            time.sleep(0.2)
    except BaseException as exc:
        intake.error = exc
    finally:
        intake.done.set()


# --- the ledger, read through restarts ------------------------------------------


def read(ctx: WorkerContext, query: Callable[[Any], Any]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            with ctx.sessions() as s:
                return query(s)
        except sqlalchemy.exc.OperationalError:
            assert time.monotonic() < deadline, "the ledger did not come back"
            time.sleep(0.5)


def state_counts(ctx: WorkerContext) -> Counter[str]:
    def q(s: Any) -> Counter[str]:
        rows = s.execute(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state))
        return Counter({str(state): int(n) for state, n in rows})

    result: Counter[str] = read(ctx, q)
    return result


def wait_for(ctx: WorkerContext, done: Callable[[Counter[str]], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done(state_counts(ctx)):
        assert time.monotonic() < deadline, f"not in {timeout}s: {dict(state_counts(ctx))}"
        time.sleep(0.2)


def delivered_total(c: Counter[str]) -> int:
    return sum(c[s] for s in DELIVERED | PLATFORM_NO | {LeadState.DEAD})


# --- what the platforms hold ----------------------------------------------------


def held_at_platforms(platforms: Platforms, ids: dict[str, str]) -> dict[str, Counter[str]]:
    """Per platform, how many times each of our leads is there (by what identifies it)."""
    held: dict[str, Counter[str]] = {p: Counter() for p in PLATFORMS}
    st = platforms.states
    with st["salesman"].lock:
        for record in st["salesman"].store["records"].values():
            for lead_id in re.findall(r"\[lr:([^\]]+)\]", record["content"]):
                held["salesman"][lead_id] += 1
    with st["admitad"].lock:
        for app in st["admitad"].store["applications"].values():
            if app.fields.get("subid4"):
                held["admitad"][str(app.fields["subid4"])] += 1
    with st["kuper"].lock:
        kuper_keys = Counter(
            {key: len(created) for key, created in st["kuper"].store["candidates"].items()}
        )
    with st["calltouch"].lock:
        calltouch_keys = set(st["calltouch"].store["fields"])
    return {**held, "kuper_keys": kuper_keys, "calltouch_keys": Counter(calltouch_keys)}


def platform_key(platform: str, payload: dict[str, Any]) -> str:
    """How Kuper and Calltouch identify a lead: phone per source; the request matched."""
    if platform == "kuper":
        digits = re.sub(r"\D", "", payload["phone"])
        return f"{payload['utm']['utm_source']}:{'7' + digits[1:]}"
    return f"request:{payload['matching'][0]['requestParams']['requestId']}"


# --- the test -------------------------------------------------------------------


@pytest.mark.timeout(300 + 2 * SETTLE + TOLD + KILLS * 30)
def test_every_lead_is_accounted_for_through_kills_wipes_restarts_and_storms(
    relay_factory: Callable[..., Relay],
    servers: tuple[RedisServer, PostgresServer],
    ledger: str,
    platforms: Platforms,
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    red, pg = servers
    destinations = tables(platforms.urls)
    relay = relay_factory(
        destinations,
        database_url=ledger,
        database_pooler=pooler_setting(),
        broker_url=red.url,
        drain_budget="3",
    )
    ctx = build(
        load(database_url=ledger, broker_url=red.url, destinations=parse_destinations(destinations))
    )
    # the upstream app keeps its events in a database of its own, on the main test server
    app = UpstreamApp.make(red.url, pg_url, tmp_path)
    try:
        _run_chaos(relay, ctx, red, pg, platforms, app, capsys)
    finally:
        app.stop()
        ctx.close()


def _run_chaos(
    relay: Relay,
    ctx: WorkerContext,
    red: RedisServer,
    pg: PostgresServer,
    platforms: Platforms,
    app: UpstreamApp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    generation = 0

    def start_worker() -> None:
        nonlocal generation
        generation += 1
        relay.start_worker(f"w{generation}", concurrency=4)

    start_worker()
    # beat's periodic jobs on time, as a deployment runs them: on a worker of their own
    relay.start_worker("control", concurrency=2, queues="leadrelay")
    relay.start_beat()
    app.start_consumer()
    app.pause()  # until the Redis restart: what is published by then waits in Redis for the wipes
    intake = Intake()
    producer = threading.Thread(target=produce, args=(ctx, intake), daemon=True)
    producer.start()
    platforms.order(STORM)
    events: list[str] = []
    wiped: list[tuple[str, str]] = []  # the events the wipes took from Redis
    started = time.monotonic()

    def progress_after(label: str) -> None:
        """The relay goes on by itself: more leads settle within 60 s."""
        before = delivered_total(state_counts(ctx))
        try:
            wait_for(ctx, lambda c: delivered_total(c) > before, 60)
        except AssertionError as exc:  # what the processes were doing, for the one who reads it
            tails = {n: relay.log(n)[-4000:] for n in (f"w{generation}", "beat")}
            raise AssertionError(f"no progress after the {label}: {exc}\n{tails}") from exc
        for name in (f"w{generation}", "control", "beat"):
            assert relay.procs[name].poll() is None, f"{name} exited after the {label}"
        assert app.procs["app"].poll() is None, (
            f"the upstream app's consumer exited after the {label}:\n{app.log('app')[-3000:]}"
        )
        events.append(f"{label} at {time.monotonic() - started:.0f}s, recovered")

    for kill in range(KILLS):
        # a slow answer the platform acts on, so a request is in flight when the kill lands
        platforms.order([{"delay": 1.5, "handle": True, "count": 2}])
        deadline = time.monotonic() + 15
        while not state_counts(ctx)[LeadState.SENDING] and time.monotonic() < deadline:
            time.sleep(0.05)
        in_flight = state_counts(ctx)[LeadState.SENDING]
        relay.kill(f"w{generation}")
        events.append(f"SIGKILL worker #{kill + 1} with {in_flight} leads in flight")
        start_worker()
        if kill == 0:
            waiting = waiting_events(red)
            redis.Redis.from_url(red.url).flushall()
            wiped += waiting
            events.append(
                f"FLUSHALL with {len(waiting)} events waiting for the paused upstream app"
            )
            progress_after("FLUSHALL")
        elif kill == 1:
            waiting = waiting_events(red)
            red.stop()  # kept nothing on disk: a wipe too
            wiped += waiting
            app.resume()  # it finds the broker gone, and must reconnect by itself
            time.sleep(2)
            red.start()
            events.append(
                f"Redis restart with {len(waiting)} events waiting for the paused upstream app"
            )
            progress_after("Redis restart")
        elif kill == 2:
            pg.restart(down_for=3)
            progress_after("PostgreSQL restart")
        platforms.order(STORM)
        time.sleep(2)

    app.resume()  # with fewer than two kills, no Redis restart resumed it
    producer.join(timeout=SETTLE)
    assert intake.done.is_set() and intake.error is None, intake.error
    platforms.calm()
    accepted = len(intake.ids)
    wait_for(
        ctx,
        lambda c: sum(c.values()) >= accepted and not sum(c[s] for s in MOVING),
        SETTLE,
    )
    assert relay.procs["beat"].poll() is None, "beat died"
    assert relay.procs["control"].poll() is None, "the control worker died"
    assert relay.procs[f"w{generation}"].poll() is None, "the worker died"
    events.append(f"producers' calls failed and retried with the same keys: {intake.retried_calls}")

    rows = read(
        ctx,
        lambda s: [
            (r.lead_id, r.destination, r.state, r.in_doubt, r.detail)
            for r in s.scalars(select(DeliveryRow))
        ],
    )
    payloads = read(ctx, lambda s: {r.id: r.payload for r in s.scalars(select(LeadRow))})
    held = held_at_platforms(platforms, intake.ids)
    tally = _tally(intake, rows, payloads, held)
    left = wait_told(ctx, red, app)
    written = read(
        ctx,
        lambda s: [
            (r.lead_id, r.destination, r.payload["state"]) for r in s.scalars(select(OutboxRow))
        ],
    )
    told = _told(rows, payloads, written, app.received(), left, wiped)
    _report(ctx, events, [*tally.lines(), *told.lines()], tally.twice, capsys)
    assert tally.lost == [], f"lost: {tally.lost[:10]}"
    assert tally.unflagged_twice == [], f"twice at a platform, unflagged: {tally.unflagged_twice}"
    assert tally.dead_without_reason == []
    assert tally.pending == 0
    assert tally.refused == sum(
        1
        for p in PLATFORMS
        for i in range(LEADS // len(PLATFORMS))
        if i % BAD_EVERY == BAD_EVERY - 1
    )
    assert tally.delivered > 0.9 * accepted
    assert told.untold == [], f"settled, the upstream app never told: {told.untold[:10]}"
    assert told.wiped_untold == [], f"wiped and never sent again: {told.wiped_untold[:10]}"
    assert told.misshapen == [], f"not one dict of the documented keys: {told.misshapen[:10]}"
    assert told.naming_a_phone == [], f"an event names a phone: {told.naming_a_phone[:10]}"
    assert app.procs["app"].poll() is None, "the upstream app's consumer died"


def _report(
    ctx: WorkerContext,
    events: list[str],
    lines: list[str],
    twice: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with capsys.disabled():
        print()
        for line in [*events, *lines]:
            print(f"chaos: {line}")
        for lead_id in twice[:5]:  # how a lead came to be at a platform twice
            print(f"chaos: twice {lead_id}: {read(ctx, lambda s, i=lead_id: history(s, i))}")


def history(session: Any, lead_id: str) -> list[str]:
    """A lead's attempts in order: kind, HTTP status or error, and what each meant for it."""
    rows = session.execute(
        select(AttemptRow.at, AttemptRow.kind, AttemptRow.status_code, AttemptRow.error)
        .add_columns(AttemptResultRow.outcome, AttemptResultRow.detail)
        .join(AttemptResultRow, AttemptResultRow.attempt_id == AttemptRow.id)
        .join(DeliveryRow, DeliveryRow.id == AttemptResultRow.delivery_id)
        .where(DeliveryRow.lead_id == lead_id)
        .order_by(AttemptRow.id)
    )
    return [
        f"{at:%H:%M:%S.%f} {kind} {status or error} {outcome} {detail[:60]}"
        for at, kind, status, error, outcome, detail in rows
    ]


@dataclass
class Tally:
    submitted: int = 0
    refused: int = 0
    delivered: int = 0
    rejected: int = 0
    dead: int = 0
    pending: int = 0
    flagged_in_doubt: int = 0
    twice_flagged: int = 0
    lost: list[str] = field(default_factory=list)
    unflagged_twice: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    dead_without_reason: list[str] = field(default_factory=list)
    #: why leads ended dead, each reason with its count (the reader's first question)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    per_platform: dict[str, Counter[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        accounted = self.delivered + self.rejected + self.refused + self.dead + self.pending
        out = [
            f"submitted {self.submitted} = delivered {self.delivered} + rejected by the "
            f"platform {self.rejected} + refused at the door {self.refused} + dead "
            f"{self.dead} + pending {self.pending} = {accounted}; lost {len(self.lost)}",
            f"in doubt at some point {self.flagged_in_doubt}; twice at a platform "
            f"{self.twice_flagged} flagged, {len(self.unflagged_twice)} unflagged",
        ]
        out += [f"  {p}: {dict(c)}" for p, c in sorted(self.per_platform.items())]
        out += [f"  dead ×{n}: {why[:160]}" for why, n in self.dead_reasons.most_common(5)]
        return out


def _tally(
    intake: Intake,
    rows: list[tuple[str, str, str, bool, str]],
    payloads: dict[str, dict[str, Any]],
    held: dict[str, Counter[str]],
) -> Tally:
    t = Tally(submitted=sum(intake.submitted.values()), refused=sum(intake.refused.values()))
    for p in PLATFORMS:
        t.per_platform[p] = Counter(submitted=intake.submitted[p], refused=intake.refused[p])
    seen: set[str] = set()
    for lead_id, platform, state, in_doubt, detail in rows:
        seen.add(lead_id)
        c = t.per_platform[platform]
        t.flagged_in_doubt += in_doubt
        if platform in ("kuper", "calltouch"):
            times = held[f"{platform}_keys"][platform_key(platform, payloads[lead_id])]
        else:
            times = held[platform][lead_id]
        if times > 1:
            c["twice"] += 1
            t.twice.append(lead_id)
            if in_doubt:
                t.twice_flagged += 1
            else:
                t.unflagged_twice.append(f"{platform}:{lead_id}")
        if state in DELIVERED:
            t.delivered += 1
            c["delivered"] += 1
            if times == 0:
                t.lost.append(f"{platform}:{lead_id} is {state} but not at the platform")
        elif state in PLATFORM_NO:
            t.rejected += 1
            c["rejected"] += 1
        elif state == LeadState.DEAD:
            t.dead += 1
            c["dead"] += 1
            if not detail:
                t.dead_without_reason.append(lead_id)
            t.dead_reasons[f"{platform}: {re.sub(r'[0-9a-f]{32}', '<lead>', detail)}"] += 1
        else:
            t.pending += 1
            c["pending"] += 1
    t.lost += [
        f"{p}:{i} accepted, not in the ledger" for i, p in intake.ids.items() if i not in seen
    ]
    return t


# --- what the upstream app was told ----------------------------------------------------


def waiting_events(red: RedisServer) -> list[tuple[str, str]]:
    """
    The events waiting for the paused upstream app in Redis, (lead id, state)
    each: the wipe that follows takes them, and the broker's new epoch must
    bring them back.
    """
    client = redis.Redis.from_url(red.url)
    waiting = [event_of(raw) for raw in client.lrange(EVENTS_QUEUE, 0, -1)]
    client.close()
    return waiting


def event_of(raw: bytes) -> tuple[str, str]:
    """(lead id, state) of an event as kombu keeps it in Redis: JSON, the body base64 JSON."""
    args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    return args[0]["lead_id"], args[0]["state"]


def wait_told(ctx: WorkerContext, red: RedisServer, app: UpstreamApp) -> tuple[int, int]:
    """
    Until the outbox has nothing unsent, the app's queue is empty and every
    lead's final state reached the app, or TOLD has passed (the tally then names
    what is missing). Returns what was last left: (unsent events, queued messages).
    """
    client = redis.Redis.from_url(red.url)
    deadline = time.monotonic() + TOLD
    try:
        while True:
            unsent = read(
                ctx, lambda s: s.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None)))
            )
            queued = int(client.llen(EVENTS_QUEUE))
            final = read(
                ctx, lambda s: set(s.execute(select(DeliveryRow.lead_id, DeliveryRow.state)))
            )
            untold = {(lead, str(state)) for lead, state in final} - set(app.received())
            if (not unsent and not queued and not untold) or time.monotonic() > deadline:
                return int(unsent or 0), queued
            time.sleep(0.5)
    finally:
        client.close()


@dataclass
class Told:
    """What the upstream app received, against the settlements the ledger holds."""

    #: events the ledger's outbox wrote (one per settlement into a final state)
    written: int = 0
    #: messages the app's task ran for, repeats included
    received: int = 0
    #: distinct (lead, state) among them
    distinct: int = 0
    #: what was left when waiting stopped: unsent in the outbox, queued in Redis
    left: tuple[int, int] = (0, 0)
    #: a settlement (a final state, or an event written) the app never received
    untold: list[str] = field(default_factory=list)
    #: events the wipes (FLUSHALL, the Redis restart) took from Redis before the app had them
    wiped: int = 0
    #: of those, the ones never received after the wipe
    wiped_untold: list[str] = field(default_factory=list)
    #: not one dict argument holding exactly the documented keys
    misshapen: list[str] = field(default_factory=list)
    #: an event holding the digits of its lead's phone
    naming_a_phone: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"events: written {self.written}, received {self.received} = {self.distinct} "
            f"distinct (lead, state) + {self.received - self.distinct} duplicates; "
            f"never received {len(self.untold)}; unsent {self.left[0]}, queued {self.left[1]}; "
            f"naming a phone {len(self.naming_a_phone)}, misshapen {len(self.misshapen)}",
            f"events the wipes took from Redis: {self.wiped}, received after them "
            f"{self.wiped - len(self.wiped_untold)}",
        ]


def _told(
    rows: list[tuple[str, str, str, bool, str]],
    payloads: dict[str, dict[str, Any]],
    written: list[tuple[str, str, str]],
    received: dict[tuple[str, str], Received],
    left: tuple[int, int],
    wiped: list[tuple[str, str]],
) -> Told:
    t = Told(written=len(written), left=left, distinct=len(received), wiped=len(wiped))
    t.wiped_untold = [f"{lead} {state}" for lead, state in wiped if (lead, state) not in received]
    t.received = sum(r.times for r in received.values())
    settlements = {(lead, platform, str(state)) for lead, platform, state, _, _ in rows}
    settlements |= set(written)
    t.untold = sorted(
        f"{platform}:{lead} {state}"
        for lead, platform, state in settlements
        if (lead, state) not in received
    )
    for (lead, state), r in sorted(received.items()):
        if set(r.event) != EVENT_KEYS or r.received_by["args"] != ["dict"]:
            t.misshapen.append(f"{lead} {state}")
        if names_a_phone(r.event, phone_digits(payloads.get(lead, {}))):
            t.naming_a_phone.append(f"{lead} {state}")
    return t
