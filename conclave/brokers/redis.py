"""Kombu's Redis transport with one publishing client per channel instead of one per message.

Kombu builds a new `redis.Redis` object for every message it publishes
(`Channel.conn_or_acquire`); the connection comes from a pool, but the
object's construction (its table of ~170 response callbacks) costs about
0.3 ms of CPU per message, a fifth of what sending a Celery task costs on the
serving path. A `redis.Redis` object is thread-safe (each command checks a
connection out of the pool), so one per channel serves every message.
Selected by settings when CELERY_BROKER_URL is a Redis URL
(bench/celery_roundtrip.py measures the difference).
"""

from contextlib import contextmanager

from kombu.transport import redis


class Channel(redis.Channel):
    _publish_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        if self._publish_client is None:
            self._publish_client = self._create_client()
        yield self._publish_client

    def close(self):
        self._publish_client = None
        super().close()


class Transport(redis.Transport):
    Channel = Channel
