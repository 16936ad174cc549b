"""
Every Redis key lead relay reads or writes itself, named in one place.

The limiter (`worker.delivery.limiter`) and the platform adapters' shared cache (Admitad's
tokens and program settings, through `KeyValueCache`) all take their key names
from here, so two workers never spell one key two ways and a look at Redis can be
read against this list. The module is plain strings on purpose: adapters import
it and may not import Redis. Celery's own queue keys are kombu's, not ours.
"""

from __future__ import annotations

PREFIX = "leadrelay"


def tat_key(scope: str) -> str:
    """GCRA state of one quota scope (Calltouch: per source IP; others: per account)."""
    return f"{PREFIX}:tat:{scope}"


def cooldown_key(scope: str) -> str:
    """
    Set with a PX ttl by a 429/503; every worker reads it before sending. Keyed by
    the quota's scope: a 429 from Calltouch holds off every destination behind the IP.
    """
    return f"{PREFIX}:cooldown:{scope}"


def inflight_key(destination: str) -> str:
    """Sorted set of requests in flight to a destination, scored by their expiry (ms)."""
    return f"{PREFIX}:inflight:{destination}"


def window_key(scope: str) -> str:
    """The platform's window of one quota scope: requests that may count there, by end time."""
    return f"{PREFIX}:window:{scope}"


def learned_key(scope: str) -> str:
    """The learned rate of one quota scope (`rate = "auto"`): a hash every worker moves."""
    return f"{PREFIX}:learned:{scope}"


def quota_key(destination: str, day: str) -> str:
    """Requests sent to a destination on one local day (its daily quota)."""
    return f"{PREFIX}:quota:{destination}:{day}"


def admitad_token_key(destination: str) -> str:
    """The Admitad access token of one destination, shared by every worker."""
    return f"{PREFIX}:admitad:token:{destination}"


def admitad_refresh_key(destination: str) -> str:
    """The refresh token that came with it."""
    return f"{PREFIX}:admitad:refresh:{destination}"


def admitad_settings_key(destination: str, c_id: int) -> str:
    """One Admitad program's campaign_settings, cached per destination."""
    return f"{PREFIX}:admitad:settings:{destination}:{c_id}"


def beat_key(instance: str) -> str:
    """One running beat (`host:pid`), refreshed with a short ttl while it ticks."""
    return f"{PREFIX}:beat:{instance}"


#: what `leadrelay doctor` scans to count the beats running
BEAT_PATTERN = f"{PREFIX}:beat:*"
