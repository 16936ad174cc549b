"""
The Celery application.

Built at import, configured lazily: settings are read (and destinations
turned into queues) only when Celery first needs its configuration, so
`import worker` opens nothing and reads no file.

We never use a result backend (task results are not our record: the ledger
is), serialise JSON only (task arguments are ids, never personal data, and
Flower shows them), and ack late with `task_reject_on_worker_lost`, so a
worker killed mid-task leaves its message to be delivered again; the ledger's
lease makes that second run harmless.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Queue

from worker import redis_urls
from worker.config import CONTROL_QUEUE, INTAKE_QUEUE, group_queues
from worker.runtime import broker

__all__ = ["CONTROL_QUEUE", "INTAKE_QUEUE", "app", "celery_config", "use_settings"]

app = Celery("leadrelay")


def celery_config(settings: Any) -> dict[str, Any]:
    """Celery's settings, from ours. A pure function: tests read it."""
    from worker.runtime.beat import schedule

    # A worker of a group consumes its group's queues only (`celery worker` without -Q
    # takes every queue it is configured with). Messages to the others still go: every
    # publish names its queue as a kombu Queue (worker.runtime.wakeups).
    if settings.worker_group is None:
        names = [CONTROL_QUEUE, INTAKE_QUEUE]
        names += [dest.queue for dest in settings.destinations.values()]
    else:
        names = group_queues(settings.worker_group, settings.destinations.values())
    queues = [Queue(name) for name in names]
    broker_url, transport_options = broker_connection(settings)
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # On a lost broker connection a drain finishes its batch (cancelling it mid-request
        # would only put its leads in doubt); its wake-up is not needed again: the sweep wakes.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "task_queues": queues,
        "task_default_queue": CONTROL_QUEUE,
        "task_create_missing_queues": False,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": schedule(settings),
        "beat_scheduler": "worker.runtime.beat:Scheduler",
        "timezone": "UTC",
        "imports": ["worker.runtime.tasks"],
    }


def broker_connection(settings: Any) -> tuple[str, dict[str, Any]]:
    """
    The broker URL as kombu reads it, and its transport options. A `sentinel://`
    URL goes to kombu's Sentinel transport with the master's name (task events,
    Flower and `inspect` take the same options; there is no result backend), and
    with its credentials and database written on every Sentinel URL
    (`worker.redis_urls`).
    """
    # No ETA here is longer than a few seconds, so the visibility timeout only
    # bounds how long a message of a dead worker waits to be delivered again.
    options: dict[str, Any] = {"visibility_timeout": 3600}
    url = settings.broker_url
    if redis_urls.is_sentinel(url):
        options["master_name"] = settings.redis_master_name
        url = redis_urls.parse_sentinel(url).kombu_url()
    return url, options


_explicit: list[Any] = []


def use_settings(settings: Any) -> None:
    """Configure the app from these settings instead of the environment (CLI, tests)."""
    _explicit[:] = [settings]
    app.conf.update(celery_config(settings))


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    import os
    import sys

    from worker.errors import ConfigError
    from worker.runtime.flower import apply_defaults, check_auth
    from worker.settings import get_settings

    try:
        check_auth(sys.argv, os.environ)
        apply_defaults(sys.argv)
        settings = _explicit[0] if _explicit else get_settings()
    except ConfigError as exc:
        # Celery's signals log a receiver's exception and carry on with default settings
        # (an AMQP broker on localhost): a wrong setting must stop the process instead.
        sys.stderr.write(f"leadrelay: configuration: {exc}\n")
        raise SystemExit(2) from exc
    sender.conf.update(celery_config(settings))


@signals.celeryd_init.connect
def _worker_starts(options: dict[str, Any] | None = None, **_: Any) -> None:
    """
    `celery worker` only, before it connects. kombu's Redis transport gets its
    reconnect fix here, not at import: a process that only publishes (a producer,
    a host app with its own Celery app beside ours) keeps kombu's own transport.
    Then the destinations this worker serves must have their secrets.
    """
    import sys

    from worker.settings import get_settings

    broker.install()
    settings = _explicit[0] if _explicit else get_settings()
    unset = [
        error
        for dest in served(settings, (options or {}).get("queues"))
        for error in dest.unset_secrets()
    ]
    for error in unset:
        sys.stderr.write(f"leadrelay: configuration: {error}\n")
    if unset:
        raise SystemExit(2)


def served(settings: Any, queues: Any) -> list[Any]:
    """
    The destinations a worker consuming `queues` (`-Q`; none: its group's, or
    every queue without a group) sends to.
    """
    names = queues.split(",") if isinstance(queues, str) else list(queues or [])
    dests = settings.destinations.values()
    if not names and settings.worker_group is not None:
        names = group_queues(settings.worker_group, dests)
    elif not names:
        return list(dests)
    return [dest for dest in dests if dest.queue in names]


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_celery_logs(logger: Any, **_: Any) -> None:
    """
    Celery's own handlers (the main process's, beat's) get the redaction filter too:
    the consumer logs the whole body of a message it refuses, a lead's among them.
    """
    from worker.ops.logs import add_redaction
    from worker.settings import get_settings, secret_values

    secrets = secret_values(_explicit[0] if _explicit else get_settings())
    for handler in logger.handlers:
        add_redaction(handler, secrets)


@signals.worker_process_init.connect
def _open_context(**_: Any) -> None:
    from worker.delivery import context
    from worker.settings import get_settings

    context.open(get_settings())


@signals.worker_process_shutdown.connect
def _close_context(**_: Any) -> None:
    from worker.delivery import context

    context.close()


@signals.worker_init.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Main process: the heartbeat the liveness probe reads (`worker.runtime.heartbeat`)."""
    from worker.runtime import heartbeat

    heartbeat.start(sender)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    from worker.runtime import heartbeat

    heartbeat.stop()


@signals.worker_init.connect
def _start_metrics(sender: Any = None, **_: Any) -> None:
    """
    Main process, before the pool forks: clear PROMETHEUS_MULTIPROC_DIR, serve
    /metrics, and set the rate limit of each destination this worker drains (a
    configured destination without one is drained by nobody).
    """
    import sys

    from worker.errors import ConfigError
    from worker.ops import metrics
    from worker.settings import get_settings

    try:
        metrics.start_from_env()
    except ConfigError as exc:  # a wrong LEADRELAY_METRICS_PORT stops the worker, like any setting
        sys.stderr.write(f"leadrelay: configuration: {exc}\n")
        raise SystemExit(2) from exc
    settings = _explicit[0] if _explicit else get_settings()
    queues = list(sender.app.amqp.queues.consume_from) if sender is not None else []
    for dest in served(settings, queues):
        metrics.set_rate_limit(dest.name, dest.initial_rate)
