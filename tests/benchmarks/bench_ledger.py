"""
The ledger at scale: a claim, `leadrelay stats`, a /metrics scrape and `leadrelay status
LEAD` on a PostgreSQL ledger of millions of leads, with the indexes of revision 0005 and,
side by side in the same run, without them.

    .venv/bin/python -m tests.benchmarks.bench_ledger [--settled N] [--pending M] [--reuse]
                                                      [--with-only] [--purge P]

Defaults: 2,000,000 settled and 1,000,000 pending (a few minutes here); up to 10,000,000
settled works the same way, given the disk (about 1 kB a lead). The database
`leadrelay_bench_ledger` is made fresh and migrated to head, then loaded with COPY, its
secondary indexes dropped first and built after, as a restore does:

* N settled Kuper leads at `kuper-main`, each with an idempotency key, its delivery
  (delivered with Kuper's uuid; one in 50 rejected), settled_at spread evenly over the
  past 7 days; one attempt per 50 leads, holding the redacted request and answer of a real
  50-lead exchange with the Kuper emulator, and one attempt result per lead;
* then M queued leads at `kuper-main` and 20,000 at `kuper-small`, due over the past hour.

VACUUM ANALYZE follows each load (what autovacuum leaves behind). `--reuse` (with the same
`--settled`) measures the existing database again, its claimed rows queued again first.

Every figure is wall time on `time.perf_counter`, from the client, through SQLAlchemy and
psycopg as the service runs its queries:

* EXPLAIN (ANALYZE, BUFFERS) of one 50-lead claim at `kuper-main` (rolled back);
* claim latency, p50 and p99 of 200 claims of 50 (`ledger.claim_due`, each committed as a
  worker does) at 20,000 pending (`kuper-small`) and at M pending (`kuper-main`), and their
  ratio (target ≤ 1.5×);
* `reports.stats` (`leadrelay stats`), the median of 5 (target ≤ 0.5 s);
* one /metrics scrape's ledger reading (`BacklogCollector.collect`: stats, pauses,
  unsent events), the median of 5 (target ≤ 0.5 s);
* `leadrelay status LEAD`'s reads (`find_leads` by idempotency key, then `lead_report`)
  for 50 settled leads picked at random: p50 and the slowest (target ≤ 50 ms);
* bytes per settled lead: pg_total_relation_size of leads, deliveries, attempts and
  attempt_results over the settled count, measured before the pending leads arrive;
* retention (`--purge`, default 1,000,000): the oldest settled leads deleted whole by
  `worker.ledger.retention` on one thread while another claims 50 every 50 ms, as a
  worker does: the purge's time, and the claims' p50 / p99 / slowest during the purge
  and for 20 s after it.

Loading runs no trigger (replica mode, as a restore), so the delivery counts of
revision 0006 are written from one count at the end of the load, as a dump holds them.

The second column drops ix_deliveries_claim and ix_deliveries_settled (the ledger as
revision 0004 left it, read by the current queries) and builds them again at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import psycopg
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from producers.metrics_server import BacklogCollector
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.benchmarks._common import PG_ADMIN, fresh_database
from tests.factories import kuper_lead, kuper_table
from worker import ledger
from worker.delivery.context import WorkerContext, build
from worker.leads import Delivery
from worker.ledger import reports, retention
from worker.ops.redact import redact_answer, redact_request
from worker.platforms import REGISTRY
from worker.runtime.tasks import RETENTION_REST
from worker.settings import load, parse_destinations

DATABASE = "leadrelay_bench_ledger"
TABLES = ("leads", "deliveries", "attempts", "attempt_results")
#: the indexes revision 0005 adds, dropped for the second column
NEW_INDEXES = ("ix_deliveries_claim", "ix_deliveries_settled")
BIG, SMALL = "kuper-main", "kuper-small"
SMALL_PENDING = 20_000
BATCH = 50
CLAIMS = 200
SECRET = "kuper-secret-pw"
#: rows per COPY write
CHUNK = 20_000


# ---------------------------------------------------------------- one real exchange


def sample_exchange() -> tuple[list[dict[str, Any]], str, str, list[str]]:
    """
    50 Kuper leads as intake stores them, and the attempt their batch leaves: the
    redacted request, the redacted answer, Kuper's uuid for each lead.
    """
    with serve(kuper_sandbox.create_app(username="partner", password=SECRET)) as url:
        dest = parse_destinations({BIG: kuper_table(url)})[BIG]
        adapter = REGISTRY[dest.platform]
        payloads = [adapter.validate(kuper_lead()) for _ in range(BATCH)]
        batch = [
            Delivery(id=i, lead_id=f"l{i}", payload=p, attempt=1, created_at=datetime.now(UTC))
            for i, p in enumerate(payloads)
        ]
        request = adapter.build_request(batch, dest)
        with httpx.Client() as client:
            response = client.send(request)
        outcomes = adapter.parse_response(response, batch, dest)
    uuids = [getattr(o, "external_id", None) or str(uuid.uuid4()) for o in outcomes]
    return (
        payloads,
        json.dumps(redact_request(request, [SECRET]), ensure_ascii=False),
        redact_answer(response, [SECRET]),
        uuids,
    )


# ---------------------------------------------------------------- loading


def text_field(value: str) -> str:
    """`value` as one field of COPY's text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def copy_lines(conn: psycopg.Connection[Any], table: str, lines: Iterator[str]) -> None:
    with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == CHUNK:
                copy.write("".join(chunk))
                chunk = []
        copy.write("".join(chunk))


def payload_field(payload: dict[str, Any], n: int) -> str:
    return text_field(json.dumps({**payload, "phone": f"7916{n % 10_000_000:07d}"}))


def load_settled(conn: psycopg.Connection[Any], n: int, now: datetime) -> None:
    """N settled leads, their deliveries, an attempt per 50 and a result per lead."""
    payloads, request, answer, uuids = sample_exchange()
    request_field, answer_field = text_field(request), text_field(answer)
    week = timedelta(days=7).total_seconds()

    def when(i: int) -> str:
        return (now - timedelta(seconds=week * (n - i) / n)).isoformat()

    ids = [uuid.uuid4().hex for _ in range(n)]
    copy_lines(
        conn,
        "leads (id, destination, idempotency_key, payload, source, created_at)",
        (
            f"{ids[i]}\t{BIG}\torder-{i}\t{payload_field(payloads[i % BATCH], i)}\tapi\t{when(i)}\n"
            for i in range(n)
        ),
    )
    copy_lines(
        conn,
        "deliveries (id, lead_id, destination, stage, state, attempts, in_doubt, external_id,"
        " detail, data, created_at, updated_at, settled_at)",
        (
            f"{i + 1}\t{ids[i]}\t{BIG}\t0\t{'rejected' if i % 50 == 49 else 'delivered'}\t1\tf\t"
            f"{uuids[i % BATCH]}\t\t{{}}\t{when(i)}\t{when(i)}\t{when(i)}\n"
            for i in range(n)
        ),
    )
    copy_lines(
        conn,
        "attempts (id, destination, kind, at, request, status_code, answer, error, elapsed_ms)",
        (
            f"{a + 1}\t{BIG}\tsend\t{when(a * BATCH)}\t{request_field}\t200\t"
            f"{answer_field}\t\t180\n"
            for a in range((n + BATCH - 1) // BATCH)
        ),
    )
    copy_lines(
        conn,
        "attempt_results (id, attempt_id, delivery_id, outcome, detail)",
        (
            f"{i + 1}\t{i // BATCH + 1}\t{i + 1}\t{'rejected' if i % 50 == 49 else 'delivered'}\t\n"
            for i in range(n)
        ),
    )


def load_pending(conn: psycopg.Connection[Any], counts: dict[str, int], now: datetime) -> None:
    """Queued leads per destination, due over the past hour, oldest first."""
    payloads, *_ = sample_exchange()
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM deliveries").fetchone()
    next_id = int(first[0]) if first else 1
    for destination, m in counts.items():
        ids = [uuid.uuid4().hex for _ in range(m)]
        due = [
            (now - timedelta(hours=1) + timedelta(hours=1) * i / m).isoformat() for i in range(m)
        ]
        copy_lines(
            conn,
            "leads (id, destination, idempotency_key, payload, source, created_at)",
            (
                f"{ids[i]}\t{destination}\t{destination}-{i}\t"
                f"{payload_field(payloads[i % BATCH], i)}\tapi\t{due[i]}\n"
                for i in range(m)
            ),
        )
        copy_lines(
            conn,
            "deliveries (id, lead_id, destination, stage, state, attempts, due_at, in_doubt,"
            " detail, data, created_at, updated_at)",
            (
                f"{next_id + i}\t{ids[i]}\t{destination}\t0\tqueued\t0\t{due[i]}\tf\t\t{{}}\t"
                f"{due[i]}\t{due[i]}\n"
                for i in range(m)
            ),
        )
        next_id += m


def secondary_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(name, definition) of every index on the four tables that backs no constraint."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY indexname",
        [list(TABLES)],
    ).fetchall()
    return [(name, definition) for name, definition in rows]


def vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")


def build_ledger(url: str, settled: int, pending: int, now: datetime) -> float:
    """Load the ledger; returns bytes per settled lead, measured before the pending arrive."""
    with psycopg.connect(url) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET session_replication_role = replica")  # no FK triggers: a restore
        indexes = secondary_indexes(conn)
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        started = time.perf_counter()
        load_settled(conn, settled, now)
        print(f"  loaded {settled:,} settled leads in {time.perf_counter() - started:.0f} s")
        for _, definition in indexes:
            conn.execute(definition)
        # replica mode ran no trigger, so the delivery counts are restored as a dump has them
        conn.execute(
            "INSERT INTO delivery_counts (destination, state, n)"
            " SELECT destination, state, count(*) FROM deliveries GROUP BY destination, state"
        )
        conn.execute("SELECT setval('attempts_id_seq', (SELECT max(id) FROM attempts))")
        conn.execute(
            "SELECT setval('attempt_results_id_seq', (SELECT max(id) FROM attempt_results))"
        )
    vacuum(url)
    per_lead = total_bytes(url) / settled
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        load_pending(conn, {BIG: pending, SMALL: SMALL_PENDING}, now)
        conn.execute("SELECT setval('deliveries_id_seq', (SELECT max(id) FROM deliveries))")
        print(
            f"  loaded {pending + SMALL_PENDING:,} pending in {time.perf_counter() - started:.0f} s"
        )
    vacuum(url)
    return per_lead


def total_bytes(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) t",
            [list(TABLES)],
        ).fetchone()
    return int(row[0]) if row else 0


def requeue(url: str) -> None:
    """Rows claimed by an earlier round are queued again, so each round starts alike."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
            " WHERE state = 'sending'"
        )
    vacuum(url)


# ---------------------------------------------------------------- measuring


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def claim(sessions: sessionmaker[Session], destination: str) -> None:
    with sessions.begin() as s:
        got = ledger.claim_due(
            s,
            destination,
            limit=BATCH,
            now=datetime.now(UTC),
            lease=timedelta(seconds=30),
            owner="bench",
        )
    assert len(got) == BATCH, f"{destination} ran dry: load more pending leads"


def claim_plan(sessions: sessionmaker[Session]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim's second pass at BIG, rolled back."""
    seen: list[tuple[str, Any]] = []

    def keep(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    with sessions() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", keep)
        try:
            ledger.claim_due(
                s, BIG, limit=BATCH, now=datetime.now(UTC), lease=timedelta(seconds=30), owner="b"
            )
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        s.rollback()
        sql, params = [q for q in seen if "UPDATE deliveries" in q[0]][-1]
        rows = s.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        plan = "\n".join(r[0] for r in rows)
        s.rollback()
    return plan


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def status_lookup(sessions: sessionmaker[Session], key: str) -> None:
    with sessions() as s:
        (found,) = reports.find_leads(s, key)
        reports.lead_report(s, found)


def measure(ctx: WorkerContext, settled: int) -> dict[str, Any]:
    sessions = ctx.sessions
    out: dict[str, Any] = {"plan": claim_plan(sessions)}
    for destination in (SMALL, BIG):
        samples = [timed(partial(claim, sessions, destination)) for _ in range(CLAIMS)]
        out[destination] = (statistics.median(samples), percentile(samples, 0.99))
    out["ratio"] = out[BIG][0] / out[SMALL][0], out[BIG][1] / out[SMALL][1]

    def stats() -> None:
        with sessions() as s:
            reports.stats(s, ctx.clock())

    out["stats"] = statistics.median(timed(stats) for _ in range(5))
    collector = BacklogCollector(ctx)
    out["scrape"] = statistics.median(timed(lambda: list(collector.collect())) for _ in range(5))
    # the newer half: a reused ledger may have lost its oldest leads to retention
    keys = [f"order-{random.randrange(settled // 2, settled)}" for _ in range(50)]
    lookups = [timed(partial(status_lookup, sessions, key)) for key in keys]
    out["status"] = (statistics.median(lookups), max(lookups))
    return out


def purge_under_claims(ctx: WorkerContext, purge: int, now: datetime) -> dict[str, Any]:
    """
    Delete the `purge` oldest settled leads of BIG with retention's own code as beat runs
    it (batches of `retention.BATCH`, each its own transaction, a pause of RETENTION_REST
    times its length after each) on one thread, while this one claims 50 at BIG every
    50 ms and commits, as a worker does; then the same claims with no purge.
    """
    with psycopg.connect(ctx.settings.database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT settled_at FROM deliveries WHERE destination = %s AND settled_at IS NOT NULL"
            " ORDER BY settled_at OFFSET %s LIMIT 1",
            [BIG, purge],
        ).fetchone()
    before = row[0] if row else now  # the `purge` oldest settled leads lie before it
    done = threading.Event()
    removed: list[retention.Removed] = []
    took: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        try:
            removed.append(
                retention.delete_settled(ctx.sessions, BIG, before=before, rest=RETENTION_REST)
            )
        finally:
            took.append(time.perf_counter() - started)
            done.set()

    def claims_until(stop: Callable[[], bool]) -> list[float]:
        samples: list[float] = []
        while not stop():
            samples.append(timed(partial(claim, ctx.sessions, BIG)))
            time.sleep(0.05)
        return samples

    purger = threading.Thread(target=run)
    purger.start()
    during = claims_until(done.is_set)
    purger.join()
    calm_until = time.perf_counter() + 20
    calm = claims_until(lambda: time.perf_counter() > calm_until)
    return {
        "removed": removed[0] if removed else None,
        "seconds": took[0],
        "during": during,
        "calm": calm,
    }


def report_purge(result: dict[str, Any]) -> None:
    ms = 1000
    removed = result["removed"]
    print(
        f"\nretention: {removed.leads:,} settled leads and {removed.attempts:,} exchanges"
        f" deleted in {result['seconds']:.0f} s ({removed.leads / result['seconds']:,.0f}"
        f" leads/s), in batches of {retention.BATCH} with a pause of {RETENTION_REST:g}x each"
        f" batch's time after it; claims of {BATCH} at {BIG}, one every 50 ms (time.perf_counter):"
    )
    for label, samples in (("during the purge", result["during"]), ("after it", result["calm"])):
        print(
            f"  {label:18} {len(samples):>6} claims: p50 {statistics.median(samples) * ms:.1f} ms,"
            f" p99 {percentile(samples, 0.99) * ms:.1f} ms, slowest {max(samples) * ms:.1f} ms"
        )


# ---------------------------------------------------------------- report


def report(
    rounds: dict[str, dict[str, Any]], settled: int, pending: int, per_lead: float | None
) -> None:
    ms = 1000
    for label, r in rounds.items():
        print(f"\nEXPLAIN (ANALYZE, BUFFERS), one claim of {BATCH} at {BIG}, {label}:")
        print(r["plan"])
    labels = list(rounds)
    print(f"\nthe ledger at {settled:,} settled and {pending:,} pending leads (time.perf_counter)")
    print(f"  {'':46}" + "".join(f"{label:>26}" for label in labels))

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> None:
        print(f"  {name:46}" + "".join(f"{cell(rounds[label]):>26}" for label in labels))

    row(
        f"claim of {BATCH}, {SMALL_PENDING:,} pending: p50 / p99",
        lambda r: f"{r[SMALL][0] * ms:.1f} / {r[SMALL][1] * ms:.1f} ms",
    )
    row(
        f"claim of {BATCH}, {pending:,} pending: p50 / p99",
        lambda r: f"{r[BIG][0] * ms:.1f} / {r[BIG][1] * ms:.1f} ms",
    )
    row("  ratio (target ≤ 1.5×)", lambda r: f"{r['ratio'][0]:.2f}× / {r['ratio'][1]:.2f}×")
    row("stats, median of 5 (target ≤ 0.5 s)", lambda r: f"{r['stats']:.3f} s")
    row("/metrics ledger reading, median of 5 (≤ 0.5 s)", lambda r: f"{r['scrape']:.3f} s")
    row(
        "status LEAD by key: p50 / slowest (≤ 50 ms)",
        lambda r: f"{r['status'][0] * ms:.1f} / {r['status'][1] * ms:.1f} ms",
    )
    if per_lead is not None:
        print(f"  bytes per settled lead (4 tables, with indexes): {per_lead:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settled", type=int, default=2_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="measure the existing database")
    parser.add_argument("--with-only", action="store_true", help="skip the column without 0005")
    parser.add_argument(
        "--purge",
        type=int,
        default=1_000_000,
        help="then delete this many settled leads by retention, under claims (0: skip)",
    )
    args = parser.parse_args()
    url = PG_ADMIN.rpartition("/")[0] + f"/{DATABASE}"
    now = datetime.now(UTC)
    per_lead: float | None = None  # measured while building only, before the pending arrive
    if args.reuse:
        requeue(url)
    else:
        print(f"building {DATABASE}: {args.settled:,} settled, {args.pending:,} pending")
        url = fresh_database(DATABASE)
        per_lead = build_ledger(url, args.settled, args.pending, now)
    tables = {BIG: kuper_table("http://127.0.0.1:9"), SMALL: kuper_table("http://127.0.0.1:9")}
    ctx = build(load(database_url=url, destinations=parse_destinations(tables)), shared=False)
    rounds = {"with 0005's indexes": measure(ctx, args.settled)}
    if not args.with_only:
        with psycopg.connect(url, autocommit=True) as conn:
            kept = [(n, d) for n, d in secondary_indexes(conn) if n in NEW_INDEXES]
            for name, _ in kept:
                conn.execute(f"DROP INDEX {name}")
            conn.execute("ANALYZE deliveries")
        requeue(url)
        try:
            rounds["without them (0004)"] = measure(ctx, args.settled)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                for _, definition in kept:
                    conn.execute(definition)
            requeue(url)
    report(rounds, args.settled, args.pending, per_lead)
    if args.purge:
        report_purge(purge_under_claims(ctx, min(args.purge, args.settled), now))
    ctx.close()


if __name__ == "__main__":
    main()
