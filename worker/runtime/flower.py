"""
Flower for ops, never open by accident.

`celery -A worker flower` takes its basic auth the way Flower itself does:
`FLOWER_BASIC_AUTH=user:password[,user2:password2]` in the environment (or
`--basic-auth=…`, or `basic_auth` in a `flowerconfig.py`). Without auth Flower
serves every task and worker to anyone who reaches its port, and lets them
revoke tasks and shut workers down, so the app refuses to start Flower unless
`LEADRELAY_FLOWER_LOCAL=1` says this is a local run.

How the refusal is wired: Flower resolves its options (environment, command
line, config file) first and only then builds its web app, which reads the
Celery app's configuration for the first time. That first read fires Celery's
`on_configure` signal, where `worker.runtime.app` calls `check_auth`. So the check sees
the credentials Flower will really use, whichever way they were given, and a
refusal (`ConfigError`, turned into exit status 2 by `worker.runtime.app`) happens
before Flower opens a socket. Any other process (worker, beat, `inspect`, the
CLI) passes straight through.

What ops see: the task list shows each task's arguments and result
(`DEFAULTS`, set by `apply_defaults` in the same hook, unless the operator
chose other columns). A deliver or poll task's result is its drain's summary
(requests, throttles, outcomes, and the backlog it left: `worker.runtime.tasks`),
carried by the task-succeeded event, since there is no result backend. Behind
a path (an Ingress at `/flower`), Flower takes `--url_prefix=flower` itself.

Personal data: task arguments are ids (a destination's name) except those of
`leadrelay.submit`, which carry a raw lead; `worker.runtime.tasks.RedactedRequest`
masks those in every worker event, and Flower builds its task pages and API
from those events, so it never holds a phone, a name or a passport.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import click

from worker.errors import ConfigError

#: Flower's own variable: comma-separated `user:password` pairs
AUTH_VAR = "FLOWER_BASIC_AUTH"
#: `1` lets Flower start without auth: a run on one's own machine only
LOCAL_VAR = "LEADRELAY_FLOWER_LOCAL"
#: the environment variables this module reads, for the deployment files' checks
ENVIRONMENT = (AUTH_VAR, LOCAL_VAR)

#: passwords that only mean "fill this in" (the Secret example's placeholder among them)
PLACEHOLDERS = frozenset({"change-me", "changeme", "changethis", "password", "secret"})

#: Flower options we set where the operator left Flower's own default (`apply_defaults`). The
#: task list shows arguments (destination names; a raw lead's fields masked) and results (a
#: drain's summary); Flower's own list hides both, so ops could not tell one drain from another.
DEFAULTS = {"tasks_columns": "name,uuid,state,args,result,received,runtime,worker"}


def is_flower(argv: Sequence[str]) -> bool:
    """
    True when this process is Flower.

    Asks click which command runs or is about to run (Flower is a click
    command under `celery`); outside click, falls back to the command line.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        return "flower" in (ctx.command.name, ctx.invoked_subcommand)
    return "flower" in argv[1:]


def credentials(environ: Mapping[str, str]) -> list[str]:
    """
    The `user:password` pairs Flower will check, as Flower resolved them.

    Flower's parsed options win (they merge the environment, `--basic-auth`
    and `flowerconfig.py`); before Flower has parsed them, its environment
    variable is read the way Flower reads it.
    """
    resolved = _flower_option("basic_auth")
    if isinstance(resolved, list | tuple) and resolved:
        return [str(pair) for pair in resolved]
    raw = environ.get(AUTH_VAR, "")
    return [pair for pair in raw.split(",") if pair]


def problem_with(pairs: Sequence[str]) -> str | None:
    """Why these pairs are not usable basic auth, or None when every one is."""
    if not pairs:
        return "not set"
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            return "every entry must be user:password with both parts"
        if password.strip().lower() in PLACEHOLDERS:
            return f"the password of {user!r} is a placeholder"
    return None


def check_auth(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """
    Refuse to serve Flower without basic auth, unless told it is a local run.

    Called from `worker.runtime.app` when Celery first reads its configuration; does
    nothing in any process other than Flower. Raises ConfigError naming the
    variable to set.
    """
    if not is_flower(argv):
        return
    problem = problem_with(credentials(environ))
    if problem is None or environ.get(LOCAL_VAR) == "1":
        return
    raise ConfigError(
        AUTH_VAR,
        f"{problem}; Flower needs basic auth (user:password) from the environment "
        f"(set {LOCAL_VAR}=1 only for a run on your own machine)",
    )


def apply_defaults(argv: Sequence[str]) -> None:
    """
    Our `DEFAULTS` for the Flower options still at Flower's own default.

    Called from `worker.runtime.app` beside `check_auth`: Flower has resolved
    its options (environment, command line, `flowerconfig.py`), so a value the
    operator gave is kept; Flower reads these options per request, so ours
    hold from the first page. Does nothing in any process other than Flower.
    """
    if not is_flower(argv) or "flower.options" not in sys.modules:
        return
    from tornado.options import options

    for name, value in DEFAULTS.items():
        # tornado keeps its options by dashed name; Flower reads its env the same way
        option = options._options.get(name.replace("_", "-"))
        if option is not None and option.value() == option.default:
            setattr(options, name, value)


def _flower_option(name: str) -> object:
    """One of Flower's parsed options, or None when Flower's options are not loaded here."""
    if "flower.options" not in sys.modules:
        return None
    from tornado.options import options

    return getattr(options, name, None)
