"""The Redis transport's workaround, on a real Redis: a lost connection never kills a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

from worker.runtime import broker


def close_after_the_connection_is_gone(url: str, transport: type) -> None:
    """What Celery's consumer does when Redis goes away while it holds an unacked message."""
    conn = Connection(url, transport=transport)
    queue = conn.SimpleQueue("leadrelay-test-restore")
    queue.put({"wake": "kuper"})
    message = queue.get(timeout=5)  # delivered, not acknowledged
    assert message.payload == {"wake": "kuper"}
    channel = queue.channel
    conn._do_close_transport()  # the consumer drops its broken connection first
    channel.close()  # then the channel: kombu restores unacked messages here


def test_kombus_own_transport_dies_restoring_through_a_closed_connection(redis_url: str) -> None:
    """The defect itself: if kombu fixes it, this fails and the workaround can go."""
    with pytest.raises(AttributeError, match="hostname"):
        close_after_the_connection_is_gone(redis_url, kombu_redis.Transport)


def test_ours_logs_the_failed_restore_and_carries_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    close_after_the_connection_is_gone(redis_url, broker.Transport)
    assert "unacknowledged message(s) could be put back" in caplog.text


WORKER_STARTS = """
import json
from worker.runtime import broker
from worker.runtime.app import app, _worker_starts
before = type(app.connection_for_read("redis://127.0.0.1:6379/0").transport)
_worker_starts(options={"queues": ["leadrelay"]})  # what `celery worker` sends as it starts
redis = app.connection_for_read("redis://127.0.0.1:6379/0")
amqp = app.connection_for_read("amqp://guest@127.0.0.1//")
print(json.dumps({
    "before": before is broker.Transport,
    "after": isinstance(redis.transport, broker.Transport),
    "scheme": redis.as_uri(),
    "amqp": isinstance(amqp.transport, broker.Transport),
}))
"""


def test_a_starting_worker_gets_our_transport_and_the_url_keeps_its_scheme() -> None:
    """
    Only `celery worker` installs it (Celery's celeryd_init); Flower, which reads the
    scheme back to show queue lengths, still sees redis.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    run = subprocess.run(
        [sys.executable, "-c", WORKER_STARTS], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["before"] is False  # importing the app changes nothing
    assert seen["after"] is True
    assert seen["scheme"].startswith("redis://")
    assert seen["amqp"] is False


def ack_after_the_connection_is_gone(url: str, transport: type) -> None:
    """A task that ran through a reconnect is acknowledged on its old channel."""
    conn = Connection(url, transport=transport)
    queue = conn.SimpleQueue("leadrelay-test-ack")
    queue.put({"wake": "kuper"})
    message = queue.get(timeout=5)
    conn._do_close_transport()  # the consumer dropped the broken connection
    queue.channel._disconnect_pools()  # and the channel its pools
    try:
        message.ack()
    finally:
        # kombu's own transport keeps the message it failed to acknowledge, and would try
        # to put it back through the closed connection again at interpreter exit (a
        # traceback after the test summary): this channel is done, so close it without that
        queue.channel.qos.restore_at_shutdown = False
        queue.channel.close()


def test_kombus_own_transport_dies_acknowledging_through_a_closed_connection(
    redis_url: str,
) -> None:
    with pytest.raises(AttributeError, match=r"hostname|client"):
        ack_after_the_connection_is_gone(redis_url, kombu_redis.Transport)


def test_ours_forgets_the_message_and_carries_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ack_after_the_connection_is_gone(redis_url, broker.Transport)
    assert "before a message could be acknowledged" in caplog.text
