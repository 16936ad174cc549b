"""
`leadrelay demo`: the whole relay in one process, on the embedded default.

A SQLite ledger file, the platforms' sandbox emulators on loopback ports, a
worker thread per destination running the real delivery loop (with the
in-process limiter: nothing to install), a few hundred sample leads, a
progress bar, and a per-destination table at the end, then the command that
shows one lead's story from the demo's ledger, to paste as printed. The
sandboxes are told to answer one 429 each, so the cooldown is seen working too.

The platforms are the worker's registry (`worker.platforms.REGISTRY`); each
one's scenario (emulator, destination table, sample and bad leads) is `DEMO`
in `producers.demo_platforms.<platform>`.
"""

from __future__ import annotations

import random
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
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
from producers.demo_platforms import DemoPlatform, demo_platform
from sandbox import serve
from worker.delivery import loop as delivery
from worker.delivery import polling
from worker.delivery.context import WorkerContext, build
from worker.intake import Submission
from worker.leads import FINAL_STATES, LeadState
from worker.ledger import migrate, reports
from worker.ops import logs
from worker.platforms import REGISTRY
from worker.settings import load, parse_destinations, secret_values


def platforms(console: Console) -> dict[str, DemoPlatform]:
    """
    Each registered platform's demo, by platform name, in registry order; a
    platform without a demo module is left out, and the console says so.
    """
    found = {}
    for platform in REGISTRY:
        demo = demo_platform(platform)
        if demo is None:
            console.print(
                f"  {platform}: not in the demo (no producers/demo_platforms/{platform}.py)"
            )
        else:
            found[platform] = demo
    return found


def destination(platform: str) -> str:
    """The demo's destination of a platform: `kuper-demo`."""
    return f"{platform}-demo"


def table(platform: str, demo: DemoPlatform, base_url: str) -> dict[str, Any]:
    """The destination table of the platform's demo, its emulator at `base_url`."""
    return {"platform": platform, "base_url": base_url, **demo.table}


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
    demos = platforms(console)
    with ExitStack() as stack:
        urls = {p: stack.enter_context(serve(demo.app())) for p, demo in demos.items()}
        settings = load(
            database_url=url,
            destinations=parse_destinations(
                {destination(p): table(p, demo, urls[p]) for p, demo in demos.items()}
            ),
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
        first = _submit(ctx, demos, rng, leads, console)
        started = time.monotonic()
        _deliver(ctx, sum(s.total for s in _counts(ctx)), console)
        _summary(ctx, console, time.monotonic() - started)
        console.print("every attempt is in the ledger; one lead's story:")
        console.print(f"  {status_command(database, first)}", markup=False, soft_wrap=True)
        return 0 if _all_final(ctx) else 1


def leadrelay_command() -> str:
    """
    How a shell runs this installation's `leadrelay`: the bare name when PATH
    finds this one, its script's path when PATH does not (a virtualenv not
    activated, as in the README's first command), else `python -m producers`.
    """
    script = Path(sys.executable).parent / "leadrelay"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m producers"
    found = shutil.which("leadrelay")
    if found is not None and Path(found).resolve() == script.resolve():
        return "leadrelay"
    return shlex.quote(str(script))


def status_command(database: Path, lead_id: str | None) -> str:
    """
    The command that shows a lead of this demo, to paste as printed: the ledger's
    URL with the file's absolute path (it works from any directory), this
    installation's `leadrelay`, and the lead's id (unique, where the demo's
    idempotency keys repeat across destinations). No lead accepted: the stats.
    """
    url = shlex.quote(f"sqlite:///{database.absolute()}")
    ask = f"status {lead_id}" if lead_id is not None else "stats"
    return f"LEADRELAY_DATABASE_URL={url} {leadrelay_command()} {ask}"


def _submit(
    ctx: WorkerContext,
    demos: Mapping[str, DemoPlatform],
    rng: random.Random,
    leads: int,
    console: Console,
) -> str | None:
    """Submit the sample leads and the bad ones; returns the first accepted lead's id."""
    producer = Producer(ctx, waker=None)
    per = max(1, leads // max(1, len(demos)))
    first = None
    for platform, demo in demos.items():
        name = destination(platform)
        subs = [Submission(demo.sample(rng, i), f"demo-{i}") for i in range(per)]
        subs += [Submission(bad) for bad in demo.bad]
        results = producer.submit_many(name, subs, source="demo")
        first = first or next((r.lead_id for r in results if r.ok), None)
        for result in results:
            for error in result.errors:
                console.print(f"  [yellow]refused[/] {name}: {error}")
    return first


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
        polling.poll(ctx, destination)
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
        "(rejected, declined, unmatched)."
    )


def _requests(ctx: WorkerContext) -> dict[str, tuple[int, int]]:
    with ctx.sessions() as session:
        return reports.requests_by_destination(session)
