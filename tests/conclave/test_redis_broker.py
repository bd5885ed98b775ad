"""The Redis transport that reuses its publishing client: same messages, one client object per channel."""

import os
import uuid

import pytest
from kombu import Connection

REDIS_URL = os.environ.get("CELERY_BROKER_URL", "")

pytestmark = pytest.mark.skipif(
    not REDIS_URL.startswith("redis://"), reason="needs Redis (CI's PostgreSQL + Redis pass runs it)"
)


def test_messages_round_trip_and_the_publishing_client_is_built_once():
    queue_name = f"test-redis-broker-{uuid.uuid4().hex[:8]}"
    with Connection(REDIS_URL, transport="conclave.brokers.redis:Transport") as connection:
        queue = connection.SimpleQueue(queue_name)
        try:
            for i in range(5):
                queue.put({"i": i})
            channel = queue.channel
            first_client = channel._publish_client
            assert first_client is not None
            queue.put({"i": 5})
            assert channel._publish_client is first_client  # not rebuilt per message
            received = [queue.get(timeout=2) for _ in range(6)]
            for message in received:
                message.ack()
            assert [m.payload["i"] for m in received] == [0, 1, 2, 3, 4, 5]
        finally:
            queue.clear()
            queue.close()


def test_stock_kombu_builds_a_client_per_message():
    """What the subclass removes (if Kombu stops doing this, the subclass can go)."""
    from kombu.transport import redis

    with Connection(REDIS_URL, transport=redis.Transport) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is not second
