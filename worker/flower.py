"""
Flower for ops, never open by accident.

`celery -A worker flower` takes its basic auth from the environment
(`FLOWER_BASIC_AUTH=user:password`, Flower's own variable). Without it Flower
would serve every task to anyone who can reach the port, so the app refuses to
start Flower unless `LEADRELAY_FLOWER_LOCAL=1` says this is a local run.

Task arguments are ids (a destination's name); the raw intake task's arguments
are redacted in worker events (`worker.tasks.RedactedRequest`), so Flower shows
no phone, name or passport.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.errors import ConfigError


def is_flower(argv: Sequence[str]) -> bool:
    """True when this process is `celery … flower`."""
    return "flower" in argv[1:]


def check_auth(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """Refuse to serve Flower without basic auth, unless told it is a local run."""
    if not is_flower(argv):
        return
    auth = environ.get("FLOWER_BASIC_AUTH", "")
    if auth and all(":" in pair and pair.split(":", 1)[1] for pair in auth.split(",")):
        return
    if environ.get("LEADRELAY_FLOWER_LOCAL") == "1":
        return
    raise ConfigError(
        "FLOWER_BASIC_AUTH",
        "Flower needs basic auth (user:password) from the environment; "
        "set LEADRELAY_FLOWER_LOCAL=1 only for a local run",
    )
