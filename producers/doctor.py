"""
`leadrelay doctor`: what is wrong with this relay, one check a line.

Each check answers `ok`, `warn` (worth a look, nothing stops) or `fail`
(something does not work), with a one-line summary and, where it helps, the
details (which destination, which queue). A check that depends on another
that failed is `skip`ped, saying which. The exit code is 1 when any check
fails, else 0; `--json` prints the same as a list of objects.

What is checked, in order:

=========  ==============================================================
config     the settings and the destinations file are valid; the secrets of
           the destinations this host serves (its LEADRELAY_WORKER_GROUP's,
           or every destination without one) are in the environment
ledger     PostgreSQL (or the SQLite file) answers
schema     the ledger's schema is this version's (`leadrelay db upgrade`)
redis      the broker, and the limiter's Redis where it is another, answer
clock      this host's clock and Redis's agree within MAX_SKEW_S (the
           limiter's slots and every lease are times)
consumers  every queue with work (due leads in the ledger, or messages in
           Redis) is consumed by a live worker (Celery's inspect)
beat       exactly one beat runs (each announces itself in Redis as it ticks)
paused     destinations paused, until when and why (warn)
dead       leads that ran out of attempts, per destination (warn)
=========  ==============================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from worker import keys, redis_urls
from worker.config import CONTROL_QUEUE, INTAKE_QUEUE, group_queues
from worker.errors import ConfigError, LeadRelayError, first_line
from worker.leads import LeadState
from worker.ledger.migrate import SchemaState
from worker.settings import Settings, load

Status = Literal["ok", "warn", "fail", "skip"]

#: the most seconds this host's clock may differ from Redis's
MAX_SKEW_S = 1.0
#: seconds Celery's inspect waits for workers to answer
INSPECT_TIMEOUT_S = 2.0
#: seconds any server is given to answer
CONNECT_TIMEOUT_S = 3


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass
class Doctor:
    """The checks, run in order; each may read what an earlier one found."""

    load_settings: Callable[[], Settings] = load
    #: this host's clock, as seconds since the epoch (a test moves it)
    clock: Callable[[], float] = time.time
    inspect_timeout: float = INSPECT_TIMEOUT_S
    checks: list[Check] = field(default_factory=list)
    settings: Settings | None = None
    engine: Any = None
    state: SchemaState | None = None
    schema_ok: bool = False
    redis_ok: bool = False

    def run(self) -> list[Check]:
        try:
            for step in (
                self.config,
                self.ledger,
                self.schema,
                self.redis,
                self.clock_skew,
                self.consumers,
                self.beat,
                self.paused,
                self.dead,
            ):
                self.checks.append(step())
        finally:
            if self.engine is not None:
                self.engine.dispose()
        return self.checks

    # --- each check ------------------------------------------------------------

    def config(self) -> Check:
        try:
            self.settings = self.load_settings()
        except ConfigError as exc:
            return Check("config", "fail", str(exc))
        settings = self.settings
        served = list(settings.destinations.values())
        if settings.worker_group is not None:
            queues = set(group_queues(settings.worker_group, served))
            served = [d for d in served if d.queue in queues]
        missing = [str(e) for d in served for e in d.unset_secrets()]
        if missing:
            return Check("config", "fail", f"{len(missing)} secret(s) not set", missing)
        if not settings.destinations:
            return Check("config", "warn", f"no destinations in {settings.config}")
        group = settings.worker_group or "every group"
        return Check(
            "config",
            "ok",
            f"{len(settings.destinations)} destination(s); secrets present for {group}",
        )

    def ledger(self) -> Check:
        if self.settings is None:
            return _skipped("ledger", "config")
        from worker.ledger import migrate
        from worker.ledger.db import make_engine

        url = self.settings.database_url
        where = migrate.shown_url(url)
        try:
            if migrate.sqlite_file_missing(url):  # asking would create it, empty
                return Check("ledger", "fail", f"{where}: the file does not exist")
            connect = {"connect_timeout": CONNECT_TIMEOUT_S} if "postgres" in url else {}
            pooler = self.settings.database_pooler
            self.engine = (
                make_engine(url, pooler=pooler, connect_args=connect)
                if connect
                else make_engine(url, pooler=pooler)
            )
            self.state = migrate.schema_state(url, self.engine)
        except LeadRelayError as exc:  # unreachable, or a URL no ledger lives at
            return Check("ledger", "fail", str(exc))
        return Check("ledger", "ok", f"{where} answers")

    def schema(self) -> Check:
        if self.settings is None or self.state is None:
            return _skipped("schema", "ledger")
        problem = self.state.problem(self.settings.database_url)
        if problem:
            return Check("schema", "fail", problem)
        self.schema_ok = True
        return Check("schema", "ok", "current")

    def redis(self) -> Check:
        if self.settings is None:
            return _skipped("redis", "config")
        urls = {"broker": self.settings.broker_url}
        if self.settings.limiter_url != self.settings.broker_url:
            urls["limiter"] = self.settings.limiter_url
        failed = []
        for role, url in urls.items():
            try:
                with _redis(self.settings, url) as client:
                    client.ping()
            except redis.RedisError as exc:
                failed.append(f"{role} at {redis_urls.shown_url(url)}: {first_line(exc)}")
        if failed:
            return Check("redis", "fail", "Redis does not answer", failed)
        self.redis_ok = True
        return Check("redis", "ok", ", ".join(f"{r} answers" for r in urls))

    def clock_skew(self) -> Check:
        if self.settings is None or not self.redis_ok:
            return _skipped("clock", "redis")
        with _redis(self.settings, self.settings.limiter_url) as client:
            before = self.clock()
            seconds, micros = client.time()
            after = self.clock()
        skew = (before + after) / 2 - (seconds + micros / 1e6)
        summary = f"this host is {abs(skew):.3f} s {'ahead of' if skew > 0 else 'behind'} Redis"
        if abs(skew) > MAX_SKEW_S:
            return Check("clock", "fail", f"{summary} (more than {MAX_SKEW_S:g} s): sync NTP")
        return Check("clock", "ok", summary)

    def consumers(self) -> Check:
        if self.settings is None or not self.redis_ok or not self.schema_ok:
            return _skipped("consumers", "redis" if not self.redis_ok else "schema")
        settings = self.settings
        work = self._work(settings)
        consumed = self._consumed(settings)
        if consumed is None:
            if not work:
                return Check("consumers", "warn", "no worker answered; no queue has work")
            return Check(
                "consumers",
                "fail",
                "no worker answered Celery's inspect, and queues have work",
                [f"{q}: {what}" for q, what in sorted(work.items())],
            )
        orphaned = {q: what for q, what in work.items() if q not in consumed}
        if orphaned:
            return Check(
                "consumers",
                "fail",
                f"{len(orphaned)} queue(s) with work and no live worker",
                [f"{q}: {what}" for q, what in sorted(orphaned.items())],
            )
        names = len(settings.destinations) + 2
        return Check("consumers", "ok", f"{len(consumed)} queue(s) consumed of {names}")

    def beat(self) -> Check:
        if self.settings is None or not self.redis_ok:
            return _skipped("beat", "redis")
        with _redis(self.settings, self.settings.limiter_url) as client:
            found = [client.get(k) for k in client.scan_iter(keys.BEAT_PATTERN, count=100)]
        beats = sorted(json.loads(b)["instance"] for b in found if b)
        if not beats:
            return Check("beat", "fail", "no beat runs: nothing sweeps, wakes or polls")
        if len(beats) > 1:
            return Check("beat", "fail", f"{len(beats)} beats run: run exactly one", beats)
        return Check("beat", "ok", f"one beat runs ({beats[0]})")

    def paused(self) -> Check:
        if self.engine is None or not self.schema_ok:
            return _skipped("paused", "schema")
        from worker import ledger
        from worker.ledger.db import make_sessionmaker

        now = datetime.fromtimestamp(self.clock(), UTC)
        with make_sessionmaker(self.engine)() as session:
            pauses = ledger.pauses(session, now)
        if not pauses:
            return Check("paused", "ok", "no destination is paused")
        details = [
            f"{name}: {p.kind}, {p.reason}"
            + (f" (until {p.until:%Y-%m-%d %H:%M} UTC)" if p.until else " (until resumed)")
            for name, p in sorted(pauses.items())
        ]
        return Check("paused", "warn", f"{len(pauses)} destination(s) paused", details)

    def dead(self) -> Check:
        if self.engine is None or not self.schema_ok:
            return _skipped("dead", "schema")
        from worker.ledger import reports
        from worker.ledger.db import make_sessionmaker

        now = datetime.fromtimestamp(self.clock(), UTC)
        with make_sessionmaker(self.engine)() as session:
            stats = reports.stats(session, now)
        dead = {d: s.count(LeadState.DEAD) for d, s in stats.items()}
        dead = {d: n for d, n in dead.items() if n}
        if not dead:
            return Check("dead", "ok", "no dead leads")
        details = [
            f"{d}: {n} (see `leadrelay retry --destination {d}`)" for d, n in sorted(dead.items())
        ]
        return Check("dead", "warn", f"{sum(dead.values())} dead lead(s)", details)

    # --- what the consumers check reads -----------------------------------------

    def _work(self, settings: Settings) -> dict[str, str]:
        """Each queue with work: due deliveries in the ledger, or messages waiting in Redis."""
        from worker import ledger
        from worker.ledger.db import make_sessionmaker

        now = datetime.fromtimestamp(self.clock(), UTC)
        with make_sessionmaker(self.engine)() as session:
            due = ledger.due_counts(session, now)
            polls = ledger.poll_due_counts(session, now)
            paused = ledger.pauses(session, now)
        work: dict[str, str] = {}
        dests = settings.destinations
        for name, dest in dests.items():
            what = []
            if due.get(name) and name not in paused:
                what.append(f"{due[name]} lead(s) due")
            if polls.get(name):
                what.append(f"{polls[name]} status look(s) due")
            if what:
                work[dest.queue] = ", ".join(what)
        with _redis(settings, settings.broker_url) as client:
            for queue in [CONTROL_QUEUE, INTAKE_QUEUE, *(d.queue for d in dests.values())]:
                waiting = int(client.llen(queue))
                if waiting:
                    shown = f"{waiting} message(s) waiting"
                    work[queue] = f"{work[queue]}, {shown}" if queue in work else shown
        return work

    def _consumed(self, settings: Settings) -> set[str] | None:
        """The queues live workers consume; None when no worker answers."""
        from worker.runtime.app import app, use_settings

        use_settings(settings)
        replies = app.control.inspect(timeout=self.inspect_timeout).active_queues()
        if not replies:
            return None
        return {q["name"] for queues in replies.values() for q in queues or ()}


def _skipped(name: str, because: str) -> Check:
    return Check(name, "skip", f"not checked: the {because} check did not pass")


def _redis(settings: Settings, url: str) -> redis.Redis[bytes]:
    return redis_urls.client(
        url,
        settings.redis_master_name,
        socket_timeout=CONNECT_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )


def run(**kwargs: Any) -> list[Check]:
    return Doctor(**kwargs).run()


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def as_json(checks: Iterable[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], ensure_ascii=False)
