"""
`leadrelay`: the command line for upstream developers and ops.

Every command that reports has `--json` for scripts. Configuration comes from
the environment (`LEADRELAY_*`) and the destinations file, as for the workers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich import box
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
from producers.importer import count_lines, import_rows, read_rows
from worker import ledger, redis_urls
from worker.delivery.context import WorkerContext, build
from worker.delivery.limiter import RedisLimiter
from worker.errors import ConfigError, LeadRelayError
from worker.leads import LeadState
from worker.ledger import migrate, reports
from worker.ops.redact import redact_text
from worker.settings import Settings, get_settings

app = typer.Typer(
    name="leadrelay",
    help="Deliver leads to lead platforms; see where each one stands.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # a traceback never shows local variables: they hold leads and settings
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="The ledger's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
admitad_app = typer.Typer(help="Admitad: SMS-verified applications.", no_args_is_help=True)
app.add_typer(admitad_app, name="admitad")


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"leadrelay {version('leadrelay')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Deliver leads to lead platforms; see where each one stands."""


# soft_wrap: a line a script greps (file:line: field: rule) is never folded
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def emit(text: str) -> None:
    """One line of machine-readable output on stdout."""
    sys.stdout.write(text + "\n")


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print("[red]error:[/] ", end="")
    err.print(message, markup=False)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None


def destinations_or_exit(settings: Settings) -> None:
    """Exit 2, saying where the destinations file is looked for, when it names none."""
    if settings.destinations:
        return
    path = settings.config.absolute()
    where = f"{path} does not exist" if not path.exists() else f"{path} names none"
    raise fail(
        f"no destinations are configured: {where} (LEADRELAY_CONFIG names the file;"
        " one [destinations.<name>] table each, as in leadrelay.example.toml)"
    )


@contextmanager
def context(*, destinations: bool = False) -> Iterator[WorkerContext]:
    """
    The command's settings, ledger and clients. Checked first, each once: the
    settings; the destinations, when the command needs one; the ledger's schema
    (one read of its version table), so a ledger without one is a message.
    """
    settings = settings_or_exit()
    if destinations:
        destinations_or_exit(settings)
    try:
        migrate.require_current(settings.database_url)
    except LeadRelayError as exc:
        raise fail(str(exc)) from None
    ctx = build(settings, shared=False)
    try:
        yield ctx
    finally:
        ctx.close()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the ledger's tables (run before the first start and after each upgrade)."""
    settings = settings_or_exit()
    try:
        state = migrate.schema_state(settings.database_url)
    except LeadRelayError as exc:
        raise fail(str(exc)) from None
    problem = state.problem(settings.database_url)
    if state.unknown and problem:  # a newer leadrelay's schema: alembic knows no way back
        raise fail(problem)
    migrate.upgrade(settings.database_url, revision)
    out.print(f"ledger at revision {revision}")


@app.command()
def submit(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="JSON Lines (.jsonl) or CSV (.csv)"),
    ],
    to: Annotated[str, typer.Option("--to", help="The destination's name, as in the config file.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv (default: by suffix)")
    ] = None,
    key_field: Annotated[
        str | None,
        typer.Option("--key-field", help="A column holding each lead's idempotency key."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit every lead in FILE to a destination; bad rows are reported by line, field and rule."""
    if fmt not in (None, "jsonl", "csv"):
        raise fail("--format: jsonl or csv")
    with context(destinations=True) as ctx:
        try:
            ctx.settings.destination(to)
        except LeadRelayError as exc:
            raise fail(str(exc)) from None
        producer = Producer(ctx)
        total = count_lines(file)
        columns = (
            TextColumn("submitting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, disable=as_json or not err.is_terminal) as bar:
            task = bar.add_task("rows", total=total)
            report = import_rows(
                producer,
                to,
                read_rows(file, fmt, key_field),
                progress=lambda n: bar.advance(task, n),
            )
    if as_json:
        emit(
            json.dumps(
                {
                    "accepted": report.accepted,
                    "duplicates": report.duplicates,
                    "refused": [
                        {"line": line, "field": e.field, "rule": e.rule}
                        for line, e in report.refused
                    ],
                },
                ensure_ascii=False,
            )
        )
    else:
        for line, error in report.refused:
            err.print(f"{file}:{line}: {error.field}: {error.rule}", markup=False, emoji=False)
        out.print(
            f"accepted {report.accepted}, already known {report.duplicates}, "
            f"refused {report.refused_rows} row(s)"
        )
    if report.refused:
        raise typer.Exit(1)


STAT_COLUMNS = ("queued", "sending", "delivered", "rejected", "retry_wait", "dead")
#: the table's columns, in 80 terminal columns: (header, the row's key)
TABLE_COLUMNS = (
    ("queued", "queued"),
    ("sending", "sending"),
    ("retry", "retry_wait"),
    ("delivered", "delivered"),
    ("rejected", "rejected"),
    ("dead", "dead"),
)


@app.command()
def stats(
    as_json: JsonOpt = False,
    watch: Annotated[float | None, typer.Option("--watch", help="Refresh every N seconds.")] = None,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="Add the other states and the leads settled per minute and per hour."
        ),
    ] = False,
) -> None:
    """
    Per destination: leads queued, sending, waiting to retry, delivered, rejected,
    dead; how long the oldest due lead has waited; pauses. --json has every figure.
    """
    with context() as ctx:
        while True:
            data = _stats(ctx)
            if as_json:
                emit(json.dumps(data, ensure_ascii=False))
            else:
                if watch:
                    out.clear()
                _print_stats(data, wide)
            if not watch:
                return
            time.sleep(watch)


def _stats(ctx: WorkerContext) -> list[dict[str, Any]]:
    now = ctx.clock()
    with ctx.sessions() as session:
        found = reports.stats(session, now)
        paused = ledger.pauses(session, now)
    learned = _learned_rates(ctx)
    rows = []
    for name in sorted(set(ctx.settings.destinations) | set(found)):
        s = found.get(name, reports.DestinationStats(name))
        pause = paused.get(name)
        dest = ctx.settings.destinations.get(name)
        rows.append(
            {
                "destination": name,
                **{c: s.count(LeadState(c)) for c in STAT_COLUMNS},
                "other": {k: v for k, v in s.states.items() if k not in STAT_COLUMNS},
                "oldest_due_s": s.oldest_due_s,
                "settled_last_minute": s.settled_last_minute,
                "settled_last_hour": s.settled_last_hour,
                "paused_until": pause.until.isoformat()
                if pause and pause.until
                else ("indefinitely" if pause else None),
                "paused_why": pause.reason if pause else None,
                "rate": learned.get(name, dest.initial_rate if dest else None),
                "rate_auto": name in learned,
            }
        )
    return rows


def _learned_rates(ctx: WorkerContext) -> dict[str, float | None]:
    """
    The rate each `rate = "auto"` destination has learned, from the shared
    limiter's Redis (None where Redis does not answer); the others are fixed.
    """
    learning = [d for d in ctx.settings.destinations.values() if d.rate_bounds]
    if not learning:
        return {}
    client = redis_urls.client(
        ctx.settings.limiter_url, ctx.settings.redis_master_name, socket_timeout=2
    )
    try:
        limiter = RedisLimiter(client)
        return {d.name: limiter.learned(d) for d in learning}
    except redis.RedisError:
        return dict.fromkeys((d.name for d in learning), None)
    finally:
        client.close()


#: the most terminal columns `stats --wide` takes
WIDE_COLUMNS = 160


def compact_table(title: str | None = None) -> Table:
    """A table with a rule under its header and one space between columns: more fits in 80."""
    return Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def _waited(seconds: float | None) -> str:
    """How long the oldest due lead has waited, in its largest whole unit: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _print_stats(data: list[dict[str, Any]], wide: bool) -> None:
    """
    The stats table, then a line per destination for what a column would not
    hold: states beside the six (Admitad's awaiting_status, approved, …) and pauses.
    Six counts, the wait and the name fit 80 columns; --wide adds the rest.
    """
    table = compact_table(title="lead relay")
    table.add_column("destination", overflow="fold")
    for header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("waited", justify="right", no_wrap=True)
    if wide:
        table.add_column("other")
        for header in ("settled/min", "settled/hour"):
            table.add_column(header, justify="right", no_wrap=True)
    notes = []
    for row in data:
        other = ", ".join(f"{k} {v}" for k, v in row["other"].items())
        cells = [row["destination"], *(str(row[key]) for _, key in TABLE_COLUMNS)]
        cells.append(_waited(row["oldest_due_s"]))
        if wide:
            cells += [other or "0", str(row["settled_last_minute"]), str(row["settled_last_hour"])]
        elif other:
            notes.append(f"{row['destination']}: also {other}")
        table.add_row(*cells)
        if row["rate_auto"]:
            notes.append(_learned_note(row))
        if row["paused_until"]:
            until = row["paused_until"]
            when = "until resumed" if until == "indefinitely" else f"until {until}"
            notes.append(f"{row['destination']}: paused {when} ({row['paused_why']})")
    if wide:  # as wide as its columns need, whatever the terminal: a pager or a file takes it
        Console(highlight=False, width=max(out.width, WIDE_COLUMNS)).print(table)
    else:
        out.print(table)
    out.print("retry: waiting to retry; waited: the oldest due lead, since it fell due")
    for note in notes:
        out.print(note, markup=False)
    if not data:
        err.print(
            "nothing to show: no destination is configured and the ledger holds no lead",
            markup=False,
        )


def _learned_note(row: dict[str, Any]) -> str:
    """The line under the table for a destination that learns its rate."""
    rate = "unknown (Redis does not answer)" if row["rate"] is None else f"{row['rate']:.2f}/s"
    return f"{row['destination']}: learned rate {rate}"


@app.command()
def status(
    lead: Annotated[str, typer.Argument(help="Our lead id, or the producer's idempotency key.")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="The destination the key was submitted to (a key is per destination)."
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Also ask the platform for its own record (SalesMan).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Where one lead stands: its deliveries, every attempt, the next due time."""
    with context(destinations=live) as ctx:
        row = one_lead(ctx, lead, to, "--to", as_json)
        with ctx.sessions() as session:
            report = reports.lead_report(session, row)
        if live:
            _known(ctx, row.destination)
            report["platform"] = _live(ctx, row.destination, row.id, report)
    if as_json:
        emit(json.dumps(report, ensure_ascii=False))
        return
    out.print(
        f"[bold]{report['lead_id']}[/] → {report['destination']} (accepted {report['accepted_at']})"
    )
    for d in report["deliveries"]:
        stage = f"stage {d['stage']}: " if d["stage"] else ""
        out.print(
            f"  {stage}[bold]{d['state']}[/] after {d['attempts']} attempt(s); "
            f"next due {d['due_at'] or '-'}; platform id {d['external_id'] or '-'}"
        )
        if d["detail"]:
            out.print(f"    {d['detail']}")
        if d["data"].get("crm"):
            crm = d["data"]["crm"]
            out.print(
                f"    CRM: status {crm['status']} {crm['status_name']}, "
                f"result {crm['rezult'] or '-'} {crm['rezult_name']}",
                markup=False,
            )
        for a in d["history"]:
            out.print(
                f"    {a['at']} {a['kind']} HTTP {a['status_code'] or '-'} {a['outcome']}"
                f" {a['detail'] or a['error']}",
                markup=False,
            )
    for item in report.get("platform", []):
        out.print(
            f"  platform's record (stage {item['stage']}): {item['record'] or item['why']}",
            markup=False,
        )


def one_lead(
    ctx: WorkerContext, ref: str, destination: str | None, option: str, as_json: bool
) -> reports.AcceptedLead:
    """
    The lead `ref` names: our id, or an idempotency key, which is unique per
    destination only. A key several destinations hold is listed (lead id,
    destination, state) and refused until `option` says which: never a guess.
    """
    with ctx.sessions() as session:
        found = reports.find_leads(session, ref, destination)
        if not found:
            scope = f" for destination {destination!r}" if destination else ""
            raise fail(f"no lead with id or idempotency key {ref!r}{scope}", 1)
        if len(found) == 1:
            return found[0]
        states = reports.lead_states(session, [f.id for f in found])
    listed = [
        {
            "lead_id": f.id,
            "destination": f.destination,
            "state": ", ".join(states[f.id]) or "-",
            "accepted_at": f.accepted_at.isoformat(),
        }
        for f in found
    ]
    if as_json:
        emit(json.dumps({"ambiguous": listed}, ensure_ascii=False))
    else:
        table = compact_table()
        for column in ("lead id", "destination", "state"):
            table.add_column(column, overflow="fold")
        for item in listed:
            table.add_row(item["lead_id"], item["destination"], item["state"])
        out.print(table)
    more = "at least " if len(found) == reports.KEY_MATCHES else ""
    raise fail(
        f"idempotency key {ref!r} names {more}{len(found)} leads, one per destination:"
        f" add {option} DESTINATION, or give the lead id"
    )


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option}: an ISO date or time, e.g. 2026-11-22 or 2026-11-22T10:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def refusals(
    since: Annotated[str | None, typer.Option(help="At or after (ISO time, UTC).")] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """
    Raw leads refused at the door (Celery messages, with nobody to tell at once):
    when, from where, for which destination and key, and each field and rule
    broken. The ledger keeps no value of a refused lead, so none is shown.
    """
    since_at = _when(since, "--since")
    if limit < 1:
        raise fail("--limit: one or more")
    with context() as ctx:
        with ctx.sessions() as session:
            found = reports.refusals(session, since_at, limit, destination)
        secrets = ctx.secrets
    for refusal in found:  # rules name no value; masked again all the same, as every report is
        refusal["errors"] = [
            {"field": e.get("field", ""), "rule": redact_text(str(e.get("rule", "")), secrets)}
            for e in refusal["errors"]
        ]
    if as_json:
        emit(json.dumps(found, ensure_ascii=False))
        return
    for refusal in found:
        at = datetime.fromisoformat(refusal["at"]).strftime("%Y-%m-%d %H:%M:%S")
        key = refusal["idempotency_key"]
        out.print(
            f"{at}  {refusal['source']}  {refusal['destination'] or '(no destination)'}"
            f"  {'key ' + key if key is not None else '(no key)'}",
            markup=False,
        )
        for e in refusal["errors"]:
            out.print(f"    {e['field']}: {e['rule']}", markup=False)
    newest = " (the newest; --limit for more)" if len(found) == limit else ""
    out.print(f"{len(found)} refusal(s){newest}")


@app.command()
def retry(
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    lead: Annotated[
        str | None,
        typer.Option(
            help="Only this lead: our id, or an idempotency key (with --destination when"
            " several destinations hold it)."
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Settled at or after (ISO time, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Settled before (ISO time, UTC).")] = None,
    reason: Annotated[
        str | None, typer.Option(help="Only where the last reason contains this.")
    ] = None,
    rejected: Annotated[
        bool, typer.Option(help="Also put back leads the platform rejected.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask, however many.")] = False,
    ask_above: Annotated[int, typer.Option(help="Ask before putting back more than this.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Put dead (and, when asked, rejected) leads back in their queues, with fresh attempts."""
    states = (LeadState.DEAD, LeadState.REJECTED) if rejected else (LeadState.DEAD,)
    with context(destinations=destination is not None) as ctx:
        if destination is not None:
            _known(ctx, destination)
        lead_id = None
        if lead is not None:
            lead_id = one_lead(ctx, lead, destination, "--destination", as_json).id
        filt = ledger.RequeueFilter(
            states, destination, _when(since, "--since"), _when(until, "--until"), reason, lead_id
        )
        with ctx.sessions() as session:
            matched = ledger.count_requeue(session, filt)
        if matched > ask_above and not yes:
            if as_json or not sys.stdin.isatty():
                raise fail(f"{matched} leads match; more than {ask_above}: add --yes", 1)
            typer.confirm(f"Put back {matched} leads?", abort=True)
        with ctx.sessions.begin() as session:
            counts = ledger.requeue(session, filt, ctx.clock())
        for name, n in counts.items():
            _wake(ctx, name, n)
    if as_json:
        emit(json.dumps({"requeued": counts, "total": sum(counts.values())}))
    else:
        out.print(
            f"put back {sum(counts.values())} lead(s)"
            + "".join(f"; {name}: {n}" for name, n in counts.items())
        )


def _known(ctx: WorkerContext, destination: str) -> None:
    try:
        ctx.settings.destination(destination)
    except LeadRelayError as exc:
        raise fail(str(exc)) from None


def _wake(ctx: WorkerContext, destination: str, count: int) -> None:
    from producers.client import celery_waker

    if destination in ctx.settings.destinations:
        from worker.runtime.app import use_settings

        use_settings(ctx.settings)
        dest = ctx.settings.destination(destination)
        celery_waker(destination, min(dest.concurrency, max(1, count // dest.batch_size)))


@app.command()
def pause(
    destination: str,
    reason: Annotated[str, typer.Option(help="Why; shown in stats.")] = "paused by ops",
    minutes: Annotated[float | None, typer.Option(help="Resume by itself after this long.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop sending to a destination (every worker; survives restarts) until `resume`."""
    with context(destinations=True) as ctx:
        _known(ctx, destination)
        now = ctx.clock()
        until = now + timedelta(minutes=minutes) if minutes else None
        with ctx.sessions.begin() as session:
            ledger.set_pause(
                session, destination, kind="manual", reason=reason, now=now, until=until
            )
    if as_json:
        emit(
            json.dumps(
                {
                    "destination": destination,
                    "paused_until": until.isoformat() if until else None,
                    "reason": reason,
                }
            )
        )
    else:
        out.print(
            f"{destination} paused {'until ' + until.isoformat() if until else 'until resumed'}"
        )


@app.command()
def resume(destination: str, as_json: JsonOpt = False) -> None:
    """Let a paused destination send again (a pause by ops, an auth or a quota pause)."""
    with context(destinations=True) as ctx:
        _known(ctx, destination)
        with ctx.sessions.begin() as session:
            was = ledger.clear_pause(session, destination)
        if was:
            _wake(ctx, destination, 1)
    if as_json:
        emit(json.dumps({"destination": destination, "was_paused": was}))
    else:
        out.print(f"{destination} {'resumed' if was else 'was not paused'}")


@app.command()
def purge(
    days: Annotated[
        int | None, typer.Option(help="Keep this many days (default: LEADRELAY_RETENTION_DAYS).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """
    Remove the personal data of settled leads older than the retention period, and
    delete whole the settled leads of each destination with `keep_days`.
    """
    from worker.ledger.retention import Removed, delete_all

    with context() as ctx:
        keep = ctx.settings.retention_days if days is None else days
        if keep < 0:
            raise fail("--days: zero or more")
        now = ctx.clock()
        with ctx.sessions.begin() as session:
            purged = ledger.purge_personal_data(session, before=now - timedelta(days=keep), now=now)
        shown = [0.0]

        def progress(removed: Removed) -> None:  # a line a second at most, on stderr
            if not as_json and time.monotonic() - shown[0] >= 1.0:
                shown[0] = time.monotonic()
                err.print(
                    f"{removed.destination}: {removed.leads:,} lead(s) and"
                    f" {removed.attempts:,} exchange(s) deleted so far"
                )

        removed = delete_all(
            ctx.sessions, ctx.settings.destinations.values(), now, progress=progress
        )
        deleted = {d.name: {"leads": r.leads, "attempts": r.attempts} for d, r in removed}
    if as_json:
        emit(json.dumps({"purged": purged, "kept_days": keep, "deleted": deleted}))
        return
    out.print(f"removed the personal data of {purged} lead(s) settled more than {keep} day(s) ago")
    for name, n in deleted.items():
        kept = ctx.settings.destinations[name].keep_days
        out.print(
            f"{name}: deleted {n['leads']:,} lead(s) settled more than {kept} day(s) ago,"
            f" and {n['attempts']:,} exchange(s) that carried only those"
        )


def _live(ctx: WorkerContext, destination: str, lead_id: str, report: dict[str, Any]) -> Any:
    """The platform's own record of each delivered stage (redacted), or why there is none."""
    from worker.delivery.exchange import Exchange, Turn, call, read, record
    from worker.leads import Delivery
    from worker.ops.redact import redact_value
    from worker.outcomes import Failed, Suspended

    turn = Turn.at(ctx, destination)
    found = []
    for d in report["deliveries"]:
        probe = Delivery(
            id=0,
            lead_id=lead_id,
            payload={},
            attempt=d["attempts"],
            created_at=ctx.clock(),
            stage=d["stage"],
            external_id=d["external_id"],
        )
        request = turn.adapter.build_info(probe, turn.dest)
        if request is None:
            found.append(
                {"stage": d["stage"], "record": None, "why": "nothing to ask the platform"}
            )
            continue
        exchange = call(turn, request, kind="info")
        if not isinstance(exchange, Exchange):
            why = f"{destination}'s rate limit is busy; ask again shortly"
            found.append({"stage": d["stage"], "record": None, "why": why})
            continue
        with ctx.sessions.begin() as session:
            record(turn, session, exchange, [])
        answer = read(exchange, turn.adapter.parse_info)
        if isinstance(answer, Failed | Suspended):  # an ops view: say what failed, never crash
            found.append({"stage": d["stage"], "record": None, "why": answer.reason})
            continue
        found.append({"stage": d["stage"], "record": redact_value(dict(answer), ctx.secrets)})
    return found


@admitad_app.command("confirm")
def admitad_confirm(
    application: Annotated[str, typer.Argument(help="Admitad's application_id.")],
    code: Annotated[str, typer.Argument(help="The code the user received by SMS.")],
    as_json: JsonOpt = False,
) -> None:
    """Send the user's SMS code for an application a bank holds until it is confirmed."""
    from worker.delivery import confirm as sms

    with context(destinations=True) as ctx:
        result = sms.confirm(ctx, application, code)
    if as_json:
        emit(
            json.dumps(
                {"lead_id": result.lead_id, "state": result.state, "detail": result.detail},
                ensure_ascii=False,
            )
        )
    else:
        out.print(f"{application}: {result.state}: {result.detail}", markup=False)
    if result.lead_id is None:
        raise typer.Exit(1)


@app.command()
def demo(
    leads: Annotated[int, typer.Option(help="How many sample leads to submit.")] = 300,
    database: Annotated[Path, typer.Option(help="The demo's SQLite ledger file.")] = Path(
        "leadrelay-demo.db"
    ),
) -> None:
    """Run the whole relay in one process on SQLite, against the sandboxes: nothing to install."""
    from producers.sandboxes import SandboxNotInstalled, require

    try:
        require()
    except SandboxNotInstalled as exc:
        raise fail(str(exc)) from None
    from producers import demo as demo_module

    wide = Console(soft_wrap=True, highlight=False, width=max(100, out.width))
    raise typer.Exit(demo_module.run(leads, database, wide))


@app.command()
def metrics(
    host: str = "0.0.0.0",  # noqa: S104 - a metrics endpoint is scraped from outside the pod
    port: Annotated[int, typer.Option(help="Where Prometheus scrapes /metrics.")] = 9808,
) -> None:
    """Serve /metrics: the workers' counters and the ledger's backlog per destination and state."""
    from producers.metrics_server import serve

    with context() as ctx:
        out.print(f"serving /metrics on {host}:{port}")
        serve(ctx, host, port)


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """
    What is wrong with this relay: config and secrets, the ledger and its schema,
    Redis, clock skew, queues no worker consumes, beat, pauses, dead leads.
    Exit 1 when a check fails.
    """
    from producers import doctor as checks

    found = checks.run()
    if as_json:
        emit(checks.as_json(found))
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
        for check in found:
            mark = f"[{colours[check.status]}]{check.status.upper():<4}[/]"
            out.print(f"{mark}  {check.name:<10} ", end="")
            out.print(check.summary, markup=False)
            for line in check.details:
                out.print(f"{'':<17}- ", end="")
                out.print(line, markup=False)
    if checks.failed(found):
        raise typer.Exit(1)


@app.command()
def sandbox(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The first port; each platform takes the next.")] = 8701,
) -> None:
    """Serve the platform emulators on loopback ports until interrupted (for tests and trials)."""
    from producers.sandboxes import SandboxNotInstalled, serve_all

    try:
        serve_all(host, port, out)
    except SandboxNotInstalled as exc:
        raise fail(str(exc)) from None


def main() -> None:
    try:
        app()
    except LeadRelayError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
