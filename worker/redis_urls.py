"""
Redis clients from URLs: the one place that turns a setting into a client, for
every Redis lead relay talks to (the broker, the limiter, the probes, the CLI).

Two forms:

    redis://[[user]:password@]host[:port][/db]     (rediss://, unix://: as redis-py reads them)
    sentinel://[[user]:password@]host:port[;sentinel://host2:port...][/db]

The second is kombu's own notation for its Sentinel transport: the Sentinels
to ask, separated by `;`, and the name of the master they watch given apart
(`LEADRELAY_REDIS_MASTER_NAME`; kombu's `master_name` transport option). The
user, password and database are the Redis master's, not the Sentinels' (kombu
reads them so too); they may be written on any one of the Sentinel URLs, and
where more than one carries them they must agree. kombu reads them from the
first URL only, so `kombu_url()` writes them on every one before the broker
sees it: `sentinel://a:26379;sentinel://b:26379/3` is database 3 for the
broker and the limiter alike, not 3 for one and 0 for the other.

Messages never show a password: `shown_url` hides it, and a URL that cannot be
read is named by its setting, never echoed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from worker.errors import ConfigError

#: the scheme of kombu's Sentinel notation
SENTINEL = "sentinel"
#: a Sentinel's port when a URL leaves it out (Redis's and kombu's default)
SENTINEL_PORT = 26379
#: the setting that names the master; messages point at it
MASTER_NAME_SETTING = "LEADRELAY_REDIS_MASTER_NAME"
#: connection options that concern the Sentinels themselves, not only the master
_SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout")
#: how often a client of a Sentinel-watched master tries a lost connection again
FAILOVER_RETRIES = 10


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A `sentinel://` URL, read: where the Sentinels are and what to ask the master for."""

    #: (host, port) of each Sentinel, in the URL's order
    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def kombu_url(self) -> str:
        """The URL for kombu: credentials and database on every part (kombu reads the first)."""
        auth = ""
        if self.username is not None or self.password is not None:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        parts = (f"{SENTINEL}://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels)
        return ";".join(parts)


def is_sentinel(url: str) -> bool:
    """True for kombu's `sentinel://` notation."""
    return url.partition("://")[0].lower() == SENTINEL


def parse_sentinel(url: str) -> SentinelURL:
    """
    Read a `sentinel://` URL, or raise ValueError saying which rule it breaks.
    The message never quotes the URL: it may hold a password.
    """
    sentinels: list[tuple[str, int]] = []
    dbs: set[int] = set()
    users: set[str] = set()
    passwords: set[str] = set()
    for n, part in enumerate(url.split(";"), start=1):
        where = f"Sentinel URL {n}"
        if not is_sentinel(part):
            raise ValueError(f"{where} does not start with sentinel:// (separate them with ';')")
        try:
            split = urlsplit(part.strip())
            port = split.port or SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{where}: the port is not a number from 0 to 65535") from None
        if not split.hostname:
            raise ValueError(f"{where} names no host")
        if split.query or split.fragment:
            raise ValueError(f"{where}: a query or fragment is not read; set options elsewhere")
        path = split.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"{where}: the path must be a database number (/0, /1, …)")
            dbs.add(int(path))
        if split.username:
            users.add(unquote(split.username))
        if split.password is not None:
            passwords.add(unquote(split.password))
        sentinels.append((split.hostname, port))
    for what, found in (("database", dbs), ("user", users), ("password", passwords)):
        if len(found) > 1:
            raise ValueError(f"the Sentinel URLs name more than one {what}; name one")
    return SentinelURL(
        sentinels=tuple(sentinels),
        db=next(iter(dbs), 0),
        username=next(iter(users), None),
        password=next(iter(passwords), None),
    )


def client(url: str, master_name: str | None = None, **options: Any) -> redis.Redis[bytes]:
    """
    A client of the Redis at `url`; `options` are redis-py's connection options
    (`socket_timeout`, `health_check_interval`, …); ConfigError when a
    `sentinel://` URL cannot be read or has no master name. For one that can, the
    client asks the Sentinels for the master whenever it (re)connects, and a
    command that finds the master gone is tried again (`failover_retry`) until the
    Sentinels name the promoted replica: a limiter call made during a failover
    waits it out instead of failing the delivery whose request already went.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    if not master_name:  # Settings refuse this at start; the probes read the environment alone
        raise ConfigError(MASTER_NAME_SETTING, "required with a sentinel:// URL")
    try:
        parsed = parse_sentinel(url)
    except ValueError as exc:
        raise ConfigError("the sentinel:// URL", str(exc)) from None
    sentinel_options = {k: options[k] for k in _SENTINEL_OPTIONS if k in options}
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_options)
    master: redis.Redis[bytes] = sentinel.master_for(
        master_name,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **{"retry": failover_retry(), **options},
    )
    return master


def failover_retry() -> Retry:
    """
    Waits of 0.1, 0.2, 0.4, 0.8, then 1 s between tries, about 7.5 s in all: long
    enough for Sentinels that call a master down after a second or few to promote
    a replica. A longer failover fails the call, as any Redis outage does.
    """
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=FAILOVER_RETRIES)


def shown_url(url: str) -> str:
    """`url` as a message may show it: the password hidden (of every Sentinel URL)."""
    if is_sentinel(url):
        return ";".join(_hide(part) for part in url.split(";"))
    return _hide(url)


def _hide(url: str) -> str:
    try:
        split = urlsplit(url)
    except ValueError:
        return "(a Redis URL that cannot be read)"
    if split.password is None:
        return url
    netloc = split.netloc.rpartition("@")[2]
    user = split.username or ""
    return split._replace(netloc=f"{user}:***@{netloc}").geturl()
