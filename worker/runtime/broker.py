"""
Celery's Redis transport, with one kombu defect worked around.

When the broker connection drops while a worker holds messages it has not
acknowledged (ours ack late), kombu (5.7.0) goes on using channels whose
connection is gone, and `_connparams` fails with AttributeError ('NoneType'
object has no attribute 'hostname' or 'client'); Celery calls it an
unrecoverable error and the worker process exits. It happens in two places
when Redis restarts: closing the channel restores the unacknowledged messages
through it, and a task that ran through the reconnect acknowledges through it.
Our messages are wake-ups: the ledger holds the work, beat's sweep sends new
wake-ups, and kombu puts an unacknowledged message back after the visibility
timeout. So both are logged and the consumer goes on, instead of the process
dying.

No library does this: it is the smallest override of kombu's own classes.
`install()` registers it under kombu's `redis`, `rediss` and `sentinel` aliases
(kombu's documented way to plug a transport in), so broker URLs stay
`redis://…` or `sentinel://…` and Flower, which reads the scheme back, still
knows the broker. kombu's Sentinel channel is its Redis channel with the
master looked up through the Sentinels, and fails the same way when a failover
drops the connection: it gets the same QoS.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.transport as kombu_transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual

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

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)
        except _RESTORE_ERRORS:
            self._forget(delivery_tag, "acknowledged")

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except _RESTORE_ERRORS:
            self._forget(delivery_tag, "rejected")

    def _forget(self, delivery_tag: Any, what: str) -> None:
        """
        A task that ran through a reconnect ends on a channel whose connection
        is gone: the broker no longer knows the message (a restarted Redis) or
        puts it back after the visibility timeout (a duplicate wake-up, which
        the ledger makes harmless). Forget it here instead of dying.
        """
        log.warning(
            "broker connection lost before a message could be %s; the visibility timeout"
            " restores it if the broker still has it",
            what,
            extra={"event": "broker.ack_failed"},
        )
        kombu_virtual.QoS.ack(self, delivery_tag)  # drop it from the delivered set only


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


#: broker URL scheme → the transport this module puts behind it
TRANSPORTS = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def install() -> None:
    """
    Make `redis://`, `rediss://` and `sentinel://` brokers use these transports, in
    this process: `celery worker` only (`worker.runtime.app` calls it on
    celeryd_init). A process that only publishes keeps kombu's own transports.
    """
    for scheme, transport in TRANSPORTS.items():
        kombu_transport.TRANSPORT_ALIASES[scheme] = transport
        # kombu caches what an alias resolved to; a resolution made before this (none in
        # a starting worker, but an embedding process may have published) would stick
        kombu_transport._transport_cache.pop(scheme, None)  # type: ignore[attr-defined]
