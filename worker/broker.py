"""
Celery's Redis transport, with one kombu defect worked around.

When the broker connection drops while a worker holds messages it has not
acknowledged (ours ack late), kombu closes the channel and restores those
messages through a connection that is already gone: `_connparams` fails with
`AttributeError: 'NoneType' object has no attribute 'hostname'`, Celery calls
it an unrecoverable error and the worker process exits (seen with kombu 5.7.0
when Redis restarts). Our messages are wake-ups: the ledger holds the work,
beat's sweep sends new wake-ups, and kombu itself puts an unacknowledged
message back after the visibility timeout. So a restore that fails is logged
and the consumer reconnects, instead of the process dying.

No library does this: it is the smallest override of kombu's own classes.
`install()` registers it under kombu's `redis` and `rediss` aliases (kombu's
documented way to plug a transport in), so broker URLs stay `redis://…` and
Flower, which reads the scheme back, still knows the broker.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.transport as kombu_transport
from kombu.transport import redis as kombu_redis

log = logging.getLogger("leadrelay.broker")
_RESTORE_ERRORS: tuple[type[BaseException], ...] = (
    AttributeError,
    *kombu_redis.get_redis_error_classes().connection_errors,
)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except _RESTORE_ERRORS:
            # the connection is gone: these messages come back after the visibility
            # timeout, and the sweep wakes their destinations sooner
            log.warning(
                "broker connection lost before %d unacknowledged message(s) could be put back;"
                " the visibility timeout restores them",
                len(self._delivered or ()),
                extra={"event": "broker.restore_failed"},
            )


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
SCHEMES = ("redis", "rediss")


def install() -> None:
    """
    Make `redis://` and `rediss://` brokers use this transport, in this process.
    Before any connection is made (kombu caches what an alias resolved to):
    `worker.app` calls it as it is imported.
    """
    for scheme in SCHEMES:
        kombu_transport.TRANSPORT_ALIASES[scheme] = TRANSPORT
