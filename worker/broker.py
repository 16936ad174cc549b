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

No library does this: it is the smallest override of kombu's own classes,
chosen with `broker_transport` for `redis://` and `rediss://` brokers only.
"""

from __future__ import annotations

import logging
from typing import Any

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


#: `broker_transport` for a Redis broker URL
TRANSPORT = f"{__name__}:Transport"
SCHEMES = frozenset({"redis", "rediss"})
